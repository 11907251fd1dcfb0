"""cocotb bench: closed-loop gymnasium episodes driven by the generated ``deltanet_top``.

The env lives in the bench. Each env step the bench quantizes the observation with pysim's
code, drives it into the design (``obs``, ``start``, ``first`` at episode start), waits for
``done`` (the whole step runs inside the design; Python wakes once per env step), reads
``out``, ``action``, ``cycles`` and the per-layer ``events_l`` / ``macs_l`` counters, compares
them bit for bit with the pysim reference (and the cycles with pysim's cycle model and with the
clock edges actually elapsed), then steps the env with **the hardware's** action.

Parameters come from environment variables set by :mod:`sim.runner`:
``DELTANET_DESIGN_JSON`` (the JSON written beside the Verilog), ``DELTANET_MODEL`` (the model
the reference runs; normally the one the design was built from), ``DELTANET_EPISODES``,
``DELTANET_SEED``, ``DELTANET_MAX_STEPS`` (0 = whole episodes), ``DELTANET_RESULTS`` (JSON out).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge

from pysim import CycleModel, DeltaNetwork, load_model

from .check import CLOCK_NS, compare, reference_return, result
from .driver import signed_fields
from .envs import check_model_fits_env, make_env

#: Rising edges from the one that samples ``start`` to the one after which ``done`` is high,
#: plus this offset, equal the ``cycles`` the design reports and pysim predicts.
ELAPSED_OFFSET = 1


def _pack(raw, width: int) -> int:
    mask = (1 << width) - 1
    v = 0
    for k, r in enumerate(np.asarray(raw, dtype=np.int64).ravel()):
        v |= (int(r) & mask) << (k * width)
    return v


class TB:
    """Driver -> monitor -> model -> checker around one ``deltanet_top``."""

    def __init__(self, dut, design: dict, model):
        self.dut = dut
        self.design = design
        self.model = model
        cfg = model.config
        self.n_layers = len(cfg.layers)
        self.in_width = cfg.input_fmt.width
        self.out_width = cfg.output_fmt.width
        self.n_out = cfg.n_out
        self.cycle_model = CycleModel(model, int(design["lanes"]))
        self.ref = DeltaNetwork(model, batch=1)

    async def reset(self):
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
        dut.rst.value = 1
        dut.start.value = 0
        dut.first.value = 0
        dut.obs.value = 0
        dut.thr_we.value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)

    # ---- driver + monitor: one env step inside the design ------------------------------------
    async def hw_step(self, x_raw, first: bool) -> dict:
        dut = self.dut
        dut.obs.value = _pack(x_raw, self.in_width)
        dut.first.value = int(first)
        dut.start.value = 1
        t0 = get_sim_time("ns")
        await FallingEdge(dut.clk)
        dut.start.value = 0
        dut.first.value = 0
        await RisingEdge(dut.done)
        t1 = get_sim_time("ns")
        await FallingEdge(dut.clk)
        return {
            "out": signed_fields(int(dut.out.value), self.n_out, self.out_width),
            "action": int(dut.action.value),
            "cycles": int(dut.cycles.value),
            "elapsed": int((t1 - t0 - CLOCK_NS / 2) // CLOCK_NS) + ELAPSED_OFFSET,
            "events": [int(getattr(dut, f"events_{i}").value) for i in range(self.n_layers)],
            "macs": [int(getattr(dut, f"macs_{i}").value) for i in range(self.n_layers)],
        }

    # ---- model + checker ------------------------------------------------------------------------
    def ref_step(self, x_raw) -> dict:
        y = self.ref.step(x_raw[None])
        c = self.ref.last_counts
        return {
            "out": y[0],
            "action": int(self.ref.decode(y)[0]) if self.model.config.decoder.kind == "argmax"
            else None,
            "cycles": int(self.cycle_model.step_cycles(self.ref.last_events)[0]),
            "events": [int(v) for v in c["events"][:, 0]],
            "macs": [int(v) for v in c["significant"][:, 0]],
        }

    def check_step(self, episode: int, step: int, x_raw, hw: dict, diffs_out: list,
                   per_step: list):
        """Model + checker for one step the hardware took; returns the action to apply.

        Appends the differences (prefixed by ``episode``) to ``diffs_out`` and the step's
        record to ``per_step``. The hardware chooses the action: its argmax, or its outputs
        decoded for continuous actions.
        """
        ref = self.ref_step(x_raw)
        diffs = self.compare(step, hw, ref)
        diffs_out.extend((episode,) + d for d in diffs)
        ev = self.ref.last_events
        per_step.append({"episode": episode, "step": step, "cycles": hw["cycles"],
                         "events": hw["events"], "macs": hw["macs"],
                         "lane_work": [int(v) for v in self.cycle_model.lane_work(ev)[0]],
                         "busy": int(self.cycle_model.busy_cycles(ev)[0]),
                         "mismatch": bool(diffs)})
        if self.model.config.decoder.kind == "argmax":
            return hw["action"]
        return self.ref.decode(hw["out"][None])[0]

    #: the shared checker (:mod:`sim.check`)
    compare = staticmethod(compare)
    result = staticmethod(result)


@cocotb.test()
async def closed_loop(dut):
    design = json.loads(Path(os.environ["DELTANET_DESIGN_JSON"]).read_text())
    model = load_model(os.environ["DELTANET_MODEL"])
    episodes = int(os.environ.get("DELTANET_EPISODES", "1"))
    seed = int(os.environ.get("DELTANET_SEED", "0"))
    max_steps = int(os.environ.get("DELTANET_MAX_STEPS", "0"))
    results_path = os.environ["DELTANET_RESULTS"]
    env_id = model.meta["env_id"]

    tb = TB(dut, design, model)
    await tb.reset()
    all_diffs, per_step, episodes_out = [], [], []
    wall0 = time.perf_counter()
    for ep in range(episodes):
        env = make_env(env_id, seed + ep)()
        check_model_fits_env(model, env)
        obs, _ = env.reset(seed=seed + ep)
        tb.ref.reset()
        total, t = 0.0, 0
        while True:
            x = tb.ref.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
            hw = await tb.hw_step(x, first=(t == 0))
            action = tb.check_step(ep, t, x, hw, all_diffs, per_step)
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            t += 1
            if term or trunc or (max_steps and t >= max_steps):
                break
        env.close()
        ref_total = reference_return(model, env_id, seed + ep, max_steps)
        episodes_out.append({"episode": ep, "seed": seed + ep, "steps": t, "hw_return": total,
                             "ref_return": ref_total})
    res = result(all_diffs, per_step, episodes_out, time.perf_counter() - wall0)
    tmp = Path(results_path + ".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, results_path)

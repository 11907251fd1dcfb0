"""cocotb bench: closed-loop gymnasium episodes driven by the sequential core ``deltanet_seq``.

The same driver -> monitor -> model -> checker loop as :mod:`sim.bench_top`, for
:class:`hw.seqtop.DeltaSeqTop` (conv2d and dense layers, all state in memories). Each env step
the bench

1. quantizes the observation with pysim (``DeltaNetwork.quantize_obs``: raw codes of
   ``config.input_fmt``);
2. writes it into the design's observation memory through ``obs_we``/``obs_addr``/``obs_data``,
   ``obs_words`` codes per write, one write per clock (Python drives each write), every word
   every step (``DELTANET_OBS_WRITES=changed``: only the words whose codes differ from the
   previous step's, the memory keeping the others; the first step after reset writes every
   word. The design sees exactly the new observation either way; for a Nature-DQN on Breakout
   this writes ~50 instead of 3528 words a step);
3. pulses ``start`` (with ``first`` at episode start) and awaits the rising edge of ``done``:
   the clock is a GPI clock, so the simulator runs the whole step (hundreds of thousands of
   cycles for a Nature-DQN) without waking Python;
4. reads ``out``, ``action``, ``cycles`` and ``events_l`` / ``macs_l`` and compares them bit
   for bit with ``pysim.DeltaNetwork(model, mode="fixed", delta=True)`` (outputs, argmax,
   ``last_counts["events"]``, ``last_counts["significant"]``) and the cycles with
   ``pysim.seqcycles.SeqCycleModel.step_cycles`` and with the clock edges actually elapsed
   (:func:`sim.check.compare`, same field order and the same ``first_mismatch``);
5. steps the env with **the hardware's** action.

The run stops at the first mismatching step and reports it (episode, step, layer, field, index,
hardware and reference values).

Parameters come from environment variables set by :mod:`sim.runner`: ``DELTANET_DESIGN_JSON``
(``deltanet_seq.json``), ``DELTANET_MODEL`` (the model the reference runs), ``DELTANET_EPISODES``,
``DELTANET_SEED``, ``DELTANET_MAX_STEPS`` (0 = whole episodes), ``DELTANET_RESULTS`` (JSON
out), ``DELTANET_OBS_WRITES`` (``all``, the default, or ``changed``).
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
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from pysim import DeltaNetwork, load_model
from pysim.seqcycles import SeqCycleModel

from .bench_top import ELAPSED_OFFSET, TB
from .check import CLOCK_NS, describe, first_mismatch, reference_return, result
from .driver import signed_fields
from .envs import check_model_fits_env, make_env

OBS_WRITE_MODES = ("all", "changed")


def pack_words(x_raw, width: int, words: int, per_word: int) -> list:
    """Raw codes -> ``words`` observation-memory words of ``per_word`` codes each (code ``j`` of
    a word in bits ``[j*width, (j+1)*width)``, two's complement; the tail past ``n_in`` is 0)."""
    codes = np.zeros(words * per_word, dtype=np.int64)
    x = np.asarray(x_raw, dtype=np.int64).ravel()
    codes[:x.size] = x & ((1 << width) - 1)
    shifts = np.arange(per_word, dtype=object) * width
    return list((codes.reshape(words, per_word).astype(object) << shifts).sum(axis=1))


class SeqTB(TB):
    """:class:`sim.bench_top.TB` for ``deltanet_seq``: same checker and result, the seq core's
    ports (observation memory writes) and its cycle model (first step = full pass + bias init)."""

    def __init__(self, dut, design: dict, model, *, obs_writes: str = "all"):
        if obs_writes not in OBS_WRITE_MODES:
            raise ValueError(f"DELTANET_OBS_WRITES must be one of {OBS_WRITE_MODES}, "
                             f"got {obs_writes!r}")
        self.dut = dut
        self.design = design
        self.model = model
        cfg = model.config
        self.n_layers = len(cfg.layers)
        self.in_width = cfg.input_fmt.width
        self.out_width = cfg.output_fmt.width
        self.n_out = cfg.n_out
        self.obs_words = int(design["obs_words"])
        self.obs_depth = int(design["obs_depth"])
        if int(design["n_in"]) != cfg.n_in or int(design["in_width"]) != self.in_width:
            raise ValueError(f"the design takes {design['n_in']} inputs of {design['in_width']} "
                             f"bits, the reference model {cfg.n_in} of {self.in_width}")
        self.cycle_model = SeqCycleModel(model, int(design["lanes"]))
        #: no step can take longer: every input an event on every unpruned position, plus the
        #: bias initialisation (a hung design is reported instead of simulated forever)
        self.max_cycles = 2 * (self.cycle_model.dense_cycles() + self.cycle_model.init_cycles())
        self.ref = DeltaNetwork(model, batch=1)
        self.obs_writes = obs_writes
        self._mem = None  # words the observation memory holds (None: unknown, write all)
        self.writes = 0
        self.hw_s = 0.0  # wall time inside hw_step (observation writes + the step)
        self.write_s = 0.0  # of which the observation writes

    async def reset(self):
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
        dut.rst.value = 1
        for name in ("start", "first", "obs_we", "obs_addr", "obs_data", "thr_we", "thr_sel",
                     "thr_data"):
            getattr(dut, name).value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        self._mem = None

    # ---- driver + monitor: one env step inside the design ------------------------------------
    async def hw_step(self, x_raw, first: bool) -> dict:
        dut = self.dut
        t_wall = time.perf_counter()
        if not int(dut.ready.value):
            raise RuntimeError("deltanet_seq is not ready at the start of a step")
        words = pack_words(x_raw, self.in_width, self.obs_depth, self.obs_words)
        if self._mem is None or self.obs_writes == "all":
            todo = range(self.obs_depth)
        else:
            todo = [a for a, (w, old) in enumerate(zip(words, self._mem)) if w != old]
        if todo:
            dut.obs_we.value = 1
            for a in todo:
                dut.obs_addr.value = a
                dut.obs_data.value = words[a]
                await FallingEdge(dut.clk)
            dut.obs_we.value = 0
        self.write_s += time.perf_counter() - t_wall
        self.writes += len(todo)
        self._mem = words
        dut.first.value = int(first)
        dut.start.value = 1
        t0 = get_sim_time("ns")
        await FallingEdge(dut.clk)
        dut.start.value = 0
        dut.first.value = 0
        try:
            await with_timeout(RisingEdge(dut.done), self.max_cycles * CLOCK_NS, "ns")
        except SimTimeoutError:
            self.hw_s += time.perf_counter() - t_wall
            return {"timeout": True, "writes": len(todo)}
        t1 = get_sim_time("ns")
        await FallingEdge(dut.clk)
        hw = {
            "out": signed_fields(int(dut.out.value), self.n_out, self.out_width),
            "action": int(dut.action.value),
            "cycles": int(dut.cycles.value),
            "elapsed": int((t1 - t0 - CLOCK_NS / 2) // CLOCK_NS) + ELAPSED_OFFSET,
            "events": [int(getattr(dut, f"events_{i}").value) for i in range(self.n_layers)],
            "macs": [int(getattr(dut, f"macs_{i}").value) for i in range(self.n_layers)],
            "writes": len(todo),
        }
        self.hw_s += time.perf_counter() - t_wall
        return hw

    # ---- model --------------------------------------------------------------------------------
    def ref_step(self, x_raw) -> dict:
        first = bool(self.ref.steps[0] == 0)
        y = self.ref.step(x_raw[None])
        c = self.ref.last_counts
        return {
            "out": y[0],
            "action": int(self.ref.decode(y)[0]),
            "cycles": int(self.cycle_model.step_cycles(self.ref.last_events, [first])[0]),
            "events": [int(v) for v in c["events"][:, 0]],
            "macs": [int(v) for v in c["significant"][:, 0]],
        }


@cocotb.test()
async def closed_loop_seq(dut):
    design = json.loads(Path(os.environ["DELTANET_DESIGN_JSON"]).read_text())
    model = load_model(os.environ["DELTANET_MODEL"])
    episodes = int(os.environ.get("DELTANET_EPISODES", "1"))
    seed = int(os.environ.get("DELTANET_SEED", "0"))
    max_steps = int(os.environ.get("DELTANET_MAX_STEPS", "0"))
    obs_writes = os.environ.get("DELTANET_OBS_WRITES", "all")
    results_path = os.environ["DELTANET_RESULTS"]
    env_id = model.meta["env_id"]

    tb = SeqTB(dut, design, model, obs_writes=obs_writes)
    await tb.reset()
    all_diffs, per_step, episodes_out = [], [], []
    ref_s = env_s = setup_s = 0.0
    sim0 = get_sim_time("ns")
    wall0 = time.perf_counter()
    stopped = False
    for ep in range(episodes):
        s0 = time.perf_counter()
        env = make_env(env_id, seed + ep)()  # the first one imports the env's libraries
        check_model_fits_env(model, env)
        obs, _ = env.reset(seed=seed + ep)
        tb.ref.reset()
        setup_s += time.perf_counter() - s0
        total, t = 0.0, 0
        while True:
            x = tb.ref.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
            hw = await tb.hw_step(x, first=(t == 0))
            r0 = time.perf_counter()
            n_diffs = len(all_diffs)
            if hw.get("timeout"):  # no done: a mismatch of the cycle count
                ref = tb.ref_step(x)
                all_diffs.append((ep, t, -1, "done", 0, f"none in {tb.max_cycles} cycles",
                                  ref["cycles"]))
                per_step.append({"episode": ep, "step": t, "cycles": None, "mismatch": True})
            else:
                action = tb.check_step(ep, t, x, hw, all_diffs, per_step)
            per_step[-1]["writes"] = hw["writes"]
            r1 = time.perf_counter()
            ref_s += r1 - r0
            if len(all_diffs) > n_diffs:  # stop at the first mismatching step
                stopped = True
                t += 1
                dut._log.error("MISMATCH at %s", describe(first_mismatch(all_diffs)))
                break
            obs, r, term, trunc, _ = env.step(action)
            env_s += time.perf_counter() - r1
            total += float(r)
            t += 1
            if term or trunc or (max_steps and t >= max_steps):
                break
        env.close()
        r0 = time.perf_counter()
        # the reference alone as the policy for as many steps: its return must be the same
        ref_total = None if stopped else reference_return(model, env_id, seed + ep, t)
        ref_s += time.perf_counter() - r0
        episodes_out.append({"episode": ep, "seed": seed + ep, "steps": t, "hw_return": total,
                             "ref_return": ref_total})
        if stopped:
            break
    wall = time.perf_counter() - wall0
    # env steps/s over the closed loop itself (env creation and library imports excluded)
    res = result(all_diffs, per_step,
                       [{**e, "ref_return": e["ref_return"] or 0.0} for e in episodes_out],
                       wall - setup_s)
    res["episodes"] = episodes_out
    if stopped:
        res.update({"ref_return": None, "returns_equal": False})
    cycles = [s["cycles"] for s in per_step if s["cycles"] is not None]
    sim_cycles = int((get_sim_time("ns") - sim0) // CLOCK_NS)
    res.update({
        "arch": "seq",
        "stopped_at_first_mismatch": stopped,
        "first_mismatch_text": describe(res["first_mismatch"]),
        "lanes": int(design["lanes"]),
        "obs_words": tb.obs_words,
        "obs_writes": obs_writes,
        "obs_writes_per_step": tb.writes / max(len(per_step), 1),
        "cycles_per_step": {"mean": float(np.mean(cycles)) if cycles else None,
                            "first": cycles[0] if cycles else None,
                            "min": min(cycles) if cycles else None,
                            "max": max(cycles) if cycles else None},
        "sim_cycles": sim_cycles,
        "sim_cycles_per_s": sim_cycles / tb.hw_s if tb.hw_s > 0 else None,
        # the steps alone (start to done, the simulator running freely)
        "step_cycles_per_s": (sum(cycles) / (tb.hw_s - tb.write_s)
                              if tb.hw_s > tb.write_s else None),
        "wall_total_s": wall,
        "time_s": {"hardware": tb.hw_s, "obs_writes": tb.write_s, "reference": ref_s,
                   "env": env_s, "setup": setup_s},
    })
    tmp = Path(results_path + ".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, results_path)

"""``deltanet simulate --engine amaranth``: the closed loop on Amaranth's own simulator.

The same bench as :mod:`sim.bench_top` (cocotb), with ``DeltanetTop`` simulated in process by
``amaranth.sim`` instead of the generated Verilog in Verilator or Icarus: no Verilog, no
compiler, nothing external. The env lives in the testbench; per env step the testbench sets
``obs``/``first``/``start``, ticks once (the edge that samples ``start``) and then waits for
``done`` with ``ctx.tick().sample(...).until(done)``, which returns the outputs and counters as
sampled at the edge that samples ``done`` high. Python acts once per env step; the
simulator's own per-cycle cost remains (see benchmarks/results/simspeed.md).

Each step is compared bit for bit with pysim by :meth:`sim.bench_top.TB.compare` (the same
order and the same ``first_mismatch`` as the cocotb bench): per-layer events/MACs, outputs,
action, the ``cycles`` port against :class:`pysim.CycleModel`, and the clock edges actually
elapsed. The elapsed edges come from a free-running edge counter in the bench wrapper (not
from the design), sampled at the start edge and at the done edge.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pysim import CycleModel, load_model

#: Clock period reported in the results (the simulator runs at 1 ns steps of this period).
CLOCK_NS = 10


def _bench(top):
    """``top`` inside a wrapper holding a free-running clock-edge counter (32 bits)."""
    from amaranth.hdl import Elaboratable, Module, Signal

    class _Bench(Elaboratable):
        def __init__(self):
            self.edges = Signal(32)

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = top
            m.d.sync += self.edges.eq(self.edges + 1)
            return m

    return _Bench()


def run_amaranth(model_path, *, lanes: int, episodes: int, seed: int, max_steps: int = 0,
                 waves: Path | None = None, mutation: str | None = None) -> dict:
    """Closed-loop episodes on ``DeltanetTop`` in Amaranth's simulator; the bench's result dict.

    ``mutation`` (see :func:`deltanet.closed_loop.mutate`) corrupts the design only; the
    reference runs the model as given, so the checker must report mismatches.
    """
    from amaranth.sim import Simulator

    from hw.shapes import pack, unpack
    from hw.top import DeltanetTop
    from sim.bench_top import TB, _reference_return

    from .closed_loop import mutate
    from .envs import check_model_fits_env, make_env

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    model = load_model(model_path)
    CycleModel(model, lanes)  # validates lanes with a clear message
    design_model = mutate(model, mutation) if mutation else model
    env_id = model.meta["env_id"]
    cfg = model.config
    n_layers = len(cfg.layers)

    t_build = time.perf_counter()
    top = DeltanetTop(model=design_model, lanes=lanes)
    bench = _bench(top)
    sim = Simulator(bench)
    sim.add_clock(CLOCK_NS * 1e-9)
    build_s = time.perf_counter() - t_build

    tb = TB(None, {"lanes": lanes}, model)  # the reference + checker half of the cocotb bench
    in_w, out_w, n_out = top.in_width, top.out_width, cfg.n_out
    counters = [getattr(top, f"events_{i}") for i in range(n_layers)] + \
               [getattr(top, f"macs_{i}") for i in range(n_layers)]
    sampled = (top.out, top.action, top.cycles, *counters, bench.edges)
    state = {}

    async def testbench(ctx):
        all_diffs, per_step, episodes_out = [], [], []
        await ctx.tick()  # out of reset (the design's state is its reset state)
        wall0 = time.perf_counter()
        for ep in range(episodes):
            env = make_env(env_id, seed + ep)()
            check_model_fits_env(model, env)
            obs, _ = env.reset(seed=seed + ep)
            tb.ref.reset()
            total, t = 0.0, 0
            while True:
                x = tb.ref.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
                # driver: one env step inside the design
                ctx.set(top.obs, pack(x, in_w))
                ctx.set(top.first, int(t == 0))
                ctx.set(top.start, 1)
                _, _, e0 = await ctx.tick().sample(bench.edges)  # the edge that samples start
                ctx.set(top.start, 0)
                ctx.set(top.first, 0)
                # monitor: the values at the edge that samples done high
                out, action, cycles, *rest = await ctx.tick().sample(*sampled).until(top.done)
                e1 = rest[-1]
                hw = {"out": unpack(out, out_w, n_out), "action": int(action),
                      "cycles": int(cycles), "elapsed": int(e1 - e0),
                      "events": [int(v) for v in rest[:n_layers]],
                      "macs": [int(v) for v in rest[n_layers:2 * n_layers]]}
                # model + checker; the hardware chooses the action
                act = tb.check_step(ep, t, x, hw, all_diffs, per_step)
                obs, r, term, trunc, _ = env.step(act)
                total += float(r)
                t += 1
                if term or trunc or (max_steps and t >= max_steps):
                    break
            env.close()
            ref_total = _reference_return(model, env_id, seed + ep, max_steps)
            episodes_out.append({"episode": ep, "seed": seed + ep, "steps": t,
                                 "hw_return": total, "ref_return": ref_total})
        state.update(all_diffs=all_diffs, per_step=per_step, episodes_out=episodes_out,
                     wall=time.perf_counter() - wall0)

    sim.add_testbench(testbench)
    if waves is not None:
        waves = Path(waves)
        waves.parent.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(waves)):
            sim.run()
    else:
        sim.run()

    per_step, all_diffs, episodes_out = state["per_step"], state["all_diffs"], \
        state["episodes_out"]
    wall = state["wall"]
    res = TB.result(all_diffs, per_step, episodes_out, wall)
    res.update({
        "simulator": "amaranth",
        "build_s": build_s,
        "model": str(model_path),
        "lanes": lanes,
        "seed": seed,
        "mutation": mutation,
        "design_dir": None,  # no generated Verilog: DeltanetTop is simulated in process
    })
    if waves is not None:
        res["waves"] = str(waves)
    return res

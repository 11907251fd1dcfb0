"""``deltanet simulate --engine amaranth``: the closed loop on Amaranth's own simulator.

The design is simulated in process by ``amaranth.sim``: no Verilog, no compiler, nothing
external. The env lives in the testbench; Python acts once per observation word written and per
step wait; the simulator's own per-cycle cost remains (see benchmarks/results/simspeed.md).

* ``core`` (the event-driven :class:`hw.core.DeltaCore`): the same loop, step driver and
  checker as the cocotb bench (:class:`sim.coreloop.CoreBench`, :class:`sim.driver.
  StepDriver` through :class:`sim.driver.AmaranthIO`, :mod:`sim.check`), so the results have
  the same keys and the first mismatch reads the same; the run stops there.
* ``parallel`` (:class:`hw.top.DeltanetTop`): per env step the testbench sets
  ``obs``/``first``/``start``, ticks once (the edge that samples ``start``) and waits for
  ``done`` with ``ctx.tick().sample(...).until(done)``; each step is compared by
  :func:`sim.check.compare` (cycles against :class:`pysim.CycleModel` and the clock edges
  elapsed, counted by a free-running counter in a bench wrapper).

The sequential core (conv models) runs on Verilator or Icarus only.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pysim import load_model
from sim.check import CLOCK_NS

from .arch import check_obs_words, cycle_model, resolve_arch
from .closed_loop import mutate


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
                 waves: Path | None = None, mutation: str | None = None, arch: str = "auto",
                 obs_words: int | None = None, obs_writes: str | None = None) -> dict:
    """Closed-loop episodes in Amaranth's simulator; the bench's result dict.

    ``arch``: ``auto`` (the event-driven core for dense models) | ``core`` | ``parallel``;
    ``obs_words``, ``obs_writes``: the core's observation word and write mode (see
    :func:`deltanet.closed_loop.run`). ``mutation`` (see :func:`deltanet.closed_loop.mutate`)
    corrupts the design only; the reference runs the model as given, so the checker must
    report mismatches.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    model = load_model(model_path)
    arch = resolve_arch(model, arch)
    if arch == "seq":
        raise ValueError("--engine amaranth runs the event-driven and the register-parallel "
                         "cores; the sequential core (--arch seq, models with conv layers) runs "
                         "on --engine verilator or icarus")
    obs_words = check_obs_words(model, arch, obs_words)
    cycle_model(model, lanes, arch, obs_words)  # validates lanes with a clear message
    design_model = mutate(model, mutation) if mutation else model
    run = _run_core if arch == "core" else _run_parallel
    res = run(model, design_model, lanes=lanes, episodes=episodes, seed=seed,
              max_steps=max_steps, waves=waves, obs_words=obs_words, obs_writes=obs_writes)
    res.update({
        "simulator": "amaranth",
        "arch": arch,
        "model": str(model_path),
        "lanes": lanes,
        "seed": seed,
        "mutation": mutation,
        "design_dir": None,  # no generated Verilog: the design is simulated in process
    })
    if waves is not None:
        res["waves"] = str(waves)
    return res


def _simulate(sim, waves) -> None:
    if waves is not None:
        waves = Path(waves)
        waves.parent.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(waves)):
            sim.run()
    else:
        sim.run()


def _run_core(model, design_model, *, lanes, episodes, seed, max_steps, waves, obs_words,
              obs_writes) -> dict:
    """The event-driven core: :class:`sim.coreloop.CoreBench` through ``AmaranthIO``."""
    from amaranth.sim import Simulator

    from hw.core import DeltaCore
    from hw.generate_core import design_fields
    from sim.coreloop import CoreBench
    from sim.driver import AmaranthIO

    t_build = time.perf_counter()
    top = DeltaCore(design_model, lanes=lanes, obs_words=obs_words)
    bench = CoreBench(design_fields(top), model, writes=obs_writes or "changed")
    sim = Simulator(top)
    sim.add_clock(CLOCK_NS * 1e-9)
    build_s = time.perf_counter() - t_build
    state = {}

    async def testbench(ctx):
        io = AmaranthIO(ctx, top)
        await bench.reset(io)
        state["res"] = await bench.run(io, episodes=episodes, seed=seed, max_steps=max_steps)

    sim.add_testbench(testbench)
    _simulate(sim, waves)
    return {**state["res"], "build_s": build_s}


def _run_parallel(model, design_model, *, lanes, episodes, seed, max_steps, waves, obs_words,
                  obs_writes) -> dict:
    """The register-parallel core: its own ports (the whole observation at once)."""
    from amaranth.sim import Simulator

    from hw.shapes import pack, unpack
    from hw.top import DeltanetTop
    from sim.bench_top import TB
    from sim.check import reference_return, result
    from sim.envs import check_model_fits_env, make_env

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
            ref_total = reference_return(model, env_id, seed + ep, max_steps)
            episodes_out.append({"episode": ep, "seed": seed + ep, "steps": t,
                                 "hw_return": total, "ref_return": ref_total})
        state.update(all_diffs=all_diffs, per_step=per_step, episodes_out=episodes_out,
                     wall=time.perf_counter() - wall0)

    sim.add_testbench(testbench)
    _simulate(sim, waves)
    res = result(state["all_diffs"], state["per_step"], state["episodes_out"], state["wall"])
    res["build_s"] = build_s
    return res

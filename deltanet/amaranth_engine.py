"""``deltanet simulate --engine amaranth``: the closed loop on Amaranth's own simulator.

The design is simulated in process by ``amaranth.sim``: no Verilog, no compiler, nothing
external. The env lives in the testbench; Python acts once per observation word written and per
step wait; the simulator's own per-cycle cost remains (see benchmarks/results/simspeed.md).

The event-driven :class:`hw.core.DeltaCore` runs the same loop, step driver and checker as
the cocotb bench (:class:`sim.coreloop.CoreBench`, :class:`sim.driver.StepDriver` through
:class:`sim.driver.AmaranthIO`, :mod:`sim.check`), so the results have the same keys and the
first mismatch reads the same; the run stops there.

With ``link_divisor`` the design is the core behind its UART host link
(:class:`hw.hostlink.HostLink`, what ``deltanet build`` puts on a board) and the loop drives it
through its pins: :class:`sim.link.LinkStepDriver` over :class:`sim.link.UartPins` (``deltanet
run --sim amaranth``).
"""

from __future__ import annotations

import time
from pathlib import Path

from deltanet.pysim import load_model
from deltanet.pysim.coreplan import CorePlan
from deltanet.sim.check import CLOCK_NS

from .closed_loop import check_obs_words, mutate


def run_amaranth(model_path, *, lanes: int, episodes: int, seed: int, max_steps: int = 0,
                 waves: Path | None = None, mutation: str | None = None,
                 obs_words: int | None = None, obs_writes: str | None = None,
                 coverage: bool = False, threshold_writes: int = 0,
                 link_divisor: int | None = None) -> dict:
    """Closed-loop episodes in Amaranth's simulator; the bench's result dict.

    ``obs_words``, ``obs_writes``, ``coverage``, ``threshold_writes``: the core's observation
    word and write mode, the functional coverage and run-time threshold writes (see
    :func:`deltanet.closed_loop.run`). ``mutation`` (see
    :func:`deltanet.closed_loop.mutate`) corrupts the design only; the reference runs the model
    as given, so the checker must report mismatches. ``link_divisor``: simulate the core behind
    its UART host link at that many clock cycles per bit, stepped through the link's pins
    (the link's STATUS checked, the model id too unless ``mutation``, whose whole point is a
    design that differs; the threshold registers written with the model's thresholds first,
    unless ``mutation``, which may have changed them).
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    model = load_model(model_path)
    obs_words = check_obs_words(model, obs_words)
    CorePlan.build(model, lanes, obs_words)  # validates lanes with a clear message
    design_model = mutate(model, mutation) if mutation else model
    res = _run_core(model, design_model, lanes=lanes, episodes=episodes, seed=seed,
                    max_steps=max_steps, waves=waves, obs_words=obs_words,
                    obs_writes=obs_writes, coverage=coverage,
                    threshold_writes=threshold_writes, link_divisor=link_divisor,
                    checked=mutation is None)
    res.update({
        "simulator": "amaranth",
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
              obs_writes, coverage=False, threshold_writes=0, link_divisor=None,
              checked=True) -> dict:
    """The event-driven core: :class:`sim.coreloop.CoreBench` through ``AmaranthIO``; with
    ``link_divisor``, behind its host link through the link's pins (``checked``: check the
    model id and write the model's thresholds at reset)."""
    from amaranth.sim import Simulator

    from deltanet.hw.core import DeltaCore
    from deltanet.hw.generate_core import design_fields
    from deltanet.hw.hostlink import HostLink
    from deltanet.hw.protocol import model_id
    from deltanet.sim.coreloop import CoreBench
    from deltanet.sim.driver import AmaranthIO
    from deltanet.sim.link import LinkStepDriver, UartPins

    t_build = time.perf_counter()
    writes = obs_writes or "changed"
    if link_divisor is None:
        top = core = DeltaCore(design_model, lanes=lanes, obs_words=obs_words)
    else:
        top = HostLink(design_model, lanes=lanes, obs_words=obs_words, divisor=link_divisor)
        core = top.core
    design = design_fields(core)
    cfg = model.config
    sim = Simulator(top)
    sim.add_clock(CLOCK_NS * 1e-9)
    build_s = time.perf_counter() - t_build
    state = {}

    async def testbench(ctx):
        io = AmaranthIO(ctx, top)
        driver = None  # the core's ports: StepDriver
        if link_divisor is not None:  # the link's pins, through the simulation's adapter
            driver = LinkStepDriver(
                design, UartPins(io, link_divisor), writes=writes,
                model_id=model_id(model) if checked else None,
                thresholds_raw=[cfg.threshold_raw(i) for i in range(len(cfg.layers))]
                if checked else None)
        bench = CoreBench(design, model, writes=writes, driver=driver)
        await bench.reset(io)
        state["res"] = await bench.run(io, episodes=episodes, seed=seed, max_steps=max_steps,
                                       coverage=coverage, threshold_writes=threshold_writes)

    sim.add_testbench(testbench)
    _simulate(sim, waves)
    return {**state["res"], "build_s": build_s}

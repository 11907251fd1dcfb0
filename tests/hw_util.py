"""Shared helpers of the hw tests: run DeltanetTop in Amaranth's simulator, run pysim beside it,
build random models. (Not a test module.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from hw.shapes import pack, unpack
from pysim import CycleModel, DeltaNetwork, LayerParams, Model, mlp_config

PERIOD = 1e-6


@dataclass
class Step:
    """One network step: layer-0 input codes, episode start, threshold writes before it."""

    x: np.ndarray
    first: bool = False
    thr: list = field(default_factory=list)  # [(layer, raw)]


@dataclass
class StepResult:
    out: np.ndarray
    action: int
    cycles: int  # the cycles port
    elapsed: int  # clock edges from the start-sampling edge to the done-sampling edge
    events: np.ndarray
    macs: np.ndarray


def run_top(top, steps, *, idle_before=0) -> list:
    """Simulate ``top`` over ``steps``; returns one :class:`StepResult` per step."""
    cfg = top.model.config
    n = top.n_layers
    results = []

    async def tb(ctx):
        await ctx.tick()
        for st in steps:
            for layer, raw in st.thr:
                ctx.set(top.thr_we, 1)
                ctx.set(top.thr_sel, layer)
                ctx.set(top.thr_data, raw)
                await ctx.tick()
            ctx.set(top.thr_we, 0)
            for _ in range(idle_before):
                await ctx.tick()
            assert ctx.get(top.ready) == 1
            ctx.set(top.obs, pack(st.x, top.in_width))
            ctx.set(top.first, int(st.first))
            ctx.set(top.start, 1)
            await ctx.tick()
            ctx.set(top.start, 0)
            ctx.set(top.first, 0)
            k = 1
            while not ctx.get(top.done):
                assert not ctx.get(top.ready)
                await ctx.tick()
                k += 1
            results.append(StepResult(
                out=unpack(ctx.get(top.out), top.out_width, cfg.n_out),
                action=ctx.get(top.action),
                cycles=ctx.get(top.cycles),
                elapsed=k,
                events=np.array([ctx.get(getattr(top, f"events_{i}")) for i in range(n)]),
                macs=np.array([ctx.get(getattr(top, f"macs_{i}")) for i in range(n)]),
            ))

    sim = Simulator(top)
    sim.add_clock(PERIOD)
    sim.add_testbench(tb)
    sim.run()
    return results


def run_ref(model, lanes, steps) -> list:
    """pysim reference over the same steps; StepResult with elapsed = cycles = the model's."""
    net = DeltaNetwork(model)
    cm = CycleModel(model, lanes)
    out = []
    for st in steps:
        if st.first:
            net.reset()
        for layer, raw in st.thr:
            net.set_threshold_raw(layer, int(raw))  # the threshold register
        y = net.step(np.asarray(st.x, dtype=np.int64)[None])[0]
        cyc = int(cm.step_cycles(net.last_events)[0])
        out.append(StepResult(
            out=y.astype(np.int64), action=int(np.argmax(y)), cycles=cyc, elapsed=cyc,
            events=net.last_counts["events"][:, 0].copy(),
            macs=net.last_counts["significant"][:, 0].copy(),
        ))
    return out


def assert_same(hw_res, ref_res, check_action=True):
    assert len(hw_res) == len(ref_res)
    for t, (h, r) in enumerate(zip(hw_res, ref_res)):
        try:
            np.testing.assert_array_equal(h.out, r.out)
            if check_action:
                assert h.action == r.action
            np.testing.assert_array_equal(h.events, r.events)
            np.testing.assert_array_equal(h.macs, r.macs)
            assert h.cycles == r.cycles, (h.cycles, r.cycles)
            assert h.elapsed == r.elapsed, (h.elapsed, r.elapsed)
        except AssertionError as e:
            raise AssertionError(f"step {t}: {e}\nhw={h}\nref={r}") from None


def random_model(rng, sizes, *, density=0.5, weight_scale=1.0, bias_scale=0.5, **cfg_kw) -> Model:
    """A random MLP (seeded by ``rng``) with pruning masks of the given density."""
    cfg = mlp_config(sizes, **cfg_kw)
    params = []
    for ly in cfg.layers:
        w = rng.normal(0, weight_scale, size=(ly.n_out, ly.n_in)).astype(np.float32)
        b = rng.normal(0, bias_scale, size=ly.n_out).astype(np.float32)
        mask = rng.random((ly.n_out, ly.n_in)) < density
        params.append(LayerParams(w, b, mask))
    return Model(cfg, tuple(params), {"env_id": "random"})


def smooth_inputs(rng, fmt, n_in, steps, *, scale=0.2, first_every=None) -> list:
    """A random walk in ``fmt`` raw codes (like consecutive observations), as Steps."""
    span = fmt.max_raw - fmt.min_raw
    x = rng.integers(fmt.min_raw // 4, fmt.max_raw // 4 + 1, size=n_in)
    out = []
    for t in range(steps):
        x = np.clip(x + np.round(rng.normal(0, scale * span / 16, size=n_in)).astype(np.int64),
                    fmt.min_raw, fmt.max_raw)
        first = t == 0 or (first_every is not None and t % first_every == 0)
        out.append(Step(x.copy(), first=first))
    return out

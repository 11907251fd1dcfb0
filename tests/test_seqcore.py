"""DeltaSeqTop (the sequential, memory-based conv+dense core) against pysim, bit for bit.

At every step: the outputs, the action, events_l and macs_l equal pysim's
``DeltaNetwork(mode="fixed", delta=True)`` (outputs, argmax, last_events sums,
last_counts["significant"]); the cycles port and the measured clock edges equal
``pysim.seqcycles.SeqCycleModel.step_cycles``.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.generate_seq import TOPLEVEL, ebr_blocks, generate_seq, memory_budget
from hw.seqtop import DeltaSeqTop
from hw.shapes import pack, unpack
from pysim import (
    Conv2dLayer,
    Decoder,
    DeltaNetwork,
    DenseLayer,
    LayerParams,
    Model,
    NetworkConfig,
    load_model,
)
from pysim import seqcycles as sc
from pysim.config import default_acc_bits
from pysim.fixed import fmt
from pysim.model import conv_tap_valid
from pysim.seqcycles import SeqCycleModel

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


# ---- harness ------------------------------------------------------------------------------
@dataclass
class Step:
    x: np.ndarray  # layer-0 input codes
    first: bool = False
    thr: list = field(default_factory=list)  # [(layer, raw)] written before the step
    thr_at_start: list = field(default_factory=list)  # written in the start cycle itself


def run_hw(top, steps, *, idle_before=0):
    cfg, n = top.model.config, top.n_layers
    res = []

    async def tb(ctx):
        await ctx.tick()
        for st in steps:
            for layer, raw in st.thr:
                ctx.set(top.thr_we, 1)
                ctx.set(top.thr_sel, layer)
                ctx.set(top.thr_data, raw)
                await ctx.tick()
            ctx.set(top.thr_we, 0)
            x = np.asarray(st.x, dtype=np.int64)
            ow = top.obs_words
            for a in range(top.obs_depth):
                ctx.set(top.obs_we, 1)
                ctx.set(top.obs_addr, a)
                ctx.set(top.obs_data, pack(x[a * ow:(a + 1) * ow], top.in_width))
                await ctx.tick()
            ctx.set(top.obs_we, 0)
            for _ in range(idle_before):
                await ctx.tick()
            assert ctx.get(top.ready) == 1
            for layer, raw in st.thr_at_start:
                ctx.set(top.thr_we, 1)
                ctx.set(top.thr_sel, layer)
                ctx.set(top.thr_data, raw)
            ctx.set(top.first, int(st.first))
            ctx.set(top.start, 1)
            await ctx.tick()
            ctx.set(top.start, 0)
            ctx.set(top.first, 0)
            ctx.set(top.thr_we, 0)
            k = 1
            while not ctx.get(top.done):
                assert not ctx.get(top.ready)
                await ctx.tick()
                k += 1
            res.append({
                "out": unpack(ctx.get(top.out), top.out_width, cfg.n_out),
                "action": ctx.get(top.action),
                "cycles": ctx.get(top.cycles),
                "elapsed": k,
                "events": np.array([ctx.get(getattr(top, f"events_{i}")) for i in range(n)]),
                "macs": np.array([ctx.get(getattr(top, f"macs_{i}")) for i in range(n)]),
            })

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return res


def run_ref(model, lanes, steps):
    net = DeltaNetwork(model)
    cm = SeqCycleModel(model, lanes)
    out = []
    for st in steps:
        if st.first:
            net.reset()
        for layer, raw in st.thr:
            net.set_threshold_raw(layer, int(raw))
        first = net.steps == 0
        y = net.step(np.asarray(st.x, dtype=np.int64)[None])[0]
        cyc = int(cm.step_cycles(net.last_events, first)[0])
        out.append({
            "out": y.astype(np.int64), "action": int(np.argmax(y)), "cycles": cyc,
            "elapsed": cyc, "events": net.last_counts["events"][:, 0].copy(),
            "macs": net.last_counts["significant"][:, 0].copy(),
        })
        for layer, raw in st.thr_at_start:  # takes effect from the next step
            net.set_threshold_raw(layer, int(raw))
    return out


def assert_same(hw, ref):
    assert len(hw) == len(ref)
    for t, (h, r) in enumerate(zip(hw, ref)):
        try:
            np.testing.assert_array_equal(h["out"], r["out"])
            assert h["action"] == r["action"]
            np.testing.assert_array_equal(h["events"], r["events"])
            np.testing.assert_array_equal(h["macs"], r["macs"])
            assert h["cycles"] == r["cycles"], (h["cycles"], r["cycles"])
            assert h["elapsed"] == r["elapsed"], (h["elapsed"], r["elapsed"])
        except AssertionError as e:
            raise AssertionError(f"step {t}: {e}\nhw={h}\nref={r}") from None


def check(model, lanes, steps, obs_words=8, **kw):
    top = DeltaSeqTop(model, lanes=lanes, obs_words=obs_words)
    ref = run_ref(model, lanes, steps)
    assert_same(run_hw(top, steps, **kw), ref)
    return ref


# ---- models -------------------------------------------------------------------------------
def conv_dense_model(seed=1, thresholds=(0.0625, 0.125, 0.03125, 0.25)):
    """2x9x9 -> conv 4@3x3 s2 p1 (relu) -> conv 3@2x2 s1 (relu) -> dense 6 (relu) -> dense 3,
    random pruning with a fully empty conv column and a fully empty dense input column."""
    rng = np.random.default_rng(seed)
    inf, wf, af = fmt("SQ4.4"), fmt("SQ2.6"), fmt("SQ5.5")
    layers = (
        Conv2dLayer(2, 9, 9, 4, 3, 2, 1, wf, af, default_acc_bits(inf, wf, 18), "relu",
                    thresholds[0]),
        Conv2dLayer(4, 5, 5, 3, 2, 1, 0, fmt("SQ1.5"), fmt("SQ4.4:trunc:sat"),
                    default_acc_bits(af, fmt("SQ1.5"), 16), "relu", thresholds[1]),
        DenseLayer(48, 6, fmt("SQ3.3"), fmt("SQ3.5:half_up:wrap"), 14, "relu", thresholds[2]),
        DenseLayer(6, 3, wf, fmt("SQ4.4"), default_acc_bits(af, wf, 6), "identity",
                   thresholds[3]),
    )
    cfg = NetworkConfig(inf, layers)
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=ly.weight_shape) * 0.8).astype(np.float32)
        b = (rng.normal(size=ly.bias_shape) * 0.4).astype(np.float32)
        params.append(LayerParams(w, b, rng.random(ly.weight_shape) < 0.6))
    params[0].mask[:, 1, 0, 2] = False  # empty column: costs max(1, 0) = 1 cycle per position
    params[2].mask[:, 5] = False  # empty dense column: its events never reach the MAC
    return Model(cfg, tuple(params), {"env_id": "random"})


def observations(rng, cfg, steps, *, p_change=0.3, step_size=6, resets=()):
    f = cfg.input_fmt
    x = rng.integers(f.min_raw // 3, f.max_raw // 3 + 1, size=cfg.n_in)
    out = []
    for t in range(steps):
        change = rng.random(cfg.n_in) < p_change
        x = np.clip(x + change * rng.integers(-step_size, step_size + 1, size=cfg.n_in),
                    f.min_raw, f.max_raw)
        out.append(Step(x.copy(), first=(t == 0 or t in resets)))
    return out


FUZZ_FMTS = {"in": ["SQ4.4", "SQ3.5", "SQ6.2"], "w": ["SQ2.6", "SQ1.5", "SQ3.3", "SQ2.2"],
             "act": ["SQ5.5", "SQ4.4:trunc:sat", "SQ3.5:half_up:wrap", "SQ6.2",
                     "SQ2.6:half_even:wrap"]}


def fuzz_model(rng):
    """Random geometry (strides that skip inputs, padding, dense before conv, conv last),
    formats, narrow accumulators (wrap) and pruning."""
    pick = lambda k: fmt(str(rng.choice(FUZZ_FMTS[k])))
    inf = pick("in")
    f, layers = inf, []
    shape = (int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9)))
    if rng.random() < 0.3:
        n, m_ = int(np.prod(shape)), int(rng.integers(1, 4)) * 9
        wf, of = pick("w"), pick("act")
        layers.append(DenseLayer(n, m_, wf, of, default_acc_bits(f, wf, n), "relu", 0.25))
        f, shape = of, (m_ // 9, 3, 3)
    for _ in range(int(rng.integers(1, 3))):
        c, h, w = shape
        k = int(rng.integers(1, min(h, w) + 1))
        s, p = int(rng.integers(1, 4)), int(rng.integers(0, min(2, k)))
        wf, of = pick("w"), pick("act")
        ab = max(default_acc_bits(f, wf, c * k * k) - int(rng.integers(0, 5)),
                 f.frac_bits + wf.frac_bits + 2)
        ly = Conv2dLayer(c, h, w, int(rng.integers(1, 6)), k, s, p, wf, of, ab, "relu",
                         float(rng.choice([0, 0.125, 0.5])))
        layers.append(ly)
        f, shape = of, ly.out_shape
    n = int(np.prod(shape))
    for _ in range(int(rng.integers(0, 3))):
        m_ = int(rng.integers(1, 8))
        wf, of = pick("w"), pick("act")
        ab = max(default_acc_bits(f, wf, n) - int(rng.integers(0, 5)),
                 f.frac_bits + wf.frac_bits + 2)
        layers.append(DenseLayer(n, m_, wf, of, ab, "relu", float(rng.choice([0, 0.25]))))
        n, f = m_, of
    last = layers[-1]
    layers[-1] = type(last)(**{**last.__dict__,
                               "activation": str(rng.choice(["identity", "relu"]))})
    cfg = NetworkConfig(inf, tuple(layers))
    density = rng.uniform(0.2, 0.9)
    params = [LayerParams((rng.normal(size=ly.weight_shape) * 1.2).astype(np.float32),
                          rng.normal(size=ly.bias_shape).astype(np.float32),
                          rng.random(ly.weight_shape) < density) for ly in cfg.layers]
    return Model(cfg, tuple(params), {"env_id": "fuzz"})


# ---- 1. conv + dense network against pysim --------------------------------------------------
@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_conv_dense_network(lanes):
    model = conv_dense_model()
    cfg = model.config
    rng = np.random.default_rng(10 + lanes)
    steps = observations(rng, cfg, 9, resets=(5,))
    steps[2].x[:] = cfg.input_fmt.max_raw  # saturating activations, wide deltas
    steps[3].x[:7] = cfg.input_fmt.min_raw
    steps[4].thr = [(1, 0), (3, 2)]  # run-time threshold writes
    steps[7].thr_at_start = [(0, 8)]  # written in the start cycle: from the next step on
    ref = check(model, lanes, steps, obs_words=5)
    ev = np.array([r["events"] for r in ref])
    n_in = np.array([ly.n_in for ly in cfg.layers])
    assert (ev[1:] > 0).any(axis=0).all()  # every layer sees events after the full pass ...
    assert ((ev[1:] > 0) & (ev[1:] < n_in)).any(axis=0).all()  # ... together with non-events
    assert ev[8, 0] < ev[6, 0]  # the start-cycle threshold write acted on step 8


def test_conv_dense_model_has_the_corner_cases():
    model = conv_dense_model()
    cm = SeqCycleModel(model, 2)
    assert (cm.col_len(0) == 0).any()  # a fully empty conv column (costs 1 cycle/position)
    assert not cm.channel_active(2).all()  # a dense input whose column is empty (costs 0)
    assert (cm.cost_per_input(2) == 0).any()


@pytest.mark.parametrize("seed", [3, 16, 18, 27])
def test_random_geometries(seed):
    rng = np.random.default_rng(seed)
    model = fuzz_model(rng)
    lanes, obs_words = int(rng.integers(1, 6)), int(rng.integers(1, 9))
    steps = observations(rng, model.config, 7, p_change=0.4, step_size=12, resets=(4,))
    steps[0].first = bool(seed % 2)  # without first: still a full pass after rst
    steps[2].x[:] = model.config.input_fmt.max_raw
    steps[5].thr = [(0, 3)]
    check(model, lanes, steps, obs_words=obs_words)


# ---- 2. a bundled dense model ---------------------------------------------------------------
def test_cartpole_dense():
    model = load_model(ROOT / "deltanet" / "models" / "cartpole.npz")
    cfg = model.config
    rng = np.random.default_rng(4)
    steps = observations(rng, cfg, 7, p_change=1.0, step_size=3000, resets=(4,))
    steps[3].thr = [(1, 0)]
    ref = check(model, 4, steps, idle_before=2)
    assert sum(int(r["macs"][1:].sum()) for r in ref[1:]) > 0  # delta steps do MAC work


def test_back_to_back_steps_take_cycles_each():
    """The done cycle is ready: a start sampled there runs the next step at once."""
    model = conv_dense_model()
    top = DeltaSeqTop(model, lanes=2, obs_words=4)
    rng = np.random.default_rng(3)
    x = observations(rng, model.config, 1)[0].x
    edges = []

    async def tb(ctx):
        await ctx.tick()
        for a in range(top.obs_depth):
            ctx.set(top.obs_we, 1)
            ctx.set(top.obs_addr, a)
            ctx.set(top.obs_data, pack(x[a * 4:(a + 1) * 4], top.in_width))
            await ctx.tick()
        ctx.set(top.obs_we, 0)
        ctx.set(top.start, 1)
        ctx.set(top.first, 1)
        await ctx.tick()
        ctx.set(top.first, 0)
        for _ in range(2):  # start stays high: two more steps, back to back
            k = 1
            while not ctx.get(top.done):
                await ctx.tick()
                k += 1
            edges.append((k, ctx.get(top.cycles)))
            await ctx.tick()
        ctx.set(top.start, 0)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    ref = run_ref(model, 2, [Step(x, first=True), Step(x)])
    assert [e[0] for e in edges] == [e[1] for e in edges] == [r["cycles"] for r in ref]


def forwarding_model(seed=5):
    """Dense layers whose MAC issues hit one accumulator address back to back: layer 0 has one
    bank row per lane (every issue of a lane updates address 0: distance-1 read-modify-write
    forwarding) and an empty input column (a bubble between two updates of address 0);
    layer 1 has two rows per lane (addresses 0, 1, 0, 1, ...: distance 2); layer 2 is pruned
    unevenly (padded lane entries, columns of length 1 and 3)."""
    rng = np.random.default_rng(seed)
    inf, wf = fmt("SQ4.4"), fmt("SQ2.6")
    layers = (DenseLayer(7, 3, wf, fmt("SQ5.5"), 20, "relu", 0.0),
              DenseLayer(3, 6, wf, fmt("SQ4.4:trunc:sat"), 18, "relu", 0.0),
              DenseLayer(6, 9, fmt("SQ3.3"), fmt("SQ3.5:half_up:wrap"), 14, "relu", 0.0),
              DenseLayer(9, 2, wf, fmt("SQ4.4"), 18, "identity", 0.0))
    cfg = NetworkConfig(inf, layers)
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=ly.weight_shape) * 0.8).astype(np.float32)
        b = (np.abs(rng.normal(size=ly.bias_shape)) + 0.5).astype(np.float32)  # relu on
        params.append(LayerParams(w, b, np.ones(ly.weight_shape, bool)))
    params[0].mask[:, 4] = False  # an empty column between two full ones
    params[2].mask[:] = rng.random(params[2].mask.shape) < 0.5
    params[2].mask[:, 0] = True
    return Model(cfg, tuple(params), {"env_id": "random"})


@pytest.mark.parametrize("lanes", [1, 3])
def test_accumulator_forwarding(lanes):
    """Back-to-back updates of one accumulator address (distance 1 through the X-stage
    forwarding path, distance 2 and bubbles through the memory) stay bit-exact."""
    model = forwarding_model()
    cm = SeqCycleModel(model, lanes)
    if lanes == 3:
        assert cm.depth(0) == 1 and cm.depth(1) == 2  # every issue of layer 0 on address 0
        assert (cm.col_len(0) == 0).any() and (cm.col_len(1) == 2).all()
    rng = np.random.default_rng(7)
    steps = observations(rng, model.config, 6, p_change=1.0, step_size=40, resets=(3,))
    ref = check(model, lanes, steps, obs_words=7)
    ev = np.array([r["events"] for r in ref])
    assert (ev[:, 0] > 1).all() and (ev[:, 1] > 1).any()  # several events per MAC phase


def run_back_to_back(top, steps):
    """Every step starts in the previous step's done cycle, its observation (one obs word)
    written at the start edge itself."""
    cfg, n = top.model.config, top.n_layers
    assert top.obs_depth == 1
    res = []

    async def tb(ctx):
        await ctx.tick()
        for st in steps:
            assert ctx.get(top.ready) == 1
            ctx.set(top.obs_we, 1)
            ctx.set(top.obs_addr, 0)
            ctx.set(top.obs_data, pack(np.asarray(st.x, dtype=np.int64), top.in_width))
            ctx.set(top.first, int(st.first))
            ctx.set(top.start, 1)
            await ctx.tick()
            ctx.set(top.obs_we, 0)
            ctx.set(top.start, 0)
            ctx.set(top.first, 0)
            k = 1
            while not ctx.get(top.done):
                await ctx.tick()
                k += 1
            res.append({
                "out": unpack(ctx.get(top.out), top.out_width, cfg.n_out),
                "action": ctx.get(top.action),
                "cycles": ctx.get(top.cycles),
                "elapsed": k,
                "events": np.array([ctx.get(getattr(top, f"events_{i}")) for i in range(n)]),
                "macs": np.array([ctx.get(getattr(top, f"macs_{i}")) for i in range(n)]),
            })

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return res


@pytest.mark.parametrize("lanes", [1, 2])
def test_tiny_layers_back_to_back(lanes):
    """Layers of one input and one output: every phase is shorter than the scan and MAC
    pipelines, so their drains overlap the phase changes (x_hat write of a layer's only input
    vs. the next step's read, the last accumulator write vs. the next scan's read), with
    steps back to back and observations written at the start edge."""
    rng = np.random.default_rng(11)
    inf, wf = fmt("SQ4.4"), fmt("SQ2.6")
    layers = (Conv2dLayer(1, 2, 2, 1, 2, 1, 0, wf, fmt("SQ5.5"), 18, "relu", 0.0),
              DenseLayer(1, 1, wf, fmt("SQ4.4:trunc:sat"), 16, "relu", 0.0),
              DenseLayer(1, 2, wf, fmt("SQ4.4"), 16, "identity", 0.0))
    cfg = NetworkConfig(inf, layers)
    params = tuple(LayerParams((rng.normal(size=ly.weight_shape) + 1.0).astype(np.float32),
                               (rng.normal(size=ly.bias_shape) * 0.3).astype(np.float32),
                               None) for ly in cfg.layers)
    model = Model(cfg, params, {"env_id": "random"})
    steps = observations(rng, cfg, 8, p_change=0.7, step_size=30, resets=(5,))
    top = DeltaSeqTop(model, lanes=lanes, obs_words=4)
    ref = run_ref(model, lanes, steps)
    assert_same(run_back_to_back(top, steps), ref)
    assert sum(int(r["events"][1:].sum()) for r in ref[1:]) > 0


# ---- 3. the cycle model -------------------------------------------------------------------
def brute_cost(model, i, lanes):
    """Per-input MAC cycles by explicit loops over inputs and kernel positions."""
    ly = model.config.layers[i]
    g = sc.geometry(ly)
    w = np.asarray(model.w_raw[i]).reshape(g.O, g.C, g.K, g.K)
    cost = np.zeros(g.n_in, dtype=np.int64)
    work = np.zeros((g.n_in, lanes), dtype=np.int64)
    for c in range(g.C):
        active = (w[:, c] != 0).any()
        for y in range(g.H):
            for x in range(g.W):
                idx = (c * g.H + y) * g.W + x
                for ky in range(g.K):
                    for kx in range(g.K):
                        qy, qx = y + g.P - ky, x + g.P - kx
                        if qy < 0 or qx < 0 or qy % g.S or qx % g.S:
                            continue
                        if qy // g.S >= g.OH or qx // g.S >= g.OW:
                            continue
                        per_lane = [int((w[k::lanes, c, ky, kx] != 0).sum())
                                    for k in range(lanes)]
                        cost[idx] += max(1, max(per_lane)) if active else 0
                        work[idx] += per_lane
    return cost, work


@pytest.mark.parametrize("lanes", [1, 3, 4])
def test_cost_per_input_brute_force(lanes):
    model = conv_dense_model()
    rng = np.random.default_rng(0)
    models = [model] + [fuzz_model(rng) for _ in range(3)]
    for mdl in models:
        cm = SeqCycleModel(mdl, lanes)
        for i in range(len(mdl.config.layers)):
            cost, work = brute_cost(mdl, i, lanes)
            np.testing.assert_array_equal(cm.cost_per_input(i), cost)
            np.testing.assert_array_equal(cm.lane_nnz(i), work)
            # lane work summed is pysim's significant per event (column_nnz)
            np.testing.assert_array_equal(cm.lane_nnz(i).sum(axis=1), mdl.column_nnz(i))


def test_step_and_dense_cycles_direct_count():
    model = conv_dense_model()
    L = 3
    cm = SeqCycleModel(model, L)
    cfg = model.config
    direct = sc.STEP_OVERHEAD + sc.FINAL_OVERHEAD + cfg.n_out
    init = 0
    for i, ly in enumerate(cfg.layers):
        g = sc.geometry(ly)
        vy = conv_tap_valid(g.H, g.OH, g.K, g.S, g.P)
        vx = conv_tap_valid(g.W, g.OW, g.K, g.S, g.P)
        positions = int(vy.sum() * vx.sum() * g.C)  # (input, valid kernel position) pairs
        direct += sc.SCAN_OVERHEAD + ly.n_in + sc.MAC_OVERHEAD + positions * -(-g.O // L)
        init += sc.INIT_OVERHEAD + -(-g.O // L) * g.OH * g.OW
    assert cm.dense_cycles() == direct
    assert cm.init_cycles() == init
    none = [np.zeros((2, ly.n_in), bool) for ly in cfg.layers]
    np.testing.assert_array_equal(cm.step_cycles(none, [False, True]),
                                  [cm.fixed_cycles(), cm.fixed_cycles() + init])
    every = [np.ones((1, ly.n_in), bool) for ly in cfg.layers]
    assert cm.step_cycles(every, [False])[0] == cm.fixed_cycles() + sum(
        int(cm.cost_per_input(i).sum()) for i in range(len(cfg.layers)))
    assert cm.lane_work(every).shape == (1, L)


def nature_dqn(sparsity=0.75, seed=0):
    inf, wf, af = fmt("SQ2.8"), fmt("SQ2.6"), fmt("SQ8.8")
    layers, f = [], inf
    for c, h, o, k, s in ((4, 84, 32, 8, 4), (32, 20, 64, 4, 2), (64, 9, 64, 3, 1)):
        layers.append(Conv2dLayer(c, h, h, o, k, s, 0, wf, af, default_acc_bits(f, wf, c * k * k),
                                  "relu", 1 / 64))
        f = af
    layers.append(DenseLayer(3136, 512, wf, af, default_acc_bits(af, wf, 3136), "relu", 1 / 64))
    layers.append(DenseLayer(512, 6, wf, af, default_acc_bits(af, wf, 512), "identity", 0.0))
    cfg = NetworkConfig(inf, tuple(layers), input_scale=(1 / 255,) * (4 * 84 * 84))
    rng = np.random.default_rng(seed)
    params = [LayerParams((rng.normal(size=ly.weight_shape) / np.sqrt(ly.fan_in)).astype(
        np.float32), (rng.normal(size=ly.bias_shape) * 0.05).astype(np.float32),
        rng.random(ly.weight_shape) >= sparsity) for ly in cfg.layers]
    return Model(cfg, tuple(params), {"env_id": "ALE/Breakout-v5"})


def test_cycle_model_nature_dqn_is_fast():
    model = nature_dqn()
    cfg = model.config
    t0 = time.perf_counter()
    cm = SeqCycleModel(model, 16)
    every = [np.ones((1, ly.n_in), bool) for ly in cfg.layers]
    full = int(cm.step_cycles(every, [True])[0])
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    assert [cm.cost_per_input(i).shape[0] for i in range(5)] == [28224, 12800, 5184, 3136, 512]
    # layer 0 (8x8 s4 on 84x84, no padding): every input reaches 1..4 positions per axis
    pos = cm.positions(0).reshape(4, 84, 84)
    assert pos.min() == 1 and pos.max() == 4
    assert cm.fixed_cycles() < full < cm.dense_cycles() + cm.init_cycles()
    top = DeltaSeqTop(model, lanes=16)
    top._MustUse__silence = True
    assert sum(r["bits"] for r in memory_budget(top)) > 0


# ---- 4. constructor errors --------------------------------------------------------------------
def _cartpole():
    return load_model(ROOT / "deltanet" / "models" / "cartpole.npz")


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"lanes": 0}, ValueError, "lanes"),
    ({"lanes": 65}, ValueError, "lanes"),
    ({"lanes": 2.0}, TypeError, "lanes"),
    ({"obs_words": 0}, ValueError, "obs_words"),
])
def test_bad_arguments(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        DeltaSeqTop(_cartpole(), **kwargs)
    gc.collect()


def test_bad_models():
    with pytest.raises(TypeError, match="model"):
        DeltaSeqTop("cartpole.npz")
    model = _cartpole()
    cfg = model.config
    cont = model.replace(config=NetworkConfig(cfg.input_fmt, cfg.layers,
                                              Decoder("clip", (-1.0, -1.0), (1.0, 1.0))))
    with pytest.raises(ValueError, match="discrete-action"):
        DeltaSeqTop(cont)
    wide = [DenseLayer(4, 2, "SQ2.6", "SQ20.20", 30, "identity")]
    wm = Model(NetworkConfig("SQ4.4", tuple(wide)),
               (LayerParams(np.zeros((2, 4), np.float32), np.zeros(2, np.float32), None),))
    with pytest.raises(ValueError, match="unsupported"):
        DeltaSeqTop(wm)
    gc.collect()


def test_port_widths():
    model = conv_dense_model()
    top = DeltaSeqTop(model, lanes=3, obs_words=5)
    top._MustUse__silence = True
    w = top.port_widths()
    cfg = model.config
    assert w["obs_data"] == ("input", 5 * cfg.input_fmt.width)
    assert w["obs_addr"] == ("input", max(1, (top.obs_depth - 1).bit_length()))
    assert w["out"] == ("output", cfg.n_out * cfg.output_fmt.width)
    assert w["action"] == ("output", 2)
    for i in range(len(cfg.layers)):
        assert w[f"events_{i}"] == ("output", 32) and w[f"macs_{i}"] == ("output", 32)
    for name in ("obs_we", "start", "first", "ready", "done", "cycles", "thr_we", "thr_sel",
                 "thr_data"):
        assert name in w
    assert top.STEP_OVERHEAD == sc.STEP_OVERHEAD and top.MAC_OVERHEAD == sc.MAC_OVERHEAD


# ---- 5. generator ---------------------------------------------------------------------------
def test_generate_seq(tmp_path):
    model = conv_dense_model()
    p = generate_seq(model, 2, tmp_path / "a", obs_words=4)
    v = p["verilog"].read_text()
    assert f"module {TOPLEVEL}(" in v
    info = json.loads(p["json"].read_text())
    assert info["lanes"] == 2 and info["obs_words"] == 4
    assert info["network"] == model.config.to_dict()
    assert [g["K"] for g in info["geometry"]] == [3, 2, 1, 1]
    assert info["ports"]["obs_data"] == {"direction": "input", "width": 4 * 8}
    assert info["cycle_model"]["mac_overhead"] == sc.MAC_OVERHEAD
    report = p["report"].read_text()
    assert "ECP5-25k" in report and "ECP5-85k" in report and "cycles/step" in report
    q = generate_seq(model, 2, tmp_path / "b", obs_words=4)
    for kind in p:
        assert p[kind].read_bytes() == q[kind].read_bytes(), kind
    assert ebr_blocks(512, 36) == 1 and ebr_blocks(513, 36) == 2 and ebr_blocks(16384, 2) == 2


def test_ties_go_to_lowest_index():
    """All-zero weights and equal biases: every output equal, action 0 (strict > argmax)."""
    cfg = NetworkConfig("SQ4.4", (Conv2dLayer(1, 3, 3, 2, 2, 1, 0, "SQ2.6", "SQ4.4", 14,
                                              "identity"),))
    params = (LayerParams(np.zeros((2, 1, 2, 2), np.float32), np.full(2, 0.5, np.float32),
                          None),)
    model = Model(cfg, params)
    steps = [Step(np.arange(9) - 4, first=True), Step(np.zeros(9, np.int64))]
    ref = check(model, 2, steps, obs_words=3)
    assert [r["action"] for r in ref] == [0, 0]

"""hw blocks one by one against pysim, bit for bit (Amaranth simulator)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.accumulator import DeltaAccumulator
from hw.activation import Activation
from hw.argmax import Argmax
from hw.encoder import DeltaEncoder
from hw.mac import SparseMAC
from hw.shapes import raw_shape
from hw.weights import WeightPlan
from pysim import CycleModel, DeltaNetwork, FixedFormat
from pysim.fixed import wrap_bits
from tests.hw_util import random_model

PERIOD = 1e-6
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _sim(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(tb)
    sim.run()


# ---- DeltaEncoder ---------------------------------------------------------------------------

ENC_CASES = [
    # n_in, fmt, threshold (real), mask density, ready probability
    (1, "SQ4.4", 0.0, 1.0, 1.0),
    (7, "SQ4.4", 0.25, 1.0, 1.0),
    (13, "SQ2.6", 0.0625, 0.6, 0.7),
    (5, "SQ3.3", 100.0, 1.0, 0.5),  # huge: only the full pass fires
    (9, "SQ1.7", 0.5, 0.5, 1.0),
]


@pytest.mark.parametrize("case", range(len(ENC_CASES)))
def test_encoder_matches_pysim(case):
    n, f, thr, density, p_ready = ENC_CASES[case]
    rng = np.random.default_rng(10 + case)
    model = random_model(rng, [n, 3], density=density, input_fmt=f, thresholds=[thr])
    fmt = model.config.input_fmt
    mask = tuple(bool(v) for v in model.column_nnz(0) > 0)
    enc = DeltaEncoder(n_in=n, fmt=fmt, threshold=model.config.threshold_raw(0), mask=mask)
    net = DeltaNetwork(model)
    xs, firsts = [], []
    for t in range(30):
        if t % 3 == 0:
            x = rng.integers(fmt.min_raw, fmt.max_raw + 1, size=n)
        else:
            x = np.clip(xs[-1] + rng.integers(-40, 41, size=n), fmt.min_raw, fmt.max_raw)
        x[rng.random(n) < 0.2] = fmt.min_raw if t % 2 else 0  # corners
        xs.append(x)
        firsts.append(t in (0, 17))
    expect = []
    for x, first in zip(xs, firsts):
        if first:
            net.reset()
        xh = net.x_hat[0][0].copy()
        net.step(x[None])
        ev = net.last_events[0][0]
        d = x - xh
        expect.append((int(ev.sum()), [(i, int(d[i])) for i in range(n) if ev[i] and mask[i]]))
    got = []

    async def tb(ctx):
        await ctx.tick()
        for x, first in zip(xs, firsts):
            ctx.set(enc.x, [int(v) for v in x])
            ctx.set(enc.load, 1)
            ctx.set(enc.clear, int(first))
            ctx.set(enc.full, int(first))
            await ctx.tick()
            ctx.set(enc.load, 0)
            ctx.set(enc.clear, 0)
            ctx.set(enc.full, 0)
            events = []
            while True:
                ready = int(rng.random() < p_ready)
                ctx.set(enc.o.ready, ready)
                if not ctx.get(enc.o.valid):
                    break
                if ready:
                    p = ctx.get(enc.o.payload)
                    events.append((int(p.index), int(p.delta)))
                await ctx.tick()
            ctx.set(enc.o.ready, 0)
            got.append((ctx.get(enc.events), events))

    _sim(enc, tb)
    assert got == expect


def test_encoder_threshold_register_write():
    fmt = FixedFormat.parse("SQ4.4")
    enc = DeltaEncoder(n_in=3, fmt=fmt, threshold=10)
    seen = []

    async def tb(ctx):
        assert ctx.get(enc.threshold) == 10
        ctx.set(enc.thr_we, 1)
        ctx.set(enc.thr_data, 3)
        await ctx.tick()
        ctx.set(enc.thr_we, 0)
        assert ctx.get(enc.threshold) == 3
        ctx.set(enc.x, [2, 3, -4])
        ctx.set(enc.load, 1)
        await ctx.tick()
        ctx.set(enc.load, 0)
        seen.append(ctx.get(enc.events))

    _sim(enc, tb)
    assert seen == [2]  # |2| < 3 does not fire; 3 and -4 do


def test_encoder_huge_threshold_is_clamped():
    fmt = FixedFormat.parse("SQ2.2")
    enc = DeltaEncoder(n_in=2, fmt=fmt, threshold=10**9)
    assert enc.threshold_reset == 1 << fmt.width


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"n_in": 0}, ValueError, "n_in"),
    ({"n_in": 3, "fmt": "SQ4.4"}, TypeError, "fmt"),
    ({"n_in": 3, "threshold": -1}, ValueError, "threshold"),
    ({"n_in": 3, "mask": [True]}, ValueError, "mask"),
    ({"n_in": 300, "index_width": 4}, ValueError, "index_width"),
    ({"n_in": 3, "delta_width": 3}, ValueError, "delta_width"),
])
def test_encoder_bad_params(kwargs, exc, text):
    args = {"n_in": 3, "fmt": FixedFormat.parse("SQ4.4"), "threshold": 1}
    args.update(kwargs)
    with pytest.raises(exc, match=text):
        DeltaEncoder(**args)
    gc.collect()


# ---- Activation (requantize + ReLU) ---------------------------------------------------------

def _check_activation(src, dst, act, values):
    src, dst = FixedFormat.parse(src), FixedFormat.parse(dst)
    n = 8
    dut = Activation(n=n, src_fmt=src, out_fmt=dst, activation=act)
    values = np.asarray(values, dtype=np.int64)
    values = np.concatenate([values, np.zeros((-len(values)) % n, dtype=np.int64)])
    want = dst.requantize(values, src.frac_bits)
    if act == "relu":
        want = np.maximum(want, 0)
    got = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for k in range(0, len(values), n):
            ctx.set(dut.i, [int(v) for v in values[k:k + n]])
            await ctx.tick()
            got.extend(int(v) for v in ctx.get(dut.o))

    _sim(dut, tb)
    np.testing.assert_array_equal(np.array(got), want)


def _corner_values(src: FixedFormat, rng, shift: int):
    lo, hi = src.min_raw, src.max_raw
    v = [lo, lo + 1, hi, hi - 1, 0, 1, -1]
    if shift > 0:
        h = 1 << (shift - 1)
        for q in (-3, -2, -1, 0, 1, 2, 5):  # exact halves, both parities, and their neighbours
            for e in (-1, 0, 1):
                v.append((q << shift) + h + e)
    v += list(rng.integers(lo, hi + 1, size=40))
    return [int(np.clip(x, lo, hi)) for x in v]


ACT_CASES = [(src, dst, act)
             for src in ("SQ10.8", "SQ3.12")
             for dst in ("SQ4.4", "SQ8.8:trunc:sat", "SQ3.5:half_up:wrap", "SQ2.2:trunc:wrap",
                         "SQ6.2:half_up:sat", "SQ6.14", "SQ2.6:half_even:wrap")
             for act in ("relu", "identity")]


@pytest.mark.parametrize("src, dst, act", ACT_CASES)
def test_activation_corners(src, dst, act):
    rng = np.random.default_rng(abs(hash((src, dst, act))) % 2**32)
    s = FixedFormat.parse(src).frac_bits - FixedFormat.parse(dst).frac_bits
    _check_activation(src, dst, act, _corner_values(FixedFormat.parse(src), rng, s))


@settings(max_examples=12, deadline=None)
@given(acc_int=st.integers(1, 12), acc_frac=st.integers(0, 14), out_int=st.integers(1, 8),
       out_frac=st.integers(0, 16), rounding=st.sampled_from(["trunc", "half_up", "half_even"]),
       overflow=st.sampled_from(["sat", "wrap"]), act=st.sampled_from(["relu", "identity"]),
       seed=st.integers(0, 2**16))
def test_activation_property(acc_int, acc_frac, out_int, out_frac, rounding, overflow, act,
                             seed):
    src = f"SQ{acc_int}.{acc_frac}"
    dst = f"SQ{out_int}.{out_frac}:{rounding}:{overflow}"
    rng = np.random.default_rng(seed)
    shift = acc_frac - out_frac
    _check_activation(src, dst, act, _corner_values(FixedFormat.parse(src), rng, shift))


def test_activation_bad_params():
    f = FixedFormat.parse("SQ4.4")
    with pytest.raises(ValueError, match="activation"):
        Activation(n=2, src_fmt=f, out_fmt=f, activation="tanh")
    with pytest.raises(ValueError, match="n"):
        Activation(n=0, src_fmt=f, out_fmt=f, activation="relu")
    with pytest.raises(TypeError, match="out_fmt"):
        Activation(n=2, src_fmt=f, out_fmt="SQ4.4", activation="relu")
    gc.collect()


# ---- Argmax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_argmax_lowest_index_on_ties(n):
    fmt = FixedFormat.parse("SQ3.1")
    dut = Argmax(n=n, shape=raw_shape(fmt))
    rng = np.random.default_rng(n)
    vecs = [rng.integers(-3, 3, size=n) for _ in range(60)]  # narrow range: many ties
    vecs.append(np.full(n, fmt.min_raw))
    got = []

    async def tb(ctx):
        for v in vecs:
            ctx.set(dut.i, [int(x) for x in v])
            got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert got == [int(np.argmax(v)) for v in vecs]


# ---- WeightPlan, SparseMAC + DeltaAccumulator -----------------------------------------------

@pytest.mark.parametrize("lanes", [1, 2, 3, 5, 8])
def test_weight_plan_matches_cycle_model(lanes):
    rng = np.random.default_rng(lanes)
    model = random_model(rng, [6, 11, 4], density=0.4)
    plan = WeightPlan(model.w_raw, lanes, 8)
    cm = CycleModel(model, lanes)
    for i, w in enumerate(model.w_raw):
        np.testing.assert_array_equal(plan.col_len[i], cm.maxlen(i))
        np.testing.assert_array_equal(plan.col_nnz[i], model.column_nnz(i))
        # the lane memories hold exactly the non-zero weights
        rebuilt = np.zeros_like(w)
        for k in range(lanes):
            words = plan.lane_entries(k)
            for j in range(w.shape[1]):
                s, n_ = int(plan.col_start[i][j]), int(plan.col_len[i][j])
                for valid, row, wt in words[s:s + n_]:
                    if valid:
                        rebuilt[row * lanes + k, j] = wt
        np.testing.assert_array_equal(rebuilt, w)


class _MacBench(wiring.Component):
    """SparseMAC + DeltaAccumulator wired as in the top, driven straight from the bench."""

    def __init__(self, model, lanes):
        cfg = model.config
        self.mac = SparseMAC(weights=model.w_raw, weight_width=8, lanes=lanes, index_width=5,
                             delta_width=18)
        self.acc = DeltaAccumulator(n_out=[ly.n_out for ly in cfg.layers],
                                    acc_bits=[ly.acc_bits for ly in cfg.layers],
                                    bias=model.b_raw, lanes=lanes,
                                    row_width=self.mac.plan.row_width,
                                    data_width=self.mac.product_width)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mac = self.mac
        m.submodules.acc = self.acc
        wiring.connect(m, self.mac.wr, self.acc.wr)
        return m


@pytest.mark.parametrize("lanes", [1, 3, 4])
def test_mac_accumulator_against_reference(lanes):
    rng = np.random.default_rng(20 + lanes)
    model = random_model(rng, [9, 10, 3], density=0.5, acc_bits=[14, 20], input_fmt="SQ4.4",
                         act_fmt="SQ4.4")  # 14 bits: the accumulator wraps
    bench = _MacBench(model, lanes)
    mac, acc = bench.mac, bench.acc
    cm = CycleModel(model, lanes)
    # events per layer: (index, delta) lists, including an empty column only in the count
    plans = []
    for layer, ly in enumerate(model.config.layers):
        for _ in range(3):
            idx = sorted(rng.choice(ly.n_in, size=rng.integers(0, ly.n_in + 1), replace=False))
            idx = [int(j) for j in idx if cm.maxlen(layer)[j] > 0]
            plans.append((layer, [(j, int(rng.integers(-300, 301)) or 1) for j in idx]))
    M = [b.copy() for b in model.b_raw]
    expect, got = [], []

    async def tb(ctx):
        for layer, events in plans:
            ctx.set(mac.layer, layer)
            ctx.set(mac.clear, 1)
            await ctx.tick()
            ctx.set(mac.clear, 0)
            cycles = 0
            for j, d in events:
                ctx.set(mac.i.valid, 1)
                ctx.set(mac.i.payload, {"index": j, "delta": d})
                while not ctx.get(mac.i.ready):
                    await ctx.tick()
                    cycles += 1
                await ctx.tick()
                cycles += 1
            ctx.set(mac.i.valid, 0)
            while not ctx.get(mac.idle):
                await ctx.tick()
                cycles += 1
            await ctx.tick()
            await ctx.tick()  # drain_cycles = 2
            got.append((cycles, ctx.get(mac.macs[layer]),
                        [int(v) for v in ctx.get(acc.pre(layer))]))

    for layer, events in plans:
        w = model.w_raw[layer]
        for j, d in events:
            M[layer] = wrap_bits(M[layer] + w[:, j] * d, model.config.layers[layer].acc_bits)
        expect.append((int(sum(cm.maxlen(layer)[j] for j, _ in events)),
                       int(sum(model.column_nnz(layer)[j] for j, _ in events)),
                       [int(v) for v in M[layer]]))

    _sim(bench, tb)
    assert got == expect


def test_mac_and_accumulator_bad_params():
    rng = np.random.default_rng(0)
    model = random_model(rng, [3, 4])
    with pytest.raises(ValueError, match="lanes"):
        SparseMAC(weights=model.w_raw, weight_width=8, lanes=0, index_width=2, delta_width=17)
    with pytest.raises(ValueError, match="index_width"):
        SparseMAC(weights=[np.zeros((2, 40), dtype=np.int64)], weight_width=8, lanes=1,
                  index_width=3, delta_width=17)
    with pytest.raises(ValueError, match="fit"):
        SparseMAC(weights=[np.full((2, 2), 300)], weight_width=8, lanes=1, index_width=1,
                  delta_width=17)
    with pytest.raises(ValueError, match="bias"):
        DeltaAccumulator(n_out=[4], acc_bits=[20], bias=[np.zeros(3)], lanes=2, row_width=2,
                         data_width=20)
    with pytest.raises(ValueError, match="acc_bits"):
        DeltaAccumulator(n_out=[2], acc_bits=[1], bias=[np.zeros(2)], lanes=2, row_width=2,
                         data_width=20)
    with pytest.raises(ValueError, match="row_width"):
        DeltaAccumulator(n_out=[64], acc_bits=[20], bias=[np.zeros(64)], lanes=1, row_width=2,
                         data_width=20)
    gc.collect()  # the half-built components warn "never used" here, where that is ignored

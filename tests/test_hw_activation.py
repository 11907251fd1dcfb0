"""hw.activation (requantize: rounding, overflow, ReLU/identity; the examiner's arithmetic)
against pysim, bit for bit (Amaranth simulator)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from amaranth.sim import Simulator
from deltanet.hw.activation import Activation
from deltanet.pysim import FixedFormat
from hypothesis import given, settings
from hypothesis import strategies as st

PERIOD = 1e-6
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _sim(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(tb)
    sim.run()


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

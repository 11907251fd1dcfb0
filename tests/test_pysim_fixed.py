"""Fixed-point formats: exhaustive for small widths, property tests beyond."""

import math
from fractions import Fraction

import numpy as np
import pytest
from deltanet.pysim.fixed import OVERFLOWS, ROUNDINGS, FixedFormat, shift_round, wrap_bits
from hypothesis import given, settings
from hypothesis import strategies as st


def ref_round(q: Fraction, rounding: str) -> int:
    """Rounding of an exact rational, written independently of the implementation."""
    fl = math.floor(q)
    rem = q - fl
    if rounding == "trunc":
        return fl
    if rounding == "half_up":
        return fl + (1 if rem >= Fraction(1, 2) else 0)
    if rem > Fraction(1, 2):
        return fl + 1
    if rem < Fraction(1, 2):
        return fl
    return fl if fl % 2 == 0 else fl + 1


def ref_overflow(v: int, f: FixedFormat) -> int:
    if f.overflow == "sat":
        return min(max(v, f.min_raw), f.max_raw)
    m = v % (1 << f.width)
    if f.signed and m >= 1 << (f.width - 1):
        m -= 1 << f.width
    return m


SMALL = [FixedFormat(s, i, fr, r, o) for s in (True, False) for i in (1, 2, 3) for fr in (0, 1, 2)
         for r in ROUNDINGS for o in OVERFLOWS if i + fr >= 1]


@pytest.mark.parametrize("f", SMALL, ids=str)
def test_requantize_exhaustive(f):
    """Every source code of every small source format, all shifts from -2 to +4."""
    for src_frac in range(f.frac_bits - 2, f.frac_bits + 5):
        raw = np.arange(-300, 301, dtype=np.int64)
        got = f.requantize(raw, src_frac)
        want = [ref_overflow(ref_round(Fraction(int(v)) * Fraction(2) ** (f.frac_bits - src_frac),
                                       f.rounding), f) for v in raw]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("f", SMALL, ids=str)
def test_quantize_exhaustive(f):
    """Every multiple of a quarter LSB over a range wider than the format."""
    quarters = np.arange(-4 * 40, 4 * 40 + 1)
    x = quarters * (f.lsb / 4)
    got = f.quantize(x)
    want = [ref_overflow(ref_round(Fraction(int(q), 4), f.rounding), f) for q in quarters]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("f", SMALL, ids=str)
def test_range_and_roundtrip(f):
    codes = np.arange(f.min_raw, f.max_raw + 1)
    np.testing.assert_array_equal(f.quantize(f.to_float(codes)), codes)
    assert f.width == f.int_bits + f.frac_bits
    assert FixedFormat.parse(str(f)) == f


def test_most_negative_and_saturation():
    f = FixedFormat.parse("SQ8.8")
    assert (f.min_raw, f.max_raw) == (-32768, 32767)
    np.testing.assert_array_equal(f.quantize([-1e9, -128.0, 127.99609375, 1e9]),
                                  [-32768, -32768, 32767, 32767])
    w = FixedFormat.parse("SQ8.8:trunc:wrap")
    np.testing.assert_array_equal(w.quantize([128.0, -128.00390625]), [-32768, 32767])


@given(st.integers(-(2 ** 40), 2 ** 40), st.integers(0, 20), st.sampled_from(ROUNDINGS))
@settings(max_examples=300, deadline=None)
def test_shift_round_property(v, s, r):
    got = int(shift_round(np.array([v]), s, r)[0])
    assert got == ref_round(Fraction(v, 2 ** s), r)


@given(st.integers(-(2 ** 50), 2 ** 50), st.integers(2, 48))
@settings(max_examples=200, deadline=None)
def test_wrap_property(v, w):
    got = int(wrap_bits(np.array([v]), w)[0])
    assert -(2 ** (w - 1)) <= got < 2 ** (w - 1)
    assert (got - v) % (2 ** w) == 0


@pytest.mark.parametrize("text", ["SQ8.8", "UQ0.8", "SQ1.7", "SQ16.16:half_up:wrap",
                                  "UQ4.0:trunc:sat"])
def test_parse_str_roundtrip(text):
    assert str(FixedFormat.parse(text)) == text


@pytest.mark.parametrize("bad", ["Q8.8", "SQ8", "SQ8.8:round", "SQ8.8:trunc:clamp", "SQ0.8",
                                 "SQ40.40", "", "sq8.8"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        FixedFormat.parse(bad)


def test_quantize_rejects_nan():
    with pytest.raises(ValueError, match="non-finite"):
        FixedFormat.parse("SQ8.8").quantize([np.nan])


def test_frozen():
    f = FixedFormat.parse("SQ8.8")
    with pytest.raises(AttributeError):
        f.frac_bits = 3

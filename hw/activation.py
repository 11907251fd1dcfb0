"""Requantize the pre-activations into the output format, then ReLU or identity."""

from __future__ import annotations

from amaranth.hdl import C, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..pysim.config import ACTIVATIONS
from ..pysim.fixed import FixedFormat
from ._checks import check_choice, check_int
from .shapes import raw_shape, raw_vector

__all__ = ["Activation", "requantize", "requantize_overflow", "requantize_round",
           "requantize_split"]


def requantize_split(m: Module, value, src: FixedFormat, dst: FixedFormat, name: str = "rq"):
    """The shift by ``src.frac - dst.frac`` with ``dst.rounding``, as a pair ``(q, rnd)``:
    ``q`` the shifted value (floor; a left shift is exact) and ``rnd`` the 0/1 rounding
    increment; the rounded value is ``q + rnd`` (:func:`requantize_round`). Split so that a
    caller can select among several layers' pairs before one adder."""
    aw = src.width
    s = src.frac_bits - dst.frac_bits
    if s > 0:
        # Sign-extend so the floor quotient keeps at least two bits (sign + one).
        ext = Signal(signed(max(aw, s + 2)), name=f"{name}_ext")
        m.d.comb += ext.eq(value)
        q = ext[s:].as_signed()  # floor(value / 2**s)
        if dst.rounding == "trunc":
            rnd = C(0, 1)
        elif dst.rounding == "half_up":
            rnd = ext[s - 1]  # remainder >= half
        else:  # half_even: above half, or exactly half and the quotient is odd
            below = ext[:s - 1].any() if s > 1 else C(0, 1)
            rnd = ext[s - 1] & (below | q[0])
        return q, rnd
    q = Signal(signed(aw - s), name=f"{name}_q")  # left shift: exact
    m.d.comb += q.eq(value.as_signed() << (-s) if s else value)
    return q, C(0, 1)


def requantize_round(m: Module, value, src: FixedFormat, dst: FixedFormat, name: str = "rq"):
    """First half of :func:`requantize`: the shift by ``src.frac - dst.frac`` with
    ``dst.rounding``: ``q + rnd`` of :func:`requantize_split`."""
    q, rnd = requantize_split(m, value, src, dst, name)
    r = Signal(signed(len(q) + 1), name=f"{name}_r")
    m.d.comb += r.eq(q + rnd)
    return r


def requantize_overflow(m: Module, r, dst: FixedFormat, name: str = "rq"):
    """Second half of :func:`requantize`: ``dst.overflow`` (saturate or wrap) of the shifted
    and rounded ``r``; a signal of ``raw_shape(dst)``."""
    out = Signal(raw_shape(dst), name=name)
    if dst.overflow == "sat" and dst.signed and r.shape().signed:
        # r fits iff its bits from the format's sign bit up are all equal: a bit test, no
        # comparator; otherwise the sign of r says which bound
        w = dst.width
        if len(r) <= w:
            m.d.comb += out.eq(r)
        else:
            top = r[w - 1:]
            fits = Signal(name=f"{name}_fits")
            m.d.comb += [fits.eq((top == 0) | (top == (1 << len(top)) - 1)),
                         out.eq(Mux(fits, r[:w], Mux(r[-1], dst.min_raw, dst.max_raw)))]
    elif dst.overflow == "sat":
        lo, hi = dst.min_raw, dst.max_raw
        m.d.comb += out.eq(Mux(r > hi, hi, Mux(r < lo, lo, r)))
    else:
        wide = Signal(signed(max(len(r), dst.width)), name=f"{name}_w")  # sign-extend first
        m.d.comb += [wide.eq(r), out.eq(wide[:dst.width])]
    return out


def requantize(m: Module, value, src: FixedFormat, dst: FixedFormat, name: str = "rq"):
    """Combinational ``dst.requantize(value, src.frac_bits)`` (pysim ``FixedFormat``): shift
    by ``src.frac - dst.frac`` with ``dst.rounding``, then ``dst.overflow``. Returns a signal
    of ``raw_shape(dst)``."""
    return requantize_overflow(m, requantize_round(m, value, src, dst, name), dst, name)


class Activation(wiring.Component):
    """``y = act(requantize(M))`` for ``n`` rows in parallel, registered.

    Parameters (keyword-only)
    -------------------------
    n: rows (1..4096). src_fmt: the accumulator format (pysim ``NetworkConfig.acc_fmt``).
    out_fmt: the layer's output format (its ``rounding`` and ``overflow`` apply).
    activation: ``"relu"`` or ``"identity"``.

    Ports
    -----
    i: In(ArrayLayout(signed(src width), n)) pre-activations.
    en: In(1) register the results at this edge.
    o: Out(ArrayLayout(out shape, n)) registered outputs; hold until the next ``en``.

    Latency 1 cycle (``o`` valid the cycle after ``en``); one vector per cycle.
    """

    def __init__(self, *, n, src_fmt, out_fmt, activation):
        owner = "Activation"
        self._n = check_int(owner, "n", n, 1, 4096)
        for name, f in (("src_fmt", src_fmt), ("out_fmt", out_fmt)):
            if not isinstance(f, FixedFormat) or not f.signed:
                raise TypeError(f"{owner}: {name} must be a signed pysim FixedFormat, got {f!r}")
        self._src, self._dst = src_fmt, out_fmt
        self._act = check_choice(owner, "activation", activation, ACTIVATIONS)
        super().__init__({
            "i": In(raw_vector(src_fmt, self._n)),
            "en": In(1),
            "o": Out(raw_vector(out_fmt, self._n)),
        })

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        for k in range(self._n):
            y = requantize(m, self.i[k], self._src, self._dst, name=f"rq{k}")
            if self._act == "relu":
                y = Mux(y < 0, 0, y)
            with m.If(self.en):
                m.d.sync += self.o[k].eq(y)
        return m

"""Argmax over signed codes, ties to the lowest index (pysim ``np.argmax``)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import check_int

__all__ = ["Argmax"]


class Argmax(wiring.Component):
    """Index of the largest of ``n`` codes; the lowest index wins ties.

    Parameters (keyword-only): ``n`` (1..4096), ``shape`` (one element's shape).

    Ports: ``i``: In(ArrayLayout(shape, n)); ``o``: Out(unsigned(max(1, ceil_log2(n)))).

    Latency 0 (combinational compare chain); a result every cycle.
    """

    def __init__(self, *, n, shape):
        self._n = check_int("Argmax", "n", n, 1, 4096)
        self._shape = Shape.cast(shape)
        super().__init__({
            "i": In(data.ArrayLayout(self._shape, self._n)),
            "o": Out(unsigned(max(1, ceil_log2(self._n)))),
        })

    def elaborate(self, platform):
        m = Module()
        best, idx = self.i[0], 0
        for k in range(1, self._n):
            gt = self.i[k] > best  # strictly greater: earlier index keeps ties
            nb = Signal(self._shape, name=f"best{k}")
            ni = Signal(self.o.shape(), name=f"idx{k}")
            m.d.comb += [nb.eq(Mux(gt, self.i[k], best)), ni.eq(Mux(gt, k, idx))]
            best, idx = nb, ni
        m.d.comb += self.o.eq(idx)
        return m

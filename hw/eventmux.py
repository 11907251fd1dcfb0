"""Event multiplexer: connects the active layer's event stream to the shared MAC."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["EventMux"]


class EventMux(wiring.Component):
    """Selects one of ``n`` streams of the same payload layout.

    Parameters (keyword-only): ``layout`` (payload layout), ``n`` (inputs, 1..256).

    Ports: ``i``: In(stream).array(n); ``sel``: In(range(n)) which input is connected;
    ``o``: Out(stream). Unselected inputs see ``ready = 0``.

    Latency 0 (combinational), throughput one transfer per cycle.
    """

    def __init__(self, *, layout, n):
        self._n = check_int("EventMux", "n", n, 1, 256)
        if not isinstance(layout, data.Layout):
            raise TypeError(f"EventMux: layout must be an amaranth data.Layout, got {layout!r}")
        sig = stream.Signature(layout)
        super().__init__({
            "i": In(sig).array(self._n),
            "sel": In(range(self._n)),
            "o": Out(sig),
        })

    def elaborate(self, platform):
        m = Module()
        with m.Switch(self.sel):
            for k in range(self._n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.payload.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]
        return m

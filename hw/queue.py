"""The event queue: groups from the intake or an examination to the issue stage."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["EventQueue"]


class EventQueue(wiring.Component):
    """A first-word-fall-through queue of ``depth`` groups (``amaranth.lib.fifo.SyncFIFO``)
    with stream ports.

    Parameters (keyword-only): ``layout`` (the payload layout), ``depth`` (1..65536).

    Ports: ``i``: In(stream) (``ready`` low when full); ``o``: Out(stream);
    ``empty``: Out(1) nothing is stored.

    Latency 1 cycle (a group pushed at an edge is at ``o`` from the next cycle, the number
    :data:`pysim.corecycles.QUEUE_LATENCY`); one push and one pop per cycle. The core sizes
    the queue so that it never fills (``CorePlan.queue_depth``); the producers do not wait.
    """

    def __init__(self, *, layout, depth):
        if not isinstance(layout, data.Layout):
            raise TypeError(f"EventQueue: layout must be an amaranth data.Layout, got {layout!r}")
        self._layout = layout
        self._depth = check_int("EventQueue", "depth", depth, 1, 65536)
        sig = stream.Signature(layout)
        super().__init__({"i": In(sig), "o": Out(sig), "empty": Out(1)})

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        q = m.submodules.fifo = fifo.SyncFIFO(width=self._layout.size, depth=self._depth)
        m.d.comb += [
            q.w_data.eq(self.i.payload),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            self.o.payload.eq(q.r_data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
            self.empty.eq(q.r_level == 0),
        ]
        return m

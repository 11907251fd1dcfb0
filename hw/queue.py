"""The event queue: groups from the intake or an examination to the issue stage."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["EventQueue"]


class EventQueue(wiring.Component):
    """A first-word-fall-through queue of groups: an input register in front of an
    ``amaranth.lib.fifo.SyncFIFO`` of ``depth`` groups, with stream ports.

    Parameters (keyword-only): ``layout`` (the payload layout), ``depth`` (1..65536),
    ``valid_from`` (optional: a function of a payload giving whether it is a real group; then
    ``i.valid`` is not used: the input register takes every cycle's payload and the validity is
    derived after it, so that the producers' compare logic ends at the register).

    Ports: ``i``: In(stream) (always ready: the core sizes the queue so that it never fills,
    ``CorePlan.queue_depth``); ``o``: Out(stream); ``empty``: Out(1) nothing is stored.

    Latency 1 cycle (a group pushed at an edge is at ``o`` from the next cycle, the number
    :data:`pysim.corecycles.QUEUE_LATENCY`); one push and one pop per cycle. A pushed group
    first lands in the input register (so the producer's compare logic ends at a register);
    from there it is either popped at once, when the FIFO is empty, or moved into the FIFO
    behind the older groups.
    """

    def __init__(self, *, layout, depth, valid_from=None):
        if not isinstance(layout, data.Layout):
            raise TypeError(f"EventQueue: layout must be an amaranth data.Layout, got {layout!r}")
        self._layout = layout
        self._depth = check_int("EventQueue", "depth", depth, 1, 65536)
        if valid_from is not None and not callable(valid_from):
            raise TypeError(f"EventQueue: valid_from must be callable, got {valid_from!r}")
        self._valid_from = valid_from
        sig = stream.Signature(layout)
        super().__init__({"i": In(sig), "o": Out(sig), "empty": Out(1)})

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        q = m.submodules.fifo = fifo.SyncFIFO(width=self._layout.size, depth=self._depth)
        held = Signal(self._layout)  # the input register
        held_v = Signal()
        from_fifo = Signal()
        m.d.comb += [
            self.i.ready.eq(1),
            from_fifo.eq(q.r_rdy),
            self.o.valid.eq(q.r_rdy | held_v),
            self.o.payload.eq(Mux(from_fifo, q.r_data, held)),
            q.r_en.eq(self.o.ready & from_fifo),
            # the held group goes into the FIFO unless it is the head and is popped now
            q.w_data.eq(held),
            q.w_en.eq(held_v & ~(~from_fifo & self.o.ready)),
            self.empty.eq(~held_v & ~q.r_rdy),
        ]
        if self._valid_from is None:
            m.d.sync += [held.eq(self.i.payload), held_v.eq(self.i.valid)]
        else:
            m.d.sync += held.eq(self.i.payload)
            m.d.comb += held_v.eq(self._valid_from(held))
        return m

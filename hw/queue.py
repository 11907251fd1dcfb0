"""The event queue: groups from the intake or an examination to the issue stage."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_int
from .shapes import ram_attrs

__all__ = ["EventQueue"]


class EventQueue(wiring.Component):
    """A first-word-fall-through queue of groups: an input register in front of a ring buffer
    of ``depth`` groups in a memory with a *synchronous* read port, with stream ports.

    Parameters (keyword-only): ``layout`` (the payload layout), ``depth`` (1..65536),
    ``valid_from`` (optional: a function of a payload giving whether it is a real group; then
    ``i.valid`` is not used: the input register takes every cycle's payload and the validity is
    derived after it, so that the producers' compare logic ends at the register).

    Ports: ``i``: In(stream) (always ready: the core sizes the queue so that it never fills,
    ``CorePlan.queue_depth``); ``o``: Out(stream); ``empty``: Out(1) nothing is stored.

    Latency 1 cycle (a group pushed at an edge is at ``o`` from the next cycle, the number
    :data:`pysim.corecycles.QUEUE_LATENCY`); one push and one pop per cycle. A pushed group
    first lands in the input register (so the producer's compare logic ends at a register);
    from there it is either popped at once, when the ring buffer is empty, or written into the
    ring buffer behind the older groups.

    The ring buffer's memory style follows :func:`hw.shapes.ram_attrs` (LUT RAM where the FPGA
    has it and the buffer is small, else block RAM). Its read port is synchronous, so it can be
    block RAM on every FPGA (an iCE40 has no asynchronous-read memory;
    ``amaranth.lib.fifo.SyncFIFO`` would become flip-flops there, and ``SyncFIFOBuffered`` adds
    a cycle of latency). It reads the *next*
    head's address (the head after this cycle's pop) and is transparent for the write port,
    so its data in a cycle is the head row as an asynchronous read would give it: the timing
    is exactly that of a FIFO with an asynchronous read.
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
        depth = self._depth
        storage = m.submodules.storage = Memory(shape=unsigned(self._layout.size), depth=depth,
                                                init=[], attrs=ram_attrs(depth, self._layout.size))
        w_port = storage.write_port()
        r_port = storage.read_port(domain="sync", transparent_for=(w_port,))
        held = Signal(self._layout)  # the input register
        held_v = Signal()
        produce = Signal(range(depth))  # the ring buffer's tail (next row written)
        consume = Signal(range(depth))  # its head (the row at the output)
        level = Signal(range(depth + 1))  # rows stored
        stored, write, pop_stored = Signal(), Signal(), Signal()
        next_consume = Signal.like(consume)

        def incr(ptr):
            return Mux(ptr == depth - 1, 0, ptr + 1)

        m.d.comb += [
            self.i.ready.eq(1),
            stored.eq(level != 0),
            self.o.valid.eq(stored | held_v),
            self.o.payload.eq(Mux(stored, r_port.data, held)),
            pop_stored.eq(self.o.ready & stored),
            # the held group goes into the ring buffer unless it is the head and is popped now
            write.eq(held_v & ~(~stored & self.o.ready)),
            next_consume.eq(Mux(pop_stored, incr(consume), consume)),
            r_port.addr.eq(next_consume),
            # the held group is written at the tail whether or not it is popped at once (then
            # the row stays free: the tail does not move), so the write enable does not wait
            # for the issue stage's pop
            w_port.addr.eq(produce),
            w_port.data.eq(held),
            w_port.en.eq(held_v),
            self.empty.eq(~held_v & ~stored),
        ]
        m.d.sync += [consume.eq(next_consume), level.eq(level + write - pop_stored)]
        with m.If(write):
            m.d.sync += produce.eq(incr(produce))
        if self._valid_from is None:
            m.d.sync += [held.eq(self.i.payload), held_v.eq(self.i.valid)]
        else:
            m.d.sync += held.eq(self.i.payload)
            m.d.comb += held_v.eq(self._valid_from(held))
        return m

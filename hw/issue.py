"""Issue stage: turns the event groups at the head of the queue into MAC issue cycles."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from pysim.coreplan import CorePlan

from .shapes import group_layout, mac_command_layout

__all__ = ["Issuer"]


class Issuer(wiring.Component):
    """Walks the work slots of the head group, lowest slot first, one weight word per cycle.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`).

    Ports
    -----
    i: In(stream of ``group_layout``) the queue head; popped in the cycle of its last word.
    en: In(1) the MAC phase runs (the head is not touched otherwise).
    layer: In the layer whose MAC runs, passed on with every command.
    o: Out(stream of ``mac_command_layout``, always ready) one weight word address (``start +
    t`` of the current slot's column, ``t`` counted in a register), its delta and the layer, to
    every lane.

    Latency 0 (the command is combinational from the head); throughput one word per cycle, with
    no cycle between slots or groups: a group costs the sum of its work slots' column lengths
    (``pysim.corecycles``). Every queued group holds at least one work slot.
    """

    def __init__(self, *, plan):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"Issuer: plan must be a pysim CorePlan, got {type(plan).__name__}")
        self._plan = plan
        super().__init__({
            "i": In(stream.Signature(group_layout(plan))),
            "en": In(1),
            "layer": In(mac_command_layout(plan)["layer"].shape),
            "o": Out(stream.Signature(mac_command_layout(plan), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        G = plan.group_slots
        head = self.i.payload

        pend = Signal(G)  # slots of the head group not yet issued
        loaded = Signal()  # pend belongs to the current head
        t = Signal(plan.len_width)  # word of the current slot's column
        cur = Signal(G)
        m.d.comb += cur.eq(Mux(loaded, pend, Cat(*(head[s].work for s in range(G)))))
        lowest = Signal(G)
        m.d.comb += lowest.eq(cur & (~cur + 1))
        start = Signal(plan.start_width)
        length = Signal(plan.len_width)
        delta = Signal(head[0].delta.shape())
        for s in range(G):  # one-hot select
            with m.If(lowest[s]):
                m.d.comb += [start.eq(head[s].start), length.eq(head[s].len),
                             delta.eq(head[s].delta)]
        go = Signal()
        m.d.comb += go.eq(self.en & self.i.valid)
        last_word = Signal()
        last_slot = Signal()
        # the address: a slot's first word is its start (straight from the head, no adder on
        # that path); later words count up in a register
        next_addr = Signal(plan.start_width)
        addr = Signal(plan.start_width)
        m.d.comb += addr.eq(Mux(t == 0, start, next_addr))
        m.d.sync += next_addr.eq(addr + 1)
        m.d.comb += [
            last_word.eq(t == length - 1),
            last_slot.eq((cur & ~lowest) == 0),
            self.o.valid.eq(go),
            self.o.payload.addr.eq(addr),
            self.o.payload.delta.eq(delta),
            self.o.payload.layer.eq(self.layer),
            self.i.ready.eq(go & last_word & last_slot),
        ]
        with m.If(go):
            with m.If(last_word):
                m.d.sync += [t.eq(0), pend.eq(cur & ~lowest), loaded.eq(~last_slot)]
            with m.Else():
                m.d.sync += [t.eq(t + 1), pend.eq(cur), loaded.eq(1)]
        return m

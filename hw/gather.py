"""Gathers the lanes' candidate events of one examination round into one event group."""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan
from .shapes import group_layout, slot_layout

__all__ = ["Gather"]


class Gather(wiring.Component):
    """Lane ``k``'s slot becomes slot ``k`` of the round's group (slots past ``L`` are empty);
    the group is offered when it holds work.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`).

    Ports: ``slots``: In(array of L ``slot_layout``); ``o``: Out(stream of ``group_layout``)
    (the queue never fills: ``o.ready`` is not waited for).

    Latency 0 (combinational); one group per cycle.
    """

    def __init__(self, *, plan):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"Gather: plan must be a pysim CorePlan, got {type(plan).__name__}")
        self._plan = plan
        super().__init__({
            "slots": In(data.ArrayLayout(slot_layout(plan), plan.lanes)),
            "o": Out(stream.Signature(group_layout(plan))),
        })

    def elaborate(self, platform):
        m = Module()
        L = self._plan.lanes
        for k in range(L):
            m.d.comb += self.o.payload[k].eq(self.slots[k])
        m.d.comb += self.o.valid.eq(Cat(*(self.slots[k].work for k in range(L))).any())
        return m

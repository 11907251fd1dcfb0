"""Observation intake: delta-encodes the observation as the host writes it."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan
from .delta import delta_difference, delta_fire
from .shapes import BLOCK_RAM, group_layout, obs_layout, threshold_shape

__all__ = ["Intake"]


class Intake(wiring.Component):
    """Compares every written observation word with layer 0's ``x_hat`` and queues its events.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`).

    Ports
    -----
    w: In(stream of ``obs_layout``) observation words; ``w.ready`` follows ``en``. A word whose
    ``addr`` lies past the last word is accepted and ignored. Each word is written at most once
    per step; after an episode start every word must be written.
    en: In(1) writes are accepted (the core is idle).
    first: In(1) with a write: an episode start (``x_hat`` reads as 0 and every code is stored).
    threshold: In layer 0's threshold register (raw code of the input format).
    o: Out(stream of ``group_layout``) one group per word that holds work (an event whose
    key is not 0: it reaches a non-empty weight column); slot ``p`` is input ``addr * P + p``.
    The queue behind it never
    fills, so ``o.ready`` is not waited for.
    events: Out(range(P + 1)) events found in this cycle (including those with empty columns).
    busy: Out(1) a word is in flight (the core does not start a step until it has been queued).

    Latency ``INTAKE_LATENCY`` = 3 cycles after the accepting edge (W1 registers the memories'
    words, W2 computes the differences, W3 compares, pushes and stores the codes that fired in
    ``x_hat``); one word per cycle.
    """

    def __init__(self, *, plan):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"Intake: plan must be a pysim CorePlan, got {type(plan).__name__}")
        self._plan = plan
        fmt = plan.config.input_fmt
        super().__init__({
            "w": In(stream.Signature(obs_layout(plan))),
            "en": In(1),
            "first": In(1),
            "threshold": In(threshold_shape(fmt)),
            "o": Out(stream.Signature(group_layout(plan))),
            "events": Out(range(plan.obs_words + 1)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        P, W, n_in = plan.obs_words, plan.obs_depth, plan.config.n_in
        cw = plan.config.input_fmt.width

        xhat = m.submodules.xhat = memory.Memory(shape=unsigned(P * cw), depth=W, init=[],
                                                 attrs=BLOCK_RAM)
        # one write enable per code: a code is stored only if it fired (or at an episode start)
        xh_wr = xhat.write_port(granularity=cw)
        xh_rd = xhat.read_port()  # each word is written at most once per step
        # the keys of a word's P inputs in layer 0, side by side
        cwid = plan.key_width
        keys = plan.intake_keys()
        ctab = m.submodules.keys = memory.Memory(
            shape=unsigned(P * cwid), depth=W,
            init=[sum(keys[p][w] << (p * cwid) for p in range(P)) for w in range(W)],
            attrs=BLOCK_RAM)
        ct_rd = ctab.read_port()

        # stage W0: the accepted write addresses the memories
        take = Signal()
        m.d.comb += [self.w.ready.eq(self.en), take.eq(self.w.valid & self.en)]
        addr = self.w.payload.addr
        m.d.comb += [xh_rd.addr.eq(addr), ct_rd.addr.eq(addr)]
        v1 = Signal()
        a1 = Signal.like(addr)
        data1 = Signal.like(self.w.payload.data)
        first1 = Signal()
        m.d.sync += [v1.eq(take & (addr < W)), a1.eq(addr), data1.eq(self.w.payload.data),
                     first1.eq(self.first)]

        # stage W1: the memories' words are registered (block RAM outputs feed no logic)
        v2 = Signal()
        a2 = Signal.like(addr)
        data2 = Signal.like(self.w.payload.data)
        first2 = Signal()
        xh2 = Signal.like(xh_rd.data)
        ct2 = Signal.like(ct_rd.data)
        m.d.sync += [v2.eq(v1), a2.eq(a1), data2.eq(data1), first2.eq(first1),
                     xh2.eq(xh_rd.data), ct2.eq(ct_rd.data)]

        # stage W2: every code's difference d = x - x_hat (hw.delta, difference form)
        v3 = Signal()
        a3 = Signal.like(addr)
        data3 = Signal.like(self.w.payload.data)
        first3 = Signal()
        ct3 = Signal.like(ct_rd.data)
        m.d.sync += [v3.eq(v2), a3.eq(a2), data3.eq(data2), first3.eq(first2), ct3.eq(ct2)]
        d3 = []
        for p in range(P):
            xh_raw = xh2[p * cw:(p + 1) * cw]
            d = delta_difference(m, data2[p], xh_raw.as_signed(), first2, name=f"in{p}")
            dr = Signal.like(d, name=f"d{p}_3")
            m.d.sync += dr.eq(d)
            d3.append(dr)
        m.d.comb += self.busy.eq(v1 | v2 | v3)

        # stage W3: compare every difference with the threshold, store x_hat, push the group
        # (-threshold from a register: the threshold is written while idle, at least three
        # cycles before a word written with it or after it reaches W3)
        neg_thr = Signal(signed(len(self.threshold) + 1))
        m.d.sync += neg_thr.eq(-self.threshold)
        fires, works, stores = [], [], []
        for p in range(P):
            exists = a3 < -(-(n_in - p) // P) if p < n_in else 0  # input a3 * P + p < n_in
            fire = delta_fire(m, d3[p], self.threshold, first3, name=f"in{p}",
                              neg_threshold=neg_thr)
            fire_p = Signal(name=f"fire{p}")
            m.d.comb += fire_p.eq(v3 & fire & exists)
            key = ct3[p * cwid:(p + 1) * cwid]
            slot = self.o.payload[p]
            m.d.comb += [slot.work.eq(fire_p & (key != 0)), slot.delta.eq(d3[p]),
                         slot.key.eq(key)]
            fires.append(fire_p)
            works.append(slot.work)
            stores.append(v3 & (fire_p | first3))
        m.d.comb += [
            xh_wr.addr.eq(a3),
            xh_wr.data.eq(Cat(*(data3[p] for p in range(P)))),
            xh_wr.en.eq(Cat(*stores)),
            self.o.valid.eq(Cat(*works).any()),
            self.events.eq(sum(fires)),
        ]
        return m

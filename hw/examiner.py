"""Examination of one lane: re-examines the neurons whose accumulator changed."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from pysim.coreplan import CorePlan

from ._checks import check_int
from .activation import requantize_overflow, requantize_round
from .delta import delta_event, delta_window
from .shapes import BLOCK_RAM, mac_command_layout, raw_shape, slot_layout, threshold_shape

__all__ = ["Examiner"]


class Examiner(wiring.Component):
    """Lane ``k``'s part of an examination round: requantize, activate and delta-encode one
    neuron of the examined layer, and offer its event to the next layer.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`), ``lane`` (k).

    Memories (hidden layers only): ``x_hat`` of every hidden neuron of the lane (the next
    layer's last propagated input) and ``next`` (ROM: ``start | len`` of the neuron's column in
    the next layer).

    Ports
    -----
    go, index: In round ``index`` starts in this cycle (X0). more: Out(1) this lane has a
    neuron in round ``index + 1`` (the controller runs a round while any lane has one).
    layer, full, first: In the examined layer (constant during an examination); ``full``:
    every neuron is examined (round ``r`` = row ``r``), else entry ``r`` of the dirty list;
    ``first``: episode start (``x_hat`` reads as 0 and is always written).
    threshold: In the next layer's threshold register.
    count_next, dl_data / dl_bank, dl_index; ex_rd_* / ex_rd_data; ex_wr_*: to the lane's
    dirty lists and accumulator banks (:class:`hw.lane.MacLane`).
    slot: Out(``slot_layout``) this lane's candidate event of the round in X4 (``work``: it
    fired and its column is not empty); valid: Out(1) a hidden neuron is in X4; fire: Out(1) it
    fired (counted as an event of the next layer, even with an empty column).
    busy: Out(1) a round is in X1..X4.
    out: Out(array of the last layer's output codes of this lane's rows); written when the
    last layer is examined, held otherwise.

    Pipeline (``EXAM_LATENCY`` = 4 from X0 to the push): **X0** dirty-list read; **X1**
    accumulator, ``x_hat`` and ``next`` reads; **X2** requantize: shift and round (the word is
    written back with its dirty bit cleared); **X3** saturate or wrap, activation (the last
    layer: the output register), the threshold window of ``x_hat`` (:mod:`hw.delta`); **X4**
    ``d = x - x_hat``, threshold compare, ``x_hat`` write.
    One round per cycle.
    """

    def __init__(self, *, plan, lane):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"Examiner: plan must be a pysim CorePlan, got "
                            f"{type(plan).__name__}")
        self._plan = plan
        self._k = check_int("Examiner", "lane", lane, 0, plan.lanes - 1)
        cfg = plan.config
        aw, W = plan.acc_addr_width, plan.acc_width
        cnt = range(max(plan.bank_depth) + 1)
        last = cfg.layers[-1].out_fmt
        thr_w = max(threshold_shape(cfg.in_fmt(i)).width for i in range(plan.n_layers))
        super().__init__({
            "go": In(1), "index": In(aw),
            "layer": In(mac_command_layout(plan)["layer"].shape),
            "full": In(1), "first": In(1), "threshold": In(unsigned(thr_w)),
            "count_next": In(cnt).array(2), "dl_data": In(aw),
            "dl_bank": Out(1), "dl_index": Out(aw),
            "ex_rd_en": Out(1), "ex_rd_bank": Out(1), "ex_rd_addr": Out(aw),
            "ex_rd_data": In(W + 1),
            "ex_wr_en": Out(1), "ex_wr_bank": Out(1), "ex_wr_addr": Out(aw),
            "ex_wr_data": Out(W),
            "more": Out(1),
            "slot": Out(slot_layout(plan)), "valid": Out(1), "fire": Out(1), "busy": Out(1),
            "out": Out(data.ArrayLayout(raw_shape(last), plan.rows[-1])),
        })

    def elaborate(self, platform):
        m = Module()
        plan, k = self._plan, self._k
        cfg = plan.config
        N, L = plan.n_layers, plan.lanes
        aw, W, sw = plan.acc_addr_width, plan.acc_width, plan.start_width
        xw = plan.x_width

        def per_layer(values, shape, name):
            s = Signal(shape, name=name)
            with m.Switch(self.layer):
                for i, v in enumerate(values):
                    with m.Case(i):
                        m.d.comb += s.eq(v)
            return s

        # x_hat (RAM) and next (constant) share one word: {next, x_hat}
        nw = sw + plan.len_width
        xn = m.submodules.xnext = memory.Memory(
            shape=unsigned(nw + xw), depth=plan.x_depth,
            init=[v << xw for v in plan.next_columns()[k]], attrs=BLOCK_RAM)
        xn_wr = xn.write_port()
        xn_rd = xn.read_port(transparent_for=(xn_wr,))

        # ---- X0: the round's dirty-list entry ----------------------------------------------
        n_out_rows = [-(-(ly.n_out - k) // L) for ly in cfg.layers]  # rows holding a neuron
        rows_here = per_layer(n_out_rows, range(max(n_out_rows) + 1), "rows_here")
        count = Mux(self.layer[0], self.count_next[1], self.count_next[0])
        limit = Mux(self.full, rows_here, count)
        exists = Signal()
        m.d.comb += [
            self.dl_bank.eq(self.layer[0]),
            self.dl_index.eq(self.index),
            exists.eq(self.index < limit),
            self.more.eq(self.index + 1 < limit),
        ]
        v1 = Signal()
        r1 = Signal(aw)
        m.d.sync += [v1.eq(self.go & exists), r1.eq(self.index)]

        # ---- X1: accumulator, x_hat and next reads -------------------------------------------
        base = per_layer(plan.acc_base, range(max(plan.bank_depth) + 1), "acc_base")
        xoff = per_layer([(plan.x_base[i] if i < N - 1 else 0) - plan.acc_base[i]
                          for i in range(N)], signed(aw + 2), "xoff")
        addr1 = Signal(aw)
        xaddr1 = Signal(max(1, (plan.x_depth - 1).bit_length()))
        m.d.comb += [
            addr1.eq(Mux(self.full, base + r1, self.dl_data)),
            xaddr1.eq(addr1 + xoff),
            self.ex_rd_en.eq(v1),
            self.ex_rd_bank.eq(self.layer[0]),
            self.ex_rd_addr.eq(addr1),
            xn_rd.addr.eq(xaddr1),
        ]
        v2 = Signal()
        addr2 = Signal(aw)
        xaddr2 = Signal.like(xaddr1)
        m.d.sync += [v2.eq(v1), addr2.eq(addr1), xaddr2.eq(xaddr1)]

        # ---- X2: requantize (shift and round), write the word back clean ---------------------
        rounded = []
        for i, ly in enumerate(cfg.layers):
            acc = self.ex_rd_data[:ly.acc_bits].as_signed()
            rounded.append(requantize_round(m, acc, cfg.acc_fmt(i), ly.out_fmt, name=f"rq{i}"))
        rw = max(len(r) for r in rounded)
        r2 = per_layer(rounded, signed(rw), "rounded")
        m.d.comb += [
            self.ex_wr_en.eq(v2),
            self.ex_wr_bank.eq(self.layer[0]),
            self.ex_wr_addr.eq(addr2),
            self.ex_wr_data.eq(self.ex_rd_data[:W]),
        ]
        v3 = Signal()
        r3 = Signal(signed(rw))
        xh3 = Signal(xw)
        nx3 = Signal(sw + plan.len_width)
        addr3 = Signal(aw)
        xaddr3 = Signal.like(xaddr1)
        m.d.sync += [v3.eq(v2), r3.eq(r2), xh3.eq(xn_rd.data[:xw]), nx3.eq(xn_rd.data[xw:]),
                     addr3.eq(addr2), xaddr3.eq(xaddr2)]

        # ---- X3: saturate/wrap, activation ----------------------------------------------------
        ow = max(ly.out_fmt.width for ly in cfg.layers)
        acts = []
        for i, ly in enumerate(cfg.layers):
            y = requantize_overflow(m, r3, ly.out_fmt, name=f"ov{i}")
            if ly.activation == "relu":
                y = Mux(y < 0, 0, y)
            acts.append(y)
        x3 = per_layer(acts, signed(ow), "x")
        hidden = Signal()
        m.d.comb += hidden.eq(self.layer != N - 1)
        # the last layer: its output codes of this lane's rows
        row3 = Signal(aw)
        m.d.comb += row3.eq(addr3 - plan.acc_base[N - 1])
        with m.If(v3 & ~hidden), m.Switch(row3):
            for r in range(plan.rows[-1]):
                with m.Case(r):
                    m.d.sync += self.out[r].eq(x3)
        xh_eff, lo, hi = delta_window(m, xh3.as_signed(), self.threshold, self.first,
                                      name="ex")
        v4 = Signal()
        x = Signal(signed(ow))
        xh4 = Signal.like(xh_eff)
        lo4 = Signal.like(lo)
        hi4 = Signal.like(hi)
        nx4 = Signal(nw)
        xaddr4 = Signal.like(xaddr1)
        m.d.sync += [v4.eq(v3 & hidden), x.eq(x3), xh4.eq(xh_eff), lo4.eq(lo), hi4.eq(hi),
                     nx4.eq(nx3), xaddr4.eq(xaddr3)]

        # ---- X4: delta, threshold compare, x_hat write ----------------------------------------
        d, fire = delta_event(m, x, xh4, lo4, hi4, self.first, name="ex")
        length = nx4[sw:]
        m.d.comb += [
            self.valid.eq(v4),
            self.fire.eq(v4 & fire),
            self.slot.work.eq(v4 & fire & (length != 0)),
            self.slot.delta.eq(d),
            self.slot.start.eq(nx4[:sw]),
            self.slot.len.eq(length),
            xn_wr.addr.eq(xaddr4),
            xn_wr.data.eq(Cat(x[:xw], nx4)),
            xn_wr.en.eq(v4 & (fire | self.first)),
            self.busy.eq(v1 | v2 | v3 | v4),
        ]
        return m

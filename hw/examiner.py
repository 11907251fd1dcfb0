"""Examination of one lane: re-examines the neurons whose accumulator changed."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan
from ._checks import check_int
from .activation import requantize_overflow, requantize_split
from .delta import delta_event, delta_window
from .shapes import mac_command_layout, ram_attrs, raw_shape, slot_layout, threshold_shape

__all__ = ["Examiner"]


class Examiner(wiring.Component):
    """Lane ``k``'s part of an examination round: requantize, activate and delta-encode one
    neuron of the examined layer, and offer its event to the next layer.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`), ``lane`` (k).

    Memories (hidden layers only): ``x_hat`` of every hidden neuron of the lane (the next
    layer's last propagated input) and ``next`` (ROM: the key of the neuron's input in the next
    layer, ``CorePlan.next_keys``).

    Ports
    -----
    go, index, index1: In round ``index`` starts in this cycle (X0); ``index1 = index + 1``.
    more: Out(1) this lane has a
    neuron in round ``index + 1`` (the controller runs a round while any lane has one).
    layer, full, first: In the examined layer (constant during an examination); ``full``:
    every neuron is examined (round ``r`` = row ``r``), else entry ``r`` of the dirty list;
    ``first``: episode start (``x_hat`` reads as 0 and is always written).
    threshold: In the next layer's threshold register.
    count, appending, dl_data / dl_bank, dl_index; ex_rd_* / ex_rd_data; ex_clean_*: to the lane's
    dirty lists and accumulator banks (:class:`hw.lane.MacLane`).
    slot: Out(``slot_layout``) this lane's candidate event of the round in X3 (``work``: it
    fired and its key is not 0); valid: Out(1) a hidden neuron is in X3; fire: Out(1) it
    fired (counted as an event of the next layer, even with an empty column).
    busy: Out(1) a round is in X1..X3 (the last layer: X1..X2; its X3 writes the output
    registers at the edge that ends the cycle).
    out: Out(array of the last layer's output codes of this lane's rows); written when the
    last layer is examined, held otherwise.

    Pipeline (``EXAM_LATENCY`` = 3 from X0 to the push; one carry chain per stage): **X0**
    dirty-list read; **X1** accumulator, ``x_hat`` and ``next`` reads; **X2** requantize:
    shift and rounding add (the dirty bit is cleared), the threshold window of ``x_hat``
    (:mod:`hw.delta`); **X3** saturate or wrap, activation (the last layer: the output
    register), ``d = x - x_hat``, threshold compare; the ``x_hat`` write follows in the next
    cycle.
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
            "go": In(1), "index": In(aw), "index1": In(aw + 1),
            "layer": In(mac_command_layout(plan)["layer"].shape),
            "full": In(1), "first": In(1), "threshold": In(unsigned(thr_w)),
            "count": In(cnt).array(2), "appending": In(2), "dl_data": In(aw),
            "dl_bank": Out(1), "dl_index": Out(aw),
            "ex_rd_en": Out(1), "ex_rd_bank": Out(1), "ex_rd_addr": Out(aw),
            "ex_rd_data": In(W),
            "ex_clean_en": Out(1), "ex_clean_bank": Out(1), "ex_clean_addr": Out(aw),
            "more": Out(1),
            "slot": Out(slot_layout(plan)), "valid": Out(1), "fire": Out(1), "busy": Out(1),
            "out": Out(data.ArrayLayout(raw_shape(last), plan.rows[-1])),
        })

    def elaborate(self, platform):
        m = Module()
        plan, k = self._plan, self._k
        cfg = plan.config
        N = plan.n_layers
        aw = plan.acc_addr_width
        xw = plan.x_width

        def per_layer(values, shape, name):
            s = Signal(shape, name=name)
            with m.Switch(self.layer):
                for i, v in enumerate(values):
                    with m.Case(i):
                        m.d.comb += s.eq(v)
            return s

        # x_hat (RAM) and next (constant) share one word: {next, x_hat}; X2's window adds to
        # the read data, so it is LUT RAM where small (ram_attrs)
        nw = plan.key_width
        xn = m.submodules.xnext = memory.Memory(
            shape=unsigned(nw + xw), depth=plan.x_depth,
            init=[v << xw for v in plan.next_keys()[k]], attrs=ram_attrs(plan.x_depth, nw + xw))
        xn_wr = xn.write_port()
        # not transparent: a neuron is examined once per examination, so its x_hat is never
        # read in the cycle it is written
        xn_rd = xn.read_port()

        # ---- X0: the round's dirty-list entry ----------------------------------------------
        n_out_rows = [plan.real_rows(i, k) for i in range(N)]  # rows holding a neuron
        rows_here = per_layer(n_out_rows, range(max(n_out_rows) + 1), "rows_here")
        # whether rounds index and index + 1 hold a neuron of this lane: compared with the
        # registered count, and the dirty-list append of this very cycle decided last (it is the
        # last thing known: the MAC's final append may be happening now; round 0's
        # accumulator read in X1 then falls in the cycle of its write, which it sees)
        count = Mux(self.layer[0], self.count[1], self.count[0])
        app = Mux(self.layer[0], self.appending[1], self.appending[0])
        idx1 = self.index1
        lt0, eq0, lt1, eq1 = Signal(), Signal(), Signal(), Signal()
        r_lt0, r_lt1 = Signal(), Signal()
        m.d.comb += [
            lt0.eq(self.index < count), eq0.eq(self.index == count),
            lt1.eq(idx1 < count), eq1.eq(idx1 == count),
            r_lt0.eq(self.index < rows_here), r_lt1.eq(idx1 < rows_here),
        ]
        exists = Signal()
        m.d.comb += [
            self.dl_bank.eq(self.layer[0]),
            self.dl_index.eq(self.index),
            exists.eq(Mux(self.full, r_lt0, lt0 | (app & eq0))),
            self.more.eq(Mux(self.full, r_lt1, lt1 | (app & eq1))),
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

        # ---- X2: requantize (shift and round), the threshold window; write the word back clean
        # one carry chain per stage: the rounding add here, the window's from x_hat beside it
        # (the layer's shift and rounding bit are selected first: one adder, not one per layer)
        shifted, incs = [], []
        for i, ly in enumerate(cfg.layers):
            acc = self.ex_rd_data[:ly.acc_bits].as_signed()
            q, rnd = requantize_split(m, acc, cfg.acc_fmt(i), ly.out_fmt, name=f"rq{i}")
            shifted.append(q)
            incs.append(rnd)
        rw = max(len(q) for q in shifted) + 1
        q2 = per_layer(shifted, signed(rw - 1), "shifted")
        rnd2 = per_layer(incs, 1, "rnd")
        r2 = Signal(signed(rw))
        m.d.comb += r2.eq(q2 + rnd2)
        xh_eff, lo, hi = delta_window(m, xn_rd.data[:xw].as_signed(), self.threshold,
                                      self.first, name="ex")
        m.d.comb += [
            self.ex_clean_en.eq(v2),
            self.ex_clean_bank.eq(self.layer[0]),
            self.ex_clean_addr.eq(addr2),
        ]
        v3 = Signal()
        r3 = Signal(signed(rw))
        xh3 = Signal.like(xh_eff)
        lo3 = Signal.like(lo)
        hi3 = Signal.like(hi)
        nx3 = Signal(nw)
        addr3 = Signal(aw)
        xaddr3 = Signal.like(xaddr1)
        m.d.sync += [v3.eq(v2), r3.eq(r2), xh3.eq(xh_eff), lo3.eq(lo), hi3.eq(hi),
                     nx3.eq(xn_rd.data[xw:]), addr3.eq(addr2), xaddr3.eq(xaddr2)]

        # ---- X3: saturate/wrap, activation, delta, threshold compare --------------------------
        ow = max(ly.out_fmt.width for ly in cfg.layers)
        acts = []
        for i, ly in enumerate(cfg.layers):
            y = requantize_overflow(m, r3, ly.out_fmt, name=f"ov{i}")
            if ly.activation == "relu":
                y = Mux(y < 0, 0, y)
            acts.append(y)
        x = per_layer(acts, signed(ow), "x")
        hidden = Signal()
        m.d.comb += hidden.eq(self.layer != N - 1)
        # the last layer: its output codes of this lane's rows
        row3 = Signal(aw)
        m.d.comb += row3.eq(addr3 - plan.acc_base[N - 1])
        with m.If(v3 & ~hidden), m.Switch(row3):
            for r in range(plan.rows[-1]):
                with m.Case(r):
                    m.d.sync += self.out[r].eq(x)
        d, fire = delta_event(m, x, xh3, lo3, hi3, self.first, name="ex")
        vh = Signal()
        m.d.comb += vh.eq(v3 & hidden)
        # the x_hat write is registered first (off the compare's path): the neuron's word is
        # not read again before the next step
        xaddr4 = Signal.like(xaddr1)
        xdata4 = Signal(nw + xw)
        xwe4 = Signal()
        m.d.sync += [xaddr4.eq(xaddr3), xdata4.eq(Cat(x[:xw], nx3)),
                     xwe4.eq(vh & (fire | self.first))]
        m.d.comb += [
            self.valid.eq(vh),
            self.fire.eq(vh & fire),
            self.slot.work.eq(vh & fire & (nx3 != 0)),
            self.slot.delta.eq(d),
            self.slot.key.eq(nx3),
            xn_wr.addr.eq(xaddr4),
            xn_wr.data.eq(xdata4),
            xn_wr.en.eq(xwe4),
            # the last layer's X3 writes the output registers at the edge that ends it, the
            # edge at which the controller may end the step: not busy then
            self.busy.eq(v1 | v2 | vh),
        ]
        return m

"""One MAC lane: its weight memory, two accumulator banks with dirty bits, and dirty lists."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan
from ._checks import check_int
from .shapes import BLOCK_RAM, mac_command_layout, ram_attrs, rom_attrs

__all__ = ["MacLane"]


class MacLane(wiring.Component):
    """Lane ``k``: ``acc[row] += w * delta`` for the column words the issue stage broadcasts,
    remembering which accumulators changed.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`), ``lane`` (k).

    Memories: the lane's weight words (ROM, ``plan.weight_words[k]``); two accumulator banks
    (layer ``l`` in bank ``l % 2``), words of ``plan.acc_width`` bits that wrap
    (every layer's accumulator is the low ``acc_bits`` of its word: wrapping is modular, so the
    low bits are exact), each with a dirty bit (its own 1-bit memory); per bank a dirty list:
    the bank addresses whose dirty bit the MAC set,
    in the order it set them.

    Ports
    -----
    cmd: In(stream of ``mac_command_layout``, always ready) from the issue stage.
    ex_rd_en, ex_rd_bank, ex_rd_addr / ex_rd_data: the examination's accumulator read (data
    in the next cycle, the full word).
    ex_clean_en, ex_clean_bank, ex_clean_addr: the examination clears a dirty bit.
    init_en, init_index, init_bank, init_addr: the bias write of an episode start: the bias of
    init step ``init_index`` (``plan.bias_words()[k]``, a ROM) is written to ``init_addr`` of
    ``init_bank`` in the next cycle (dirty bit 0).
    dl_bank, dl_index / dl_data: dirty-list read (data in the next cycle; an entry appended in
    the same cycle is seen).
    count / appending: Out, per bank, entries in the dirty list, and whether one is appended in
    this cycle (it counts from the next).
    dl_clear: In(2) empty bank ``b``'s dirty list at this edge.
    mac_valid, mac_layer: Out: a valid weight word was read this cycle for that layer (a
    significant multiplication; the core counts them).

    Pipeline (the numbers of ``pysim.corecycles``): **I** the command addresses the weight
    memory; **R** the weight word is registered (its accumulator address plus the command's
    output pixel) and its dirty bit is read; **A** accumulator read, ``w * delta``
    registered, the dirty bit set and the address appended to the dirty list if the bit was
    clear (``APPEND_LATENCY`` = 2 cycles from issue to append); **P** ``acc + product``
    written (``MAC_LATENCY`` = 3 cycles from issue to write). One word per cycle. An update
    reads its accumulator (and its dirty bit) in the cycle in which the previous one writes
    it: the read ports are transparent, so back-to-back updates of one address are neither
    lost nor listed twice. So the dirty list is complete one cycle before the last write, and
    the examination's first accumulator read may fall in the cycle of that write (it sees it,
    through the same transparent port). Otherwise the examination, the bias write and the MAC
    never use one bank in the same cycle (the core's schedule).
    """

    def __init__(self, *, plan, lane):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"MacLane: plan must be a pysim CorePlan, got {type(plan).__name__}")
        self._plan = plan
        self._k = check_int("MacLane", "lane", lane, 0, plan.lanes - 1)
        aw, W = plan.acc_addr_width, plan.acc_width
        cnt = range(max(plan.bank_depth) + 1)
        super().__init__({
            "cmd": In(stream.Signature(mac_command_layout(plan), always_ready=True)),
            "ex_rd_en": In(1), "ex_rd_bank": In(1), "ex_rd_addr": In(aw),
            "ex_rd_data": Out(W),
            "ex_clean_en": In(1), "ex_clean_bank": In(1), "ex_clean_addr": In(aw),
            "init_en": In(1), "init_index": In(max(1, (plan.init_steps - 1).bit_length())),
            "init_bank": In(1), "init_addr": In(aw),
            "dl_bank": In(1), "dl_index": In(aw), "dl_data": Out(aw),
            "count": Out(cnt).array(2), "appending": Out(2),
            "dl_clear": In(2),
            "mac_valid": Out(1), "mac_layer": Out(mac_command_layout(plan)["layer"].shape),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        aw, W, ww = plan.acc_addr_width, plan.acc_width, plan.weight_width

        rom = m.submodules.weights = memory.Memory(
            shape=unsigned(plan.word_width), depth=plan.weight_depth,
            init=plan.weight_words[self._k], attrs=BLOCK_RAM)
        w_rd = rom.read_port()
        bias = m.submodules.bias = memory.Memory(
            shape=unsigned(W), depth=plan.init_steps,
            init=[v & ((1 << W) - 1) for v in plan.bias_words()[self._k]],
            attrs=rom_attrs(plan.init_steps))
        b_rd = bias.read_port()
        m.d.comb += b_rd.addr.eq(self.init_index)
        init_v = Signal()
        init_b = Signal()
        init_a = Signal(aw)
        m.d.sync += [init_v.eq(self.init_en), init_b.eq(self.init_bank),
                     init_a.eq(self.init_addr)]
        # per bank: the accumulators, and their dirty bits in a memory of their own (the
        # examination clears a bit without touching the accumulator)
        banks_rd, banks_wr, bits_rd, bits_wr = [], [], [], []
        for b in range(2):
            depth = plan.bank_depth[b]
            mem = memory.Memory(shape=unsigned(W), depth=depth, init=[],
                                attrs=ram_attrs(depth, W))
            m.submodules[f"acc{b}"] = mem
            wp = mem.write_port()
            banks_wr.append(wp)
            banks_rd.append(mem.read_port(transparent_for=(wp,)))
            mem = memory.Memory(shape=unsigned(1), depth=depth, init=[],
                                attrs=ram_attrs(depth, 1))
            m.submodules[f"dirty_bits{b}"] = mem
            wp = mem.write_port()
            bits_wr.append(wp)
            bits_rd.append(mem.read_port(transparent_for=(wp,)))
        # both banks' dirty lists in one memory: bank b's entry i at address (i, b)
        dirty = m.submodules.dirty = memory.Memory(
            shape=unsigned(aw), depth=2 << aw, init=[], attrs=ram_attrs(2 << aw, aw))
        dl_wr = dirty.write_port()
        dl_rd = dirty.read_port(transparent_for=(dl_wr,))
        m.d.comb += dl_rd.addr.eq(Cat(self.dl_bank, self.dl_index))

        # ---- I: address the weight memory --------------------------------------------------
        cmd = self.cmd.payload
        m.d.comb += w_rd.addr.eq(cmd.addr)
        v_r = Signal()
        d_r = Signal.like(cmd.delta)
        lay_r = Signal.like(cmd.layer)
        pix_r = Signal.like(cmd.pix)
        m.d.sync += [v_r.eq(self.cmd.valid), d_r.eq(cmd.delta), lay_r.eq(cmd.layer),
                     pix_r.eq(cmd.pix)]

        # ---- R: the weight word is registered (a block RAM's output feeds no logic) ------------
        word = w_rd.data
        w = Signal(signed(ww))
        a_r = Signal(aw)
        hit = Signal()
        d_a = Signal.like(d_r)
        lay_a = Signal.like(lay_r)
        # a conv weight word addresses its channel's pixel 0: add the event's output pixel
        # (dense-only plans have no adder here)
        a_word = Signal(aw)
        m.d.comb += a_word.eq(word[ww:ww + aw] + pix_r if plan.has_conv else word[ww:ww + aw])
        for b in range(2):  # the dirty bit, read here so that the append is known in A
            m.d.comb += bits_rd[b].addr.eq(a_word)
        m.d.sync += [
            w.eq(word[:ww]),
            a_r.eq(a_word),
            hit.eq(v_r & word[ww + aw]),
            d_a.eq(d_r),
            lay_a.eq(lay_r),
        ]

        # ---- A: accumulator read, product -------------------------------------------------------
        m.d.comb += [self.mac_valid.eq(hit), self.mac_layer.eq(lay_a)]
        bank_r = lay_a[0]
        v_p = Signal()
        a_p = Signal(aw)
        bank_p = Signal()
        prod_p = Signal(signed(ww + len(d_a)))
        m.d.sync += [v_p.eq(hit), a_p.eq(a_r), bank_p.eq(bank_r), prod_p.eq(w * d_a)]
        for b in range(2):
            mac_b = hit & (bank_r == b)
            m.d.comb += banks_rd[b].addr.eq(Mux(mac_b, a_r, self.ex_rd_addr))
        ex_bank_q = Signal()
        m.d.sync += ex_bank_q.eq(self.ex_rd_bank)
        m.d.comb += self.ex_rd_data.eq(Mux(ex_bank_q, banks_rd[1].data, banks_rd[0].data))
        # the dirty bit is set, and the address appended to the dirty list if it was clear
        was_dirty = Signal()
        m.d.comb += was_dirty.eq(Mux(bank_r, bits_rd[1].data, bits_rd[0].data))
        append = Signal()
        m.d.comb += append.eq(hit & ~was_dirty)
        m.d.comb += [
            self.dl_data.eq(dl_rd.data),
            dl_wr.addr.eq(Cat(bank_r, Mux(bank_r, self.count[1], self.count[0]))),
            dl_wr.data.eq(a_r),
            dl_wr.en.eq(append),
        ]

        # ---- P: add, write back -------------------------------------------------------------
        old = Signal(W)
        m.d.comb += old.eq(Mux(bank_p, banks_rd[1].data, banks_rd[0].data))
        new = Signal(W)
        m.d.comb += new.eq(old + prod_p)
        for b in range(2):
            wp, bp = banks_wr[b], bits_wr[b]
            with m.If(v_p & (bank_p == b)):
                m.d.comb += [wp.addr.eq(a_p), wp.data.eq(new), wp.en.eq(1)]
            with m.Elif(init_v & (init_b == b)):
                m.d.comb += [wp.addr.eq(init_a), wp.data.eq(b_rd.data), wp.en.eq(1)]
            with m.If(hit & (bank_r == b)):
                m.d.comb += [bp.addr.eq(a_r), bp.data.eq(1), bp.en.eq(1)]
            with m.Elif(init_v & (init_b == b)):
                m.d.comb += [bp.addr.eq(init_a), bp.data.eq(0), bp.en.eq(1)]
            with m.Elif(self.ex_clean_en & (self.ex_clean_bank == b)):
                m.d.comb += [bp.addr.eq(self.ex_clean_addr), bp.data.eq(0), bp.en.eq(1)]
            app_b = append & (bank_r == b)
            cnt = self.count[b]
            m.d.comb += self.appending[b].eq(app_b)
            with m.If(self.dl_clear[b]):
                m.d.sync += cnt.eq(0)
            with m.Elif(app_b):
                m.d.sync += cnt.eq(cnt + 1)
        return m

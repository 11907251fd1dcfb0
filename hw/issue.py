"""Issue stage: turns the event groups at the head of the queue into MAC issue cycles."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan, bits
from .shapes import BLOCK_RAM, group_layout, mac_command_layout

__all__ = ["Issuer"]


class Issuer(wiring.Component):
    """Walks the work slots of the head group, lowest slot first, one weight word per cycle.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`).

    Ports
    -----
    i: In(stream of ``group_layout``) the queue head; popped in the cycle its last work is
    taken.
    en: In(1) the MAC phase runs (the head is not touched otherwise).
    layer: In the layer whose MAC runs, passed on with every command.
    o: Out(stream of ``mac_command_layout``, always ready) one weight word address, its delta,
    the output pixel and the layer, to every lane.
    idle: Out(1) no conv position is being issued (with an empty queue: the MAC is done).

    A slot's key (:class:`pysim.coreplan.CorePlan`) says where its work is.

    * **Dense layer**: the key is the column's ``start | len``. Latency 0 (the command is
      combinational from the head: the first word's address straight from the key, later
      words from a register); one word per cycle with no cycle between slots or groups: a
      group costs the sum of its slots' column lengths.
    * **Conv layer** (only built when the plan has one): the key names the slot's kernel
      positions; a walker takes one position per cycle (column ``colbase + (a * K + b) * S``,
      output pixel ``pixbase - a * OW - b``) and reads its ``start | len`` from the column
      table; the next cycle issues that column's words, one per cycle (an empty column takes
      its one cycle). The walker takes the next position in the last cycle of the current one,
      so positions and slots follow without a gap; a group's first position is issued one
      cycle after the group reaches the head.

    Every queued group holds at least one work slot (``pysim.corecycles`` has the schedule).
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
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        G = plan.group_slots
        sw, lw = plan.start_width, plan.len_width
        head = self.i.payload

        pend = Signal(G)  # slots of the head group not yet taken
        loaded = Signal()  # pend belongs to the current head
        cur = Signal(G)
        m.d.comb += cur.eq(Mux(loaded, pend, Cat(*(head[s].work for s in range(G)))))
        lowest = Signal(G)
        m.d.comb += lowest.eq(cur & (~cur + 1))
        key = Signal(plan.key_width)
        delta = Signal(head[0].delta.shape())
        for s in range(G):  # one-hot select
            with m.If(lowest[s]):
                m.d.comb += [key.eq(head[s].key), delta.eq(head[s].delta)]
        go = Signal()
        last_slot = Signal()
        m.d.comb += [go.eq(self.en & self.i.valid), last_slot.eq((cur & ~lowest) == 0)]
        # a word's address: the first from its column's start, later ones count up
        next_addr = Signal(sw)
        addr = Signal(sw)
        m.d.sync += next_addr.eq(addr + 1)
        m.d.comb += [self.o.payload.layer.eq(self.layer)]

        # ---- dense layers: the head slot's column, word by word -----------------------------
        t = Signal(lw)  # word of the current slot's column
        start, length = key[:sw], key[sw:sw + lw]
        dense_take = Signal()  # the slot's last word issues: take the next slot
        m.d.comb += dense_take.eq(t == length - 1)

        def issue_dense():
            """The command and the slot registers of a dense layer (in the caller's block)."""
            m.d.comb += [
                addr.eq(Mux(t == 0, start, next_addr)),
                self.o.valid.eq(go),
                self.o.payload.addr.eq(addr),
                self.o.payload.delta.eq(delta),
                self.i.ready.eq(go & dense_take & last_slot),
            ]
            with m.If(go):
                with m.If(dense_take):
                    m.d.sync += [t.eq(0), pend.eq(cur & ~lowest), loaded.eq(~last_slot)]
                with m.Else():
                    m.d.sync += [t.eq(t + 1), pend.eq(cur), loaded.eq(1)]

        if not plan.has_conv:
            issue_dense()
            m.d.comb += self.idle.eq(1)
            return m

        # ---- conv layers: per-layer constants ---------------------------------------------
        cw = bits(plan.ctab_depth - 1)
        pw, nb = plan.pix_width, plan.count_width
        geo = plan.geometry
        conv = Signal()
        col_b = Signal(cw)  # column step along kx: S
        col_a = Signal(cw)  # column step along ky: S * K
        pix_a = Signal(pw)  # pixel step along oy: OW
        with m.Switch(self.layer):
            for i, g in enumerate(geo):
                with m.Case(i):
                    m.d.comb += [conv.eq(g.conv), col_b.eq(g.S if g.conv else 0),
                                 col_a.eq(g.S * g.K if g.conv else 0),
                                 pix_a.eq(g.OW if g.conv else 0)]
        colbase = key[:cw]
        pixbase = key[cw:cw + pw]
        ny = key[cw + pw:cw + pw + nb]
        nx = key[cw + pw + nb:cw + pw + 2 * nb]

        # the walker: the position to take next (from the slot's key at a slot's start)
        mid = Signal()  # inside a slot: the registers hold the next position
        a_r, b_r = Signal(nb), Signal(nb)
        col_r, rowcol_r = Signal(cw), Signal(cw)
        pix_r, rowpix_r = Signal(pw), Signal(pw)
        a_c, b_c = Signal(nb), Signal(nb)
        col, rowcol = Signal(cw), Signal(cw)
        pix, rowpix = Signal(pw), Signal(pw)
        m.d.comb += [
            a_c.eq(Mux(mid, a_r, 0)), b_c.eq(Mux(mid, b_r, 0)),
            col.eq(Mux(mid, col_r, colbase)), rowcol.eq(Mux(mid, rowcol_r, colbase)),
            pix.eq(Mux(mid, pix_r, pixbase)), rowpix.eq(Mux(mid, rowpix_r, pixbase)),
        ]
        ctab = m.submodules.columns = memory.Memory(
            shape=unsigned(sw + lw), depth=plan.ctab_depth, init=plan.column_table(),
            attrs=BLOCK_RAM)
        ct_rd = ctab.read_port()
        m.d.comb += ct_rd.addr.eq(col)

        # the item being issued: a position's column, word by word
        iv = Signal()  # an item is in issue
        it = Signal(lw)  # its word
        ilen_r = Signal(lw)
        ipix = Signal(pw)
        idelta = Signal.like(delta)
        ilen = Signal(lw)
        istart = Signal(sw)
        m.d.comb += [ilen.eq(Mux(it == 0, ct_rd.data[sw:], ilen_r)),
                     istart.eq(ct_rd.data[:sw])]
        free = Signal()  # the item ends in this cycle (or there is none)
        m.d.comb += free.eq(~iv | (ilen == 0) | (it == ilen - 1))
        walk = Signal()  # the walker takes a position in this cycle
        m.d.comb += walk.eq(go & conv & free)
        last_b = Signal()
        last_pos = Signal()
        m.d.comb += [last_b.eq(b_c == nx - 1), last_pos.eq(last_b & (a_c == ny - 1))]

        with m.If(conv):
            m.d.comb += [
                addr.eq(Mux(it == 0, istart, next_addr)),
                self.o.valid.eq(iv & (ilen != 0)),
                self.o.payload.addr.eq(addr),
                self.o.payload.delta.eq(idelta),
                self.o.payload.pix.eq(ipix),
                self.i.ready.eq(walk & last_pos & last_slot),
            ]
        with m.Else():
            issue_dense()
        m.d.comb += self.idle.eq(~iv)

        # item registers
        with m.If(it == 0):
            m.d.sync += ilen_r.eq(ct_rd.data[sw:])
        with m.If(walk):
            m.d.sync += [iv.eq(1), it.eq(0), ipix.eq(pix), idelta.eq(delta)]
        with m.Elif(free):
            m.d.sync += [iv.eq(0), it.eq(0)]
        with m.Else():
            m.d.sync += it.eq(it + 1)

        # walker and slot registers
        with m.If(walk):
            with m.If(last_pos):
                m.d.sync += [mid.eq(0), pend.eq(cur & ~lowest), loaded.eq(~last_slot)]
            with m.Else():
                m.d.sync += [mid.eq(1), pend.eq(cur), loaded.eq(1)]
                with m.If(last_b):
                    m.d.sync += [a_r.eq(a_c + 1), b_r.eq(0), col_r.eq(rowcol + col_a),
                                 rowcol_r.eq(rowcol + col_a), pix_r.eq(rowpix - pix_a),
                                 rowpix_r.eq(rowpix - pix_a)]
                with m.Else():
                    m.d.sync += [a_r.eq(a_c), b_r.eq(b_c + 1), col_r.eq(col + col_b),
                                 rowcol_r.eq(rowcol), pix_r.eq(pix - 1), rowpix_r.eq(rowpix)]
        return m

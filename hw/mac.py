"""Sparse MAC: L lanes stream the non-zero weights of an event's column and multiply by delta."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import check_int
from .accumulator import write_signature
from .encoder import event_layout
from .weights import WeightPlan

__all__ = ["SparseMAC"]

COUNTER_WIDTH = 32


class SparseMAC(wiring.Component):
    """``L`` multiply lanes over column-compressed weight memories (see :mod:`hw.weights`).

    For each accepted event ``(index, delta)`` of layer ``layer`` the lanes read the
    ``maxlen`` words of column ``index`` from their own memory (one shared address counter,
    one word per lane per cycle) and send ``delta * weight`` to the accumulator row named by the
    word. Invalid (padding) words send nothing.

    Parameters (keyword-only)
    -------------------------
    weights: raw weight codes per layer (``Model.w_raw``), each ``(n_out, n_in)``.
    weight_width: stored weight width (2..32), every layer's codes must fit it.
    lanes: 1..64. index_width, delta_width: the event payload widths.

    Ports
    -----
    i: In(stream of event_layout) events of the current layer; an event whose column holds no
    weight is consumed without issuing (the encoder masks those, so this never costs a cycle).
    layer: In which layer the events belong to (stable while its events flow).
    wr: Out(write_signature) lane writes to :class:`DeltaAccumulator`.
    idle: Out(1) nothing left to issue: no event waiting and the column counter at zero.
    clear: In(1) zero the counters. macs: Out(ArrayLayout(unsigned(32), n_layers)) significant
    multiplications per layer (sum of the accepted columns' non-zero counts).

    Pipeline and throughput: cycle 0 issue (the event is accepted in the cycle its first word is
    issued, so columns follow back to back; initiation interval 1 word), cycle 1 memory read
    data -> product register, cycle 2 accumulator read-modify-write at its edge. A column of
    ``maxlen`` words occupies the issue stage ``maxlen`` cycles; ``idle`` rises in the cycle
    after the last issue, at which point two words are still in flight (visible on the
    accumulator outputs two cycles later, ``drain_cycles``).
    """

    #: cycles after ``idle`` rises until the accumulator outputs hold the last update
    drain_cycles = 2

    def __init__(self, *, weights, weight_width, lanes, index_width, delta_width):
        owner = "SparseMAC"
        self._lanes = check_int(owner, "lanes", lanes, 1, 64)
        self._ww = check_int(owner, "weight_width", weight_width, 2, 32)
        self._iw = check_int(owner, "index_width", index_width, 1, 32)
        self._dw = check_int(owner, "delta_width", delta_width, 2, 64)
        if len(weights) < 1:
            raise ValueError(f"{owner}: weights needs at least one layer")
        self._plan = WeightPlan(tuple(weights), self._lanes, self._ww)
        for i, w in enumerate(self._plan.weights):
            if w.shape[1] > 1 << self._iw:
                raise ValueError(f"{owner}: index_width={self._iw} cannot index layer {i}'s "
                                 f"{w.shape[1]} inputs")
        n = self._plan.n_layers
        self._lw = max(1, ceil_log2(n))
        super().__init__({
            "i": In(stream.Signature(event_layout(self._iw, self._dw))),
            "layer": In(unsigned(self._lw)),
            "wr": Out(write_signature(n_layers=n, lanes=self._lanes,
                                      row_width=self._plan.row_width,
                                      data_width=self.product_width)),
            "idle": Out(1),
            "clear": In(1),
            "macs": Out(data.ArrayLayout(unsigned(COUNTER_WIDTH), n)),
        })

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def plan(self) -> WeightPlan:
        return self._plan

    @property
    def product_width(self) -> int:
        return self._dw + self._ww

    @property
    def latency(self) -> int:
        """Cycles from issuing a word to its write being visible on the accumulator."""
        return 3

    def elaborate(self, platform):
        m = Module()
        plan, L, ww, rw = self._plan, self._lanes, self._ww, self._plan.row_width

        # Column table: start address, issue length (maxlen) and non-zero count per column.
        aw, lw, nw = plan.table_fields
        entry = data.StructLayout({"start": unsigned(aw), "len": unsigned(lw),
                                   "nnz": unsigned(nw)})
        init = []
        for st, ln, nz in zip(plan.col_start, plan.col_len, plan.col_nnz):
            for s, n_, z in zip(st.tolist(), ln.tolist(), nz.tolist()):
                init.append(s | (n_ << aw) | (z << (aw + lw)))
        m.submodules.col_table = ctab = memory.Memory(
            shape=unsigned(entry.size), depth=len(init), init=init)
        crd = ctab.read_port(domain="comb")
        base = Signal(range(plan.n_columns + 1))
        with m.Switch(self.layer):
            for i, b in enumerate(plan.col_base):
                with m.Case(i):
                    m.d.comb += base.eq(b)
        m.d.comb += crd.addr.eq(base + self.i.payload.index)
        col = data.View(entry, crd.data)

        # Issue stage: shared address counter.
        rem = Signal(range(plan.max_len + 1))
        addr = Signal(range(plan.depth + 1))
        cur_delta = Signal(signed(self._dw))
        cur_layer = Signal(unsigned(self._lw))
        busy = rem != 0
        issue = Signal()
        iss_addr = Signal(range(plan.depth + 1))
        iss_delta = Signal(signed(self._dw))
        iss_layer = Signal(unsigned(self._lw))
        m.d.comb += [
            self.i.ready.eq(~busy),
            self.idle.eq(~busy & ~self.i.valid),
            issue.eq(busy | (self.i.valid & (col.len != 0))),
            iss_addr.eq(Mux(busy, addr, col.start)),
            iss_delta.eq(Mux(busy, cur_delta, self.i.payload.delta)),
            iss_layer.eq(Mux(busy, cur_layer, self.layer)),
        ]
        with m.If(busy):
            m.d.sync += [rem.eq(rem - 1), addr.eq(addr + 1)]
        with m.Elif(self.i.valid):
            m.d.sync += [
                rem.eq(Mux(col.len != 0, col.len - 1, 0)),
                addr.eq(col.start + 1),
                cur_delta.eq(self.i.payload.delta),
                cur_layer.eq(self.layer),
            ]
            with m.Switch(self.layer):
                for i in range(plan.n_layers):
                    with m.Case(i):
                        m.d.sync += self.macs[i].eq(self.macs[i] + col.nnz)
        with m.If(self.clear):
            m.d.sync += [self.macs[i].eq(0) for i in range(plan.n_layers)]

        # Stage 1: memory data; stage 2: product register.
        v1 = Signal()
        d1 = Signal(signed(self._dw))
        l1 = Signal(unsigned(self._lw))
        l2 = Signal(unsigned(self._lw))
        m.d.sync += [v1.eq(issue), d1.eq(iss_delta), l1.eq(iss_layer), l2.eq(l1)]
        m.d.comb += self.wr.layer.eq(l2)
        for k in range(L):
            mem = memory.Memory(shape=unsigned(plan.word_width), depth=plan.depth,
                                init=plan.lane_words(k))
            m.submodules[f"wmem{k}"] = mem
            rd = mem.read_port()
            m.d.comb += rd.addr.eq(iss_addr)
            word = rd.data
            weight = word[:ww].as_signed()
            row = word[ww:ww + rw]
            valid = word[ww + rw]
            m.d.sync += [
                self.wr.en[k].eq(v1 & valid),
                self.wr.row[k].eq(row),
                self.wr.data[k].eq(d1 * weight),
            ]
        return m

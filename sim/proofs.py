"""Formal properties of the event-driven core's components, each with a broken variant that fails.

Each harness instantiates the real component(s) of ``hw/`` on a tiny plan
(:func:`tiny_plan`: ``pysim.mlp_config([3, 5, 2])``, random sparse weights, 2 lanes), drives
every input with free values restricted to the component's usage contract (``Assume``, the
contract of its docstring and of :class:`hw.core.DeltaCore`'s schedule) and states the property
(``Assert``) against a reference kept in the harness. :data:`PROPERTIES` lists them with the
method (k-induction with its k, or BMC with its depth); :func:`run` runs one through
:func:`sim.formal.check`.

=====================  ===================  ===========================================
property               component            statement
=====================  ===================  ===========================================
``lane_accumulate``    MacLane              no accumulator update is lost: the
                                            accumulator equals its bias (or 0) plus the
                                            sum of the products of the commands that
                                            addressed it, back-to-back ones included;
                                            the examination read returns it
``lane_dirty_list``    MacLane              every address the MAC writes is in its
                                            bank's dirty list exactly once, at the place
                                            of its first write; the list holds nothing
                                            else and never overflows; the dirty bits
                                            are exactly the written, not yet cleaned
                                            addresses
``queue_fifo``         EventQueue           never overflows or underflows (the ring
                                            buffer is never written full or read empty,
                                            ``o.valid`` and ``empty`` follow the groups
                                            held); groups leave in FIFO order with their
                                            payload unchanged; its synchronous read
                                            port shows the head row
``exam_covers_dirty``  MacLane + Examiner   after an examination every accumulator the
                                            MAC updated in the step was read, once,
                                            after its last update, and is clean
``control_counters``   Controller           at ``done``: ``cycles`` = clock edges from
                                            the start edge, ``events[l]``/``macs[l]`` =
                                            the sum of their increments over the step
``control_rounds``     Controller           the examination rounds follow the protocol
                                            ``exam_covers_dirty`` assumes
=====================  ===================  ===========================================

White box: to make the properties inductive the harness reads component internals
(:func:`sim.formal.elaborate_now`): verification-only asynchronous read ports on the lane's
memories, the FIFO's pointers and storage, the controller's running counters. The bugs are
injected the same way (a read port loses its transparency, an overriding statement, a missing
connection); the components in ``hw/`` are not changed.

The symbolic neuron: a property about "an accumulator" tracks one address ``(bank, addr)``
chosen by the solver (``AnyConst``), so a proof covers every address at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cat, Cover, Module, Mux, Shape, Signal, signed

from ..hw.control import Controller
from ..hw.examiner import Examiner
from ..hw.lane import MacLane
from ..hw.queue import EventQueue
from ..hw.shapes import group_layout
from ..pysim import LayerParams, Model, mlp_config
from ..pysim.corecycles import MAC_LATENCY, max_cycles
from ..pysim.coreplan import CorePlan
from .formal import FormalResult, check, elaborate_now, probe

__all__ = ["PROPERTIES", "Property", "property_named", "run", "tiny_model", "tiny_plan"]


# ---- the plan -------------------------------------------------------------------------------
def tiny_model(seed: int = 0, sizes=(3, 5, 2)) -> Model:
    """A small MLP with random sparse weights (about 60% kept) and narrow formats."""
    rng = np.random.default_rng(seed)
    cfg = mlp_config(list(sizes), input_fmt="SQ4.4", weight_fmt="SQ2.2", act_fmt="SQ4.4")
    params = []
    for ly in cfg.layers:
        w = rng.normal(size=(ly.n_out, ly.n_in)).astype(np.float32)
        b = (rng.normal(size=ly.n_out) * 0.3).astype(np.float32)
        params.append(LayerParams(w, b, rng.random(w.shape) >= 0.4))
    return Model(cfg, tuple(params))


def tiny_plan(seed: int = 0, lanes: int = 2, obs_words: int = 2) -> CorePlan:
    """The plan every proof uses by default (2 lanes: banks of 3 and 1 words)."""
    return CorePlan.build(tiny_model(seed), lanes, obs_words)


# ---- harness helpers ------------------------------------------------------------------------
def _free(m: Module, shape, name: str) -> Signal:
    """A signal with a new free value in every cycle."""
    s = Signal(shape, name=name)
    m.d.comb += s.eq(AnySeq(Shape.cast(s.shape())))
    return s


def _const(m: Module, shape, name: str) -> Signal:
    """A free value chosen once for the whole trace."""
    s = Signal(shape, name=name)
    m.d.comb += s.eq(AnyConst(Shape.cast(s.shape())))
    return s


def _view(m: Module, memory, addr) -> Signal:
    """A verification-only asynchronous read port of ``memory`` at ``addr``: its row now."""
    port = memory.read_port(domain="comb")
    m.d.comb += port.addr.eq(addr)
    return port.data


def _popcount(value) -> object:
    return sum(value[k] for k in range(len(value)))


def _drop_transparency(memory) -> None:
    """Bug injection: the memory's read ports no longer see a write of the same cycle."""
    for port in memory.read_ports:
        port._transparent_for = ()


def _per_layer(layer, values):
    """The constant of ``values`` selected by ``layer`` (a chain of multiplexers)."""
    out = values[-1]
    for i in range(len(values) - 2, -1, -1):
        out = Mux(layer == i, values[i], out)
    return out


def _below(value, limits, sel):
    """``value < limits[sel]`` for the two banks' constant limits."""
    return Mux(sel, value < limits[1], value < limits[0])


class _MacRef:
    """The harness's own MAC pipeline for the lane (``pysim.corecycles.MAC_LATENCY`` = 3 from
    issue to write): the weight word as read from the lane's ROM (a second read port at the
    command's address), decoded as :class:`pysim.coreplan.CorePlan` packs it, and the product
    ``w * delta``. Stage 2 is the cycle the lane reads the accumulator and sets the dirty bit
    (``APPEND_LATENCY``), stage 3 the cycle it writes the accumulator (both at the edge that
    ends the cycle). Also the bias write (``init_en``: written at the next edge)."""

    def __init__(self, m: Module, lane: MacLane, lm: Module, plan: CorePlan):
        assert MAC_LATENCY == 3, "the reference pipeline below has three stages"
        ww, aw, W = plan.weight_width, plan.acc_addr_width, plan.acc_width
        cmd = lane.cmd.payload
        rom = lm.submodules.weights.read_port()
        m.d.comb += rom.addr.eq(cmd.addr)
        v1 = Signal(name="ref_v1")
        d1 = Signal.like(cmd.delta, name="ref_delta1")
        l1 = Signal.like(cmd.layer, name="ref_layer1")
        m.d.sync += [v1.eq(lane.cmd.valid), d1.eq(cmd.delta), l1.eq(cmd.layer)]
        word = rom.data
        self.hit2, self.addr2 = Signal(name="ref_hit2"), Signal(aw, name="ref_addr2")
        self.layer2 = Signal.like(cmd.layer, name="ref_layer2")
        self.prod2 = Signal(signed(ww + len(cmd.delta)), name="ref_prod2")
        m.d.sync += [self.hit2.eq(v1 & word[ww + aw]), self.addr2.eq(word[ww:ww + aw]),
                     self.layer2.eq(l1), self.prod2.eq(word[:ww].as_signed() * d1)]
        self.bank2 = self.layer2[0]
        self.wr3, self.addr3 = Signal(name="ref_wr3"), Signal(aw, name="ref_addr3")
        self.bank3 = Signal(name="ref_bank3")
        self.prod3 = Signal.like(self.prod2, name="ref_prod3")
        m.d.sync += [self.wr3.eq(self.hit2), self.addr3.eq(self.addr2),
                     self.bank3.eq(self.bank2), self.prod3.eq(self.prod2)]
        bias = lm.submodules.bias.read_port()
        m.d.comb += bias.addr.eq(lane.init_index)
        self.init1, self.init_bank1 = Signal(name="ref_init1"), Signal(name="ref_init_bank1")
        self.init_addr1 = Signal(aw, name="ref_init_addr1")
        m.d.sync += [self.init1.eq(lane.init_en), self.init_bank1.eq(lane.init_bank),
                     self.init_addr1.eq(lane.init_addr)]
        self.bias1 = Signal(W, name="ref_bias1")
        m.d.comb += self.bias1.eq(bias.data)

    def mac_reads(self, bank):
        return self.hit2 & (self.bank2 == bank)

    def mac_writes(self, bank):
        return self.wr3 & (self.bank3 == bank)

    def dirty_writes(self, bank):
        """The MAC sets a dirty bit of ``bank`` (at ``addr2``) in this cycle."""
        return self.mac_reads(bank)

    def init_writes(self, bank):
        return self.init1 & (self.init_bank1 == bank)


def _layer_words(plan: CorePlan, cmd):
    """The command's weight word belongs to its layer's columns (the issue stage's contract)."""
    ok = 0
    for i in range(plan.n_layers):
        lo = int(plan.col_start[i][0]) if len(plan.col_start[i]) else 0
        hi = lo + int(plan.col_len[i].sum())
        ok = ok | ((cmd.layer == i) & (cmd.addr >= lo) & (cmd.addr < hi))
    return ok


def _lane_environment(m: Module, lane: MacLane, plan: CorePlan, ref: _MacRef) -> None:
    """Free inputs for a lane under its contract: commands to weight words of their layer's
    columns; bias writes of init steps and addresses that exist; the MAC, the bias write and
    the examination (read or clean) never use one bank in one cycle, except that an
    examination read may fall in the cycle of the MAC's accumulator write
    (:class:`hw.lane.MacLane`)."""
    N, depth = plan.n_layers, plan.bank_depth
    cmd = lane.cmd.payload
    m.d.comb += [
        lane.cmd.valid.eq(AnySeq(1)), cmd.addr.eq(AnySeq(len(cmd.addr))),
        cmd.delta.eq(AnySeq(len(cmd.delta))), cmd.pix.eq(0),
        cmd.layer.eq(AnySeq(len(cmd.layer))),
        lane.init_en.eq(AnySeq(1)), lane.init_index.eq(AnySeq(len(lane.init_index))),
        lane.init_bank.eq(AnySeq(1)), lane.init_addr.eq(AnySeq(len(lane.init_addr))),
        lane.dl_clear.eq(AnySeq(2)),
        lane.dl_bank.eq(AnySeq(1)), lane.dl_index.eq(AnySeq(len(lane.dl_index))),
        Assume(~lane.cmd.valid | _layer_words(plan, cmd)), Assume(cmd.layer < N),
        Assume(lane.init_index < plan.init_steps),
        Assume(_below(lane.init_addr, depth, lane.init_bank)),
        Assume(~(ref.init1 & (ref.mac_reads(ref.init_bank1) | ref.mac_writes(ref.init_bank1)))),
        lane.ex_rd_en.eq(AnySeq(1)), lane.ex_rd_bank.eq(AnySeq(1)),
        lane.ex_rd_addr.eq(AnySeq(len(lane.ex_rd_addr))),
        lane.ex_clean_en.eq(AnySeq(1)), lane.ex_clean_bank.eq(AnySeq(1)),
        lane.ex_clean_addr.eq(AnySeq(len(lane.ex_clean_addr))),
        Assume(_below(lane.ex_rd_addr, depth, lane.ex_rd_bank)),
        Assume(_below(lane.ex_clean_addr, depth, lane.ex_clean_bank)),
        Assume(~(lane.ex_rd_en & (ref.mac_reads(lane.ex_rd_bank)
                                  | ref.init_writes(lane.ex_rd_bank)))),
        Assume(~(lane.ex_clean_en & (ref.dirty_writes(lane.ex_clean_bank)
                                     | ref.init_writes(lane.ex_clean_bank)))),
    ]


def _lane(m: Module, plan: CorePlan, opaque: str | None = None) -> tuple:
    """Lane 0 as a submodule of ``m``, elaborated (for the views); ``opaque``: the memories
    (``"acc"`` or ``"dirty_bits"``, both banks) whose read ports lose their transparency."""
    lane = MacLane(plan=plan, lane=0)
    lm = elaborate_now(lane)
    if opaque is not None:
        for b in range(2):
            _drop_transparency(lm.submodules[f"{opaque}{b}"])
    m.submodules.lane = lane
    return lane, lm


# ---- (a) MacLane: no update is lost ---------------------------------------------------------
def lane_accumulate(plan: CorePlan, bug: str | None = None) -> Module:
    """**k-induction.** For a symbolic accumulator ``(bank, addr)``: its value always equals
    the harness's shadow, which starts at 0, is set to the bias by a bias write and adds
    ``w * delta`` (wrapping at ``acc_width`` bits) for every command whose weight word
    addresses it, ``MAC_LATENCY`` cycles after the issue, whatever the spacing of the commands
    (back-to-back read-modify-writes of one address included). Also: an examination read of
    it returns the current value in the next cycle, and ``mac_valid``/``mac_layer`` report
    the significant multiplications. Bug ``acc_opaque``: the accumulator banks' read ports
    lose their transparency (the update of the cycle before is not seen): fails."""
    m = Module()
    lane, lm = _lane(m, plan, "acc" if bug == "acc_opaque" else None)
    ref = _MacRef(m, lane, lm, plan)
    _lane_environment(m, lane, plan, ref)
    bank, addr = _const(m, 1, "t_bank"), _const(m, plan.acc_addr_width, "t_addr")
    m.d.comb += Assume(_below(addr, plan.bank_depth, bank))
    acc = Signal(plan.acc_width)
    m.d.comb += acc.eq(Mux(bank, _view(m, lm.submodules.acc1, addr),
                           _view(m, lm.submodules.acc0, addr)))
    shadow = Signal(plan.acc_width)
    with m.If(ref.mac_writes(bank) & (ref.addr3 == addr)):
        m.d.sync += shadow.eq(shadow + ref.prod3)
    with m.Elif(ref.init_writes(bank) & (ref.init_addr1 == addr)):
        m.d.sync += shadow.eq(ref.bias1)
    read = Signal()
    m.d.sync += read.eq(lane.ex_rd_en & (lane.ex_rd_bank == bank) & (lane.ex_rd_addr == addr))
    m.d.comb += [
        Assert(acc == shadow),
        Assert(~read | (lane.ex_rd_data == acc)),
        Assert(lane.mac_valid == ref.hit2),
        Assert(lane.mac_layer == ref.layer2),
    ]
    return m


# ---- (a) MacLane: the dirty list ------------------------------------------------------------
def lane_dirty_list(plan: CorePlan, bug: str | None = None) -> Module:
    """**k-induction.** The harness keeps, per bank and address, ``dirty`` (written by the MAC
    since its last clean or bias write) and ``listed`` (written since the bank's list was
    cleared). Asserted: every dirty bit equals ``dirty``; ``count[b]`` = the number of listed
    addresses (so the list never overflows); ``appending[b]`` exactly at a first write; for a
    symbolic address: if listed it is entry ``pos`` (the count when it was first written) and
    no other entry below ``count`` holds it; if not listed no entry below ``count`` holds it.
    Contract (the core's schedule): a list is cleared only when its bank has no dirty bit and
    never in a cycle the MAC writes that bank; a cleaned address is not written again before
    its list is cleared. Bug ``bits_opaque``: the dirty bits' read ports lose their
    transparency (back-to-back first writes append twice): fails."""
    m = Module()
    lane, lm = _lane(m, plan, "dirty_bits" if bug == "bits_opaque" else None)
    ref = _MacRef(m, lane, lm, plan)
    _lane_environment(m, lane, plan, ref)
    depth = plan.bank_depth
    dirty = [Signal(depth[b], name=f"dirty{b}") for b in range(2)]
    listed = [Signal(depth[b], name=f"listed{b}") for b in range(2)]
    for b in range(2):
        mw = ref.dirty_writes(b)
        for a in range(depth[b]):
            bit = _view(m, lm.submodules[f"dirty_bits{b}"], a)
            here = ref.addr2 == a
            clean = lane.ex_clean_en & (lane.ex_clean_bank == b) & (lane.ex_clean_addr == a)
            with m.If(mw & here):
                m.d.sync += [dirty[b][a].eq(1), listed[b][a].eq(1)]
            with m.Elif((ref.init_writes(b) & (ref.init_addr1 == a)) | clean):
                m.d.sync += dirty[b][a].eq(0)
            m.d.comb += [
                Assert(bit == dirty[b][a]),
                Assert(~dirty[b][a] | listed[b][a]),
                Assume(~(mw & here & listed[b][a] & ~dirty[b][a])),
            ]
        first = Signal(name=f"first_write{b}")
        m.d.comb += first.eq(mw & ~(dirty[b] >> ref.addr2)[0])
        with m.If(lane.dl_clear[b]):
            m.d.sync += listed[b].eq(0)
        m.d.comb += [
            Assume(~lane.dl_clear[b] | ((dirty[b] == 0) & ~mw)),
            Assert(lane.count[b] == _popcount(listed[b])),
            Assert(lane.appending[b] == first),
        ]
    # the symbolic address: where it is in its bank's list
    bank, addr = _const(m, 1, "t_bank"), _const(m, plan.acc_addr_width, "t_addr")
    index = _const(m, plan.acc_addr_width, "t_index")
    m.d.comb += Assume(_below(addr, depth, bank))
    t_listed = Signal()
    m.d.comb += t_listed.eq(Mux(bank, listed[1] >> addr, listed[0] >> addr)[0])
    count = Mux(bank, lane.count[1], lane.count[0])
    pos = Signal(plan.acc_addr_width)  # the harness's count when it was first written
    with m.If(ref.dirty_writes(bank) & (ref.addr2 == addr) & ~t_listed):
        m.d.sync += pos.eq(Mux(bank, _popcount(listed[1]), _popcount(listed[0])))
    dl = lm.submodules.dirty
    at_pos = _view(m, dl, Cat(bank, pos))
    at_index = _view(m, dl, Cat(bank, index))
    m.d.comb += [
        Assert(~t_listed | ((pos < count) & (at_pos == addr))),
        Assert(~((index < count) & ~(t_listed & (index == pos))) | (at_index != addr)),
    ]
    return m


# ---- (b) EventQueue -------------------------------------------------------------------------
def queue_fifo(plan: CorePlan, bug: str | None = None) -> Module:
    """**k-induction.** The core's queue (``group_layout``, ``plan.queue_depth``, validity from
    the work bits). The harness counts the groups held (a push is a payload with work, a pop
    ``o.valid & o.ready``) and assumes the core's contract: never more than ``queue_depth``.
    Asserted: the ring buffer is never written when full nor popped when empty; ``o.valid``
    and ``empty`` say whether a group is held; the synchronous read port's data is the head
    row whenever a row is stored; a tracked group (pushed in a cycle the solver chooses)
    leaves after exactly the groups pushed before it, with its payload unchanged.
    Bugs: ``small_queue`` (a queue one group shorter than the contract needs: overflows),
    ``newest_first`` (the output shows a just-pushed group before the ring buffer's head) and
    ``opaque_read`` (the read port does not see a write of the same cycle): fail."""
    m = Module()
    layout = group_layout(plan)
    G = plan.group_slots
    need = plan.queue_depth

    def valid_from(g):
        return Cat(*(g[s].work for s in range(G))).any()

    queue = EventQueue(layout=layout, depth=need - 1 if bug == "small_queue" else need,
                       valid_from=valid_from)
    qm = elaborate_now(queue)
    storage = qm.submodules.storage
    w_port, r_port = storage.write_ports[0], storage.read_ports[0]
    held, held_v = probe(qm, "held"), probe(qm, "held_v")
    level, consume, produce = probe(qm, "level"), probe(qm, "consume"), probe(qm, "produce")
    if bug == "newest_first":
        qm.d.comb += queue.o.payload.eq(Mux(held_v, held, r_port.data))
    if bug == "opaque_read":
        _drop_transparency(storage)
    m.submodules.queue = queue
    depth = queue.depth
    m.d.comb += [queue.i.payload.eq(AnySeq(layout.size)), queue.i.valid.eq(AnySeq(1)),
                 queue.o.ready.eq(AnySeq(1))]
    push, pop = Signal(), Signal()
    m.d.comb += [push.eq(valid_from(queue.i.payload)), pop.eq(queue.o.valid & queue.o.ready)]
    held_n = Signal(range(need + 2))  # groups in the queue
    m.d.sync += held_n.eq(held_n + push - pop)
    m.d.comb += Assume(held_n + push - pop <= need)  # the core's contract
    head = _view(m, storage, consume)
    m.d.comb += [
        Assert(~(w_port.en & (level == depth))),  # no overflow
        Assert(level <= depth),  # no underflow (a pop needs a stored row; the level never wraps)
        Assert((consume < depth) & (produce < depth)),
        Assert(produce == Mux(consume + level >= depth, consume + level - depth, consume + level)),
        Assert(queue.o.valid == (held_n != 0)),
        Assert(queue.empty == (held_n == 0)),
        Assert(held_n == level + held_v),
        Assert((level == 0) | (r_port.data == head)),
    ]
    # the tracked group
    tag = _free(m, 1, "tag")
    tracked, in_reg = Signal(), Signal()  # in the input register: pushed in the last cycle
    ahead = Signal(range(need + 1))  # groups to leave before it
    payload = Signal(layout.size)
    with m.If(tag & push & ~tracked):
        m.d.sync += [tracked.eq(1), in_reg.eq(1), ahead.eq(held_n - pop),
                     payload.eq(queue.i.payload)]
    with m.Else():
        m.d.sync += in_reg.eq(0)
        with m.If(tracked & pop):
            with m.If(ahead == 0):
                m.d.sync += tracked.eq(0)
            with m.Else():
                m.d.sync += ahead.eq(ahead - 1)
    slot = Signal.like(consume)
    m.d.comb += slot.eq(Mux(consume + ahead >= depth, consume + ahead - depth, consume + ahead))
    stored = _view(m, storage, slot)
    m.d.comb += [
        Assert(~(tracked & pop & (ahead == 0)) | (queue.o.payload.as_value() == payload)),
        Assert(~tracked | (ahead < held_n)),
        Assert(~(tracked & in_reg) | ((held == payload) & (ahead == level))),
        Assert(~(tracked & ~in_reg) | ((stored == payload) & (ahead < level))),
    ]
    return m


# ---- (c) MacLane + Examiner: every changed neuron is re-examined -----------------------------
def exam_covers_dirty(plan: CorePlan, bug: str | None = None, *, cover: bool = False) -> Module:
    """**BMC** (one step from reset). Lane 0 and its examiner, wired as in
    :class:`hw.core.DeltaCore`; the harness plays the controller's part as
    :func:`control_rounds` proves it: the MAC of the examined layer (free commands) until a
    free cycle ``f`` with no issue, round 0 in cycle ``f + 1`` (that of the last dirty-list
    append; its accumulator read falls in the cycle of the last write), round ``r + 1`` while
    a round had ``more`` in this lane or (free) in another, the end when no round is pending
    and the examiner is not busy; meanwhile free commands of the next layer (the other bank).
    Dirty-list or full (every row) mode, chosen by the solver.
    For a symbolic neuron of the examined layer: it is read (``ex_rd``) at most once; in
    dirty-list mode only while its dirty bit is set; at the end, if the MAC updated its
    accumulator in the step, it was read after its last update (the value a read returns is
    :func:`lane_accumulate`'s) and its dirty bit is clear. Bug ``no_append_forward``: the
    examiner does not see the dirty-list append of its round-0 cycle (``appending`` not
    connected): fails. ``cover=True``: the harness instead covers the end of a dirty-list
    examination of a whole layer of updated neurons (the bound reaches a full dirty list)."""
    m = Module()
    N, aw = plan.n_layers, plan.acc_addr_width
    lane, lm = _lane(m, plan)
    ex = m.submodules.exam = Examiner(plan=plan, lane=0)
    ref = _MacRef(m, lane, lm, plan)
    m.d.comb += [
        lane.ex_rd_en.eq(ex.ex_rd_en), lane.ex_rd_bank.eq(ex.ex_rd_bank),
        lane.ex_rd_addr.eq(ex.ex_rd_addr), ex.ex_rd_data.eq(lane.ex_rd_data),
        lane.ex_clean_en.eq(ex.ex_clean_en), lane.ex_clean_bank.eq(ex.ex_clean_bank),
        lane.ex_clean_addr.eq(ex.ex_clean_addr),
        ex.count[0].eq(lane.count[0]), ex.count[1].eq(lane.count[1]),
        ex.appending.eq(0 if bug == "no_append_forward" else lane.appending),
        lane.dl_bank.eq(ex.dl_bank), lane.dl_index.eq(ex.dl_index), ex.dl_data.eq(lane.dl_data),
        lane.init_en.eq(0), lane.init_index.eq(0), lane.init_bank.eq(0), lane.init_addr.eq(0),
        lane.dl_clear.eq(0),
    ]
    layer = _const(m, len(ex.layer), "layer")
    full, first = _const(m, 1, "full"), _const(m, 1, "first")
    m.d.comb += [Assume(layer < N), Assume(~first | full), ex.layer.eq(layer),
                 ex.full.eq(full), ex.first.eq(first),
                 ex.threshold.eq(_const(m, len(ex.threshold), "threshold"))]
    # the controller's part
    mac_on = Signal(init=1)
    stop = _free(m, 1, "stop")
    active, more = Signal(), Signal()
    index, index1 = Signal(aw), Signal(aw + 1, init=1)
    go, fin = Signal(), Signal()
    m.d.comb += [go.eq(active & more), fin.eq(active & ~more & ~ex.busy),
                 ex.go.eq(go), ex.index.eq(index), ex.index1.eq(index1)]
    with m.If(mac_on & stop):
        m.d.sync += [mac_on.eq(0), active.eq(1), more.eq(1), index.eq(0), index1.eq(1)]
    # the other lanes may still have neurons in later rounds (never past the layer's rows)
    others = _free(m, 1, "others_more")
    m.d.comb += Assume(~others | (index1 < _per_layer(layer, plan.rows)))
    with m.If(go):
        m.d.sync += [index.eq(index + 1), index1.eq(index1 + 1), more.eq(ex.more | others)]
    with m.If(fin):
        m.d.sync += active.eq(0)
    cmd = lane.cmd.payload
    nxt = layer + 1
    m.d.comb += [
        lane.cmd.valid.eq(AnySeq(1) & ((mac_on & ~stop) | (~mac_on & (nxt < N)))),
        cmd.layer.eq(Mux(mac_on, layer, nxt)), cmd.addr.eq(AnySeq(len(cmd.addr))),
        cmd.delta.eq(AnySeq(len(cmd.delta))), cmd.pix.eq(0),
        Assume(~lane.cmd.valid | _layer_words(plan, cmd)),
    ]
    # the symbolic neuron of the examined layer
    bank = layer[0]
    addr = _const(m, aw, "t_addr")
    base = _per_layer(layer, plan.acc_base)
    rows = _per_layer(layer, [plan.real_rows(i, 0) for i in range(N)])
    m.d.comb += Assume((addr >= base) & (addr < base + rows))
    bit = Signal()
    m.d.comb += bit.eq(Mux(bank, _view(m, lm.submodules.dirty_bits1, addr),
                           _view(m, lm.submodules.dirty_bits0, addr)))
    # an update: the MAC writes the accumulator (at the edge ending the cycle); a read in X1
    # sees the write of its own cycle (the read port is transparent: lane_accumulate)
    write = ref.mac_writes(bank) & (ref.addr3 == addr)
    read = ex.ex_rd_en & (ex.ex_rd_bank == bank) & (ex.ex_rd_addr == addr)
    updated, seen, fresh = Signal(), Signal(), Signal()
    with m.If(write):
        m.d.sync += updated.eq(1)
    with m.If(read):
        m.d.sync += [seen.eq(1), fresh.eq(1)]
    with m.Elif(write):
        m.d.sync += fresh.eq(0)
    if cover:
        count = Mux(bank, lane.count[1], lane.count[0])
        m.d.comb += Cover(fin & ~full & updated & (count == rows))
        return m
    m.d.comb += [
        Assert(~read | ~seen),  # examined at most once
        Assert(~(read & ~full) | bit),  # in dirty-list mode only dirty neurons are read
        Assert(~fin | ~updated | fresh),  # read after its last update
        Assert(~fin | ~bit),  # and left clean
    ]
    return m


# ---- (d) Controller: the counters -----------------------------------------------------------
def control_counters(plan: CorePlan, bug: str | None = None) -> Module:
    """**k-induction.** Every input of the controller free. The harness counts, per layer, the
    increments the controller is given (layer 0's events: ``intake_events``; layer ``l``'s:
    the examiners' ``fires`` while layer ``l - 1`` is examined; ``macs[l]``: ``mac_valid``
    while ``mac_layer_r = l``) and the clock edges since the start edge (``ready & start``).
    Asserted at ``done``: ``cycles`` = the edges from the start edge; ``events[l]``,
    ``macs[l]`` = the increments of the step (those presented up to two cycles before
    ``done``: a count lags its increment by one cycle; ``done`` follows the latch by one).
    Invariant (for the induction): the running counters equal the harness's sums. Contract:
    per step a layer has at most ``n_in`` events and ``column_nnz.sum()`` multiplications,
    ``intake_events <= obs_words``, and a step lasts at most ``max_cycles(plan)`` cycles.
    Bugs ``latch_drops_last`` (the latch leaves out the increment of its own cycle) and
    ``cycles_minus_one`` (``cycles`` latched one short): fail."""
    m = Module()
    N, L, P = plan.n_layers, plan.lanes, plan.obs_words
    ctrl = Controller(plan=plan)
    cm = elaborate_now(ctrl)
    latch, cyc = probe(cm, "latch"), probe(cm, "cyc")
    ev_live = [probe(cm, f"ev_live{i}") for i in range(N)]
    mac_live = [probe(cm, f"mac_live{i}") for i in range(N)]
    if bug == "latch_drops_last":
        with cm.If(latch):
            cm.d.sync += [ctrl.events[i].eq(ev_live[i]) for i in range(N)]
            cm.d.sync += [ctrl.macs[i].eq(mac_live[i]) for i in range(N)]
    if bug == "cycles_minus_one":
        with cm.If(latch):
            cm.d.sync += ctrl.cycles.eq(cyc)
    m.submodules.control = ctrl
    for name in ("start", "first", "intake_busy", "thr_we", "thr_sel", "thr_data",
                 "queue_empty", "issue_idle", "more", "busy", "intake_events", "fires",
                 "mac_valid", "mac_layer_r"):
        port = getattr(ctrl, name)
        m.d.comb += port.eq(AnySeq(len(port)))
    m.d.comb += [Assume(ctrl.intake_events <= P), Assume(ctrl.mac_layer_r < N)]
    fires, macs = _popcount(ctrl.fires), _popcount(ctrl.mac_valid)
    caps = ([ly.n_in for ly in plan.config.layers],
            [int(plan.model.column_nnz(i).sum()) for i in range(N)])
    incs = ([ctrl.intake_events] + [Mux(ctrl.exam_layer == i - 1, fires, 0)
                                    for i in range(1, N)],
            [Mux(ctrl.mac_layer_r == i, macs, 0) for i in range(N)])
    step = max(P, L)
    for kind, live, port in (("events", ev_live, ctrl.events), ("macs", mac_live, ctrl.macs)):
        idx = 0 if kind == "events" else 1
        for i in range(N):
            inc = incs[idx][i]
            last = Signal(range(step + 1), name=f"{kind}_last{i}")
            total = Signal(range(caps[idx][i] + 2 * step + 1), name=f"{kind}_sum{i}")
            m.d.sync += last.eq(inc)
            with m.If(ctrl.done):
                m.d.sync += total.eq(last + inc)
            with m.Else():
                m.d.sync += total.eq(total + inc)
            want = total - last
            m.d.comb += [
                Assume(total <= caps[idx][i]),
                Assert(~ctrl.done | (port[i] == want)),
                Assert(live[i] == Mux(ctrl.done, 0, want)),
            ]
    limit = max_cycles(plan)
    edges = Signal(range(limit + 2))
    with m.If(ctrl.ready & ctrl.start):
        m.d.sync += edges.eq(1)
    with m.Elif(edges <= limit):
        m.d.sync += edges.eq(edges + 1)
    m.d.comb += [
        Assume(ctrl.idle | (edges <= limit)),
        Assert(~ctrl.done | (ctrl.cycles == edges)),
        Assert(ctrl.idle | (cyc == edges)),
    ]
    return m


def control_rounds(plan: CorePlan, bug: str | None = None) -> Module:
    """**k-induction.** The examination rounds as :func:`exam_covers_dirty` assumes them, on the
    real controller with every input free: a MAC-done decision shows as the MAC's layer
    counting up; round 0 of the examination of the layer whose MAC is done starts (``go``)
    in the cycle after the decision; round ``r + 1`` starts in the cycle after round ``r``
    exactly when a lane had ``more`` in round ``r``; at ``go``, ``index`` = ``r``,
    ``index1`` = ``r + 1`` and ``exam_layer`` is the layer before the MAC's; the next MAC-done
    decision (of a layer that has an examination before it) and the step's end (``done``) come
    only in a cycle with no round pending and no lane busy. Contract: a lane has a round
    ``r + 1`` only if the examined layer has a row ``r + 1``. Bug ``lane0_more_only``: the
    next round is decided from lane 0's ``more`` alone (another lane's last neurons are
    skipped): fails."""
    m = Module()
    N = plan.n_layers
    ctrl = Controller(plan=plan)
    cm = elaborate_now(ctrl)
    if bug == "lane0_more_only":
        more = probe(cm, "more", exclude=[ctrl.more])  # the register, not the port
        with cm.If(ctrl.go):
            cm.d.sync += more.eq(ctrl.more[0])
    m.submodules.control = ctrl
    for name in ("start", "first", "intake_busy", "thr_we", "thr_sel", "thr_data",
                 "queue_empty", "issue_idle", "more", "busy", "intake_events", "fires",
                 "mac_valid", "mac_layer_r"):
        port = getattr(ctrl, name)
        m.d.comb += port.eq(AnySeq(len(port)))
    ml = probe(cm, "ml")  # the MAC's layer, 0..N (the mac_layer port has the layer's width)
    ml_prev = Signal.like(ml)
    m.d.sync += ml_prev.eq(ml)
    adv = Signal()  # the cycle after a MAC-done decision: round 0 is due
    m.d.comb += adv.eq(~ctrl.idle & (ml == ml_prev + 1))
    cont, quiet = Signal(), Signal()  # a round r + 1 is due; nothing was due nor busy
    expect = Signal()
    rounds, cur = Signal(range(max(plan.rows) + 2)), Signal(range(max(plan.rows) + 2))
    m.d.comb += [expect.eq(adv | cont), cur.eq(Mux(adv, 0, rounds))]
    m.d.sync += [cont.eq(ctrl.go & ctrl.more.any()), quiet.eq(~expect & ~ctrl.busy.any())]
    with m.If(ctrl.go & (cur <= max(plan.rows))):
        m.d.sync += rounds.eq(cur + 1)
    with m.Else():
        m.d.sync += rounds.eq(cur)
    m.d.comb += [
        Assert(ctrl.go == expect),
        Assert(~ctrl.go | ((ctrl.index == cur) & (ctrl.index1 == cur + 1))),
        Assert(~ctrl.go | (ctrl.exam_layer + 1 == ml)),
        Assert(~(adv & (ml >= 2)) | quiet),
        Assert(~ctrl.done | quiet),
        # contract: a lane has a round r + 1 only if the examined layer has a row r + 1
        Assume(~(ctrl.go & ctrl.more.any())
               | (ctrl.index1 < _per_layer(ctrl.exam_layer, plan.rows))),
    ]
    # invariants for the induction (the controller's own registers)
    ex_active = probe(cm, "ex_active")
    more_r = probe(cm, "more", exclude=[ctrl.more])
    state = probe(cm, "fsm_state")  # IDLE, INIT, RUN: encoded 0, 1, 2
    m.d.comb += [
        Assert(state <= 2),
        Assert(~ex_active | (~ctrl.idle & ~ctrl.init_en)),  # only in RUN
        Assert(ml <= N),
        Assert(~adv | (ex_active & more_r)),
        Assert(~ex_active | adv | (more_r == cont)),
        # (after the last round index may wrap: a layer's rows can be 2 ** len(index))
        Assert(~ex_active | ((ctrl.index == cur[:len(ctrl.index)])
                             & (ctrl.index1 == (cur + 1)[:len(ctrl.index1)]))),
        Assert(~ex_active | (ctrl.exam_layer + 1 == ml)),
    ]
    return m


# ---- the registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Property:
    """One property: its harness builder ``build(plan, bug)``, the method (``mode`` and
    ``depth`` for :func:`sim.formal.check`) and its broken variants (bug -> what it does)."""

    name: str
    component: str
    statement: str
    mode: str
    depth: int
    build: Callable
    bugs: dict = field(default_factory=dict)
    bug_depth: int = 8  # BMC depth within which every broken variant must give a counterexample
    contract: str = ""  # what the harness assumes of the component's environment
    cover: Callable | None = None  # a cover harness showing the bounded check is not vacuous

    @property
    def method(self) -> str:
        return (f"k-induction, k = {self.depth}" if self.mode == "prove"
                else f"BMC, depth {self.depth}")


PROPERTIES = (
    Property(
        "lane_accumulate", "MacLane",
        "no accumulator update is lost (back-to-back read-modify-writes included); an "
        "examination read returns the current value", "prove", 4, lane_accumulate,
        {"acc_opaque": "accumulator read ports not transparent"}, bug_depth=6,
        contract="commands address their layer's weight words; the MAC, the bias write and "
                 "the examination never use one bank in one cycle"),
    Property(
        "lane_dirty_list", "MacLane",
        "every address the MAC writes is in its bank's dirty list exactly once; the list "
        "holds nothing else and never overflows; dirty bits = written and not cleaned",
        "prove", 4, lane_dirty_list, {"bits_opaque": "dirty-bit read ports not transparent"},
        bug_depth=7,
        contract="as lane_accumulate; a list is cleared only when its bank has no dirty bit, "
                 "not while the MAC writes that bank; a cleaned address is not written again "
                 "before its list is cleared"),
    Property(
        "queue_fifo", "EventQueue",
        "never overflows or underflows; groups leave in FIFO order, payload unchanged",
        "prove", 2, queue_fifo,
        {"small_queue": "one group shorter than the contract needs",
         "opaque_read": "the read port misses a write of the same cycle",
         "newest_first": "a just-pushed group overtakes the ring buffer's head"}, bug_depth=8,
        contract="never more than plan.queue_depth groups held (CorePlan sizes the queue so)"),
    Property(
        "exam_covers_dirty", "MacLane + Examiner",
        "every neuron whose accumulator the MAC updated in the step is re-examined once, after "
        "its last update, and left clean", "bmc", 16, exam_covers_dirty,
        {"no_append_forward": "the examiner does not see the append of its round-0 cycle"},
        bug_depth=10, cover=lambda plan: exam_covers_dirty(plan, cover=True),
        contract="one step from reset; rounds as control_rounds proves them; the MAC of the "
                 "examined layer ends at a cycle with no issue, the next layer's writes the "
                 "other bank"),
    Property(
        "control_counters", "Controller",
        "cycles = clock edges from the start edge to done; events and MACs = the sums of "
        "their increments over the step", "prove", 2, control_counters,
        {"latch_drops_last": "the latch leaves out its own cycle's increment",
         "cycles_minus_one": "cycles latched one short"}, bug_depth=14,
        contract="per step at most n_in events and column_nnz.sum() MACs per layer, "
                 "intake_events <= obs_words, at most max_cycles(plan) cycles"),
    Property(
        "control_rounds", "Controller",
        "examination rounds: round 0 in the cycle after the MAC is done, round r + 1 iff a lane "
        "had more in round r, index = r; the next phase only with no round pending and no "
        "lane busy", "prove", 2, control_rounds,
        {"lane0_more_only": "the next round is decided from lane 0 alone"}, bug_depth=14,
        contract="a lane has a round r + 1 only if the examined layer has a row r + 1"),
)


def property_named(name: str) -> Property:
    for p in PROPERTIES:
        if p.name == name:
            return p
    raise KeyError(f"no property {name!r}; there are {[p.name for p in PROPERTIES]}")


def run(prop: Property, plan: CorePlan | None = None, *, bug: str | None = None,
        cover: bool = False, folder=None, timeout_s: int = 120) -> FormalResult:
    """Check ``prop`` (or its broken variant ``bug``; ``cover``: its cover harness, in cover
    mode at the same depth) on ``plan`` (default :func:`tiny_plan`)."""
    plan = plan if plan is not None else tiny_plan()
    if bug is not None and bug not in prop.bugs:
        raise KeyError(f"{prop.name}: no broken variant {bug!r}; there are {list(prop.bugs)}")
    if cover:
        if prop.cover is None:
            raise ValueError(f"{prop.name}: no cover harness")
        return check(prop.cover(plan), name=f"{prop.name}.cover", mode="cover",
                     depth=prop.depth, folder=folder, timeout_s=timeout_s)
    if bug is None:
        return check(prop.build(plan, None), name=prop.name, mode=prop.mode, depth=prop.depth,
                     folder=folder, timeout_s=timeout_s)
    return check(prop.build(plan, bug), name=f"{prop.name}.{bug}", mode="bmc",
                 depth=prop.bug_depth, folder=folder, timeout_s=timeout_s)

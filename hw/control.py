"""The step controller of the event-driven core: phases, examination rounds, counters."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.corecycles import max_cycles
from ..pysim.coreplan import CorePlan
from .shapes import mac_command_layout, threshold_shape

__all__ = ["COUNTER_WIDTH", "Controller"]

COUNTER_WIDTH = 32


class Controller(wiring.Component):
    """Runs a step: bias initialisation (episode start), then for every layer its MAC and its
    examination, overlapped as ``pysim.corecycles`` describes; counts cycles, events and MACs.

    Parameters (keyword-only): ``plan`` (:class:`pysim.coreplan.CorePlan`).

    Ports
    -----
    start, first: In(1) a step starts at an edge where ``ready & start``; ``first``: episode
    start (the first step after ``rst`` is one too). ready: Out(1) idle and the intake has
    queued its last word (also in the ``done`` cycle); intake_busy: In(1) the intake has a word
    in flight; idle: Out(1) no step runs (the intake owns the event queue). done: Out(1)
    one-cycle pulse; cycles, events, macs: Out, the last step's figures,
    valid from ``done`` until the next ``done`` (``events[l]``: propagated non-zero deltas of
    layer ``l``'s input, ``macs[l]``: significant multiplications of layer ``l``).
    obs_en: Out(1) observation writes are accepted (idle and not ``start``); intake_first: Out(1)
    the writes belong to an episode start.
    thr_we, thr_sel, thr_data: In write layer ``thr_sel``'s threshold register (accepted with
    ``obs_en``; the next step then examines every neuron). thresholds: Out, every register.
    exam_threshold: Out the threshold of the examined layer's next layer.
    queue_empty: In(1), issue_idle: In(1) (a layer's MAC is done when both hold); mac_en,
    mac_layer: Out the issue stage runs for that layer.
    init_en, init_index, init_bank, init_addr: Out the bias initialisation (one row of every
    lane per cycle).
    go, index, index1, exam_layer, full, first_step: Out examination round ``index`` starts
    (X0); ``index1 = index + 1`` (a register of its own).
    more: In(L) lane ``k`` has a neuron in round ``index + 1``; busy: In(L) lane ``k`` has a
    round in flight. Round 0 always runs (its neurons are known only in that cycle, from the
    last dirty-list appends); round ``r + 1`` runs if some lane has a neuron in it, known (and
    registered) in round ``r``'s cycle. dl_clear: Out(2) empty a bank's dirty lists.
    intake_events: In events found by the intake; fires: In(L) events found by the examiners;
    mac_valid: In(L) and mac_layer_r: In significant multiplications read this cycle.
    """

    def __init__(self, *, plan):
        if not isinstance(plan, CorePlan):
            raise TypeError(f"Controller: plan must be a pysim CorePlan, got "
                            f"{type(plan).__name__}")
        self._plan = plan
        cfg = plan.config
        N, L = plan.n_layers, plan.lanes
        lay = mac_command_layout(plan)["layer"].shape
        self._thr_w = max(threshold_shape(cfg.in_fmt(i)).width for i in range(N))
        cnt = unsigned(COUNTER_WIDTH)
        super().__init__({
            "start": In(1), "first": In(1), "ready": Out(1), "done": Out(1), "idle": Out(1),
            "cycles": Out(cnt), "events": Out(data.ArrayLayout(cnt, N)),
            "macs": Out(data.ArrayLayout(cnt, N)),
            "obs_en": Out(1), "intake_first": Out(1),
            "thr_we": In(1), "thr_sel": In(max(1, (N - 1).bit_length())),
            "thr_data": In(unsigned(self._thr_w)),
            "thresholds": Out(data.ArrayLayout(unsigned(self._thr_w), N)),
            "exam_threshold": Out(unsigned(self._thr_w)),
            "intake_busy": In(1),
            "queue_empty": In(1), "issue_idle": In(1), "mac_en": Out(1), "mac_layer": Out(lay),
            "init_en": Out(1), "init_index": Out(max(1, (plan.init_steps - 1).bit_length())),
            "init_bank": Out(1), "init_addr": Out(plan.acc_addr_width),
            "go": Out(1), "index": Out(plan.acc_addr_width),
            "index1": Out(plan.acc_addr_width + 1, init=1), "exam_layer": Out(lay),
            "full": Out(1), "first_step": Out(1),
            "more": In(L), "busy": In(L), "dl_clear": Out(2),
            "intake_events": In(range(plan.obs_words + 1)), "fires": In(L),
            "mac_valid": In(L), "mac_layer_r": In(lay),
        })

    def threshold_reset(self, i: int) -> int:
        """Reset value of layer ``i``'s register (``2**w`` and above never fire)."""
        f = self._plan.config.in_fmt(i)
        return min(self._plan.config.threshold_raw(i), 1 << f.width)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        N = plan.n_layers

        # ---- thresholds ------------------------------------------------------------------------
        thr = [Signal(unsigned(self._thr_w), init=self.threshold_reset(i), name=f"thr{i}")
               for i in range(N)]
        for i in range(N):
            m.d.comb += self.thresholds[i].eq(thr[i])
        with m.Switch(self.exam_layer):
            for i in range(N - 1):
                with m.Case(i):
                    m.d.comb += self.exam_threshold.eq(thr[i + 1])

        need_first = Signal(init=1)  # the first step after rst is an episode start
        rescan = Signal()  # a threshold was written: examine every neuron next step
        ml = Signal(range(N + 1))  # the layer whose MAC runs
        ex_active = Signal()
        fin = Signal()
        more = Signal()  # round `index` runs (registered)
        busy = Signal()
        m.d.comb += [
            busy.eq(self.busy.any()),
            fin.eq(ex_active & ~more & ~busy),
            self.mac_layer.eq(ml),
            self.go.eq(ex_active & more),
            self.intake_first.eq(self.first | need_first),
        ]
        with m.If(self.go):
            m.d.sync += [self.index.eq(self.index + 1), self.index1.eq(self.index1 + 1),
                         more.eq(self.more.any())]

        # ---- counters (as wide as a step can count; the ports are COUNTER_WIDTH bits) -----------
        cyc = Signal(range(max_cycles(plan) + 2))
        m.d.sync += cyc.eq(cyc + 1)
        ev_live = [Signal(range(ly.n_in + 1), name=f"ev_live{i}")
                   for i, ly in enumerate(plan.config.layers)]
        mac_live = [Signal(range(int(plan.model.column_nnz(i).sum()) + 1), name=f"mac_live{i}")
                    for i in range(N)]
        # the increments are registered first (off the examination's and the MAC's paths; the
        # fire bits before their sum, which would lengthen the examiner's compare): a count
        # lags its event by one cycle, and the latch at the end of a step adds the last
        fires_r = Signal(plan.lanes)
        n_fires = Signal(range(plan.lanes + 1))
        n_macs = Signal(range(plan.lanes + 1))
        fire_layer = Signal.like(self.exam_layer)
        mac_layer = Signal.like(self.mac_layer_r)
        n_intake = Signal.like(self.intake_events)
        m.d.comb += n_fires.eq(sum(fires_r[k] for k in range(plan.lanes)))
        m.d.sync += [
            fires_r.eq(self.fires),
            n_macs.eq(sum(self.mac_valid[k] for k in range(plan.lanes))),
            fire_layer.eq(self.exam_layer), mac_layer.eq(self.mac_layer_r),
            n_intake.eq(self.intake_events),
        ]
        latch = Signal()
        for i in range(N):
            ev_inc = n_intake if i == 0 else Mux(fire_layer == i - 1, n_fires, 0)
            mac_inc = Mux(mac_layer == i, n_macs, 0)
            with m.If(latch):
                m.d.sync += [self.events[i].eq(ev_live[i] + ev_inc), ev_live[i].eq(0),
                             self.macs[i].eq(mac_live[i] + mac_inc), mac_live[i].eq(0)]
            with m.Else():
                m.d.sync += [ev_live[i].eq(ev_live[i] + ev_inc),
                             mac_live[i].eq(mac_live[i] + mac_inc)]

        # ---- bias initialisation counters -----------------------------------------------------
        init_layer = Signal(range(N + 1))
        init_row = Signal(range(max(plan.rows) + 1))
        rows_m1 = Signal(range(max(plan.rows)))
        base = Signal(range(max(plan.bank_depth) + 1))
        with m.Switch(init_layer):
            for i in range(N):
                with m.Case(i):
                    m.d.comb += [rows_m1.eq(plan.rows[i] - 1), base.eq(plan.acc_base[i])]
        m.d.comb += [self.init_bank.eq(init_layer[0]), self.init_addr.eq(base + init_row)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.ready.eq(~self.intake_busy), self.obs_en.eq(~self.start),
                             self.idle.eq(1)]
                with m.If(self.thr_we & ~self.start):
                    with m.Switch(self.thr_sel):
                        for i in range(N):
                            with m.Case(i):
                                m.d.sync += thr[i].eq(self.thr_data)
                    m.d.sync += rescan.eq(1)
                with m.If(self.start & ~self.intake_busy):
                    ep = self.first | need_first
                    m.d.sync += [
                        self.first_step.eq(ep), self.full.eq(ep | rescan), rescan.eq(0),
                        need_first.eq(0), cyc.eq(1), ml.eq(0), ex_active.eq(0),
                        self.init_index.eq(0), init_layer.eq(0), init_row.eq(0),
                    ]
                    with m.If(ep):
                        m.next = "INIT"
                    with m.Else():
                        m.next = "RUN"
            with m.State("INIT"):
                m.d.comb += self.init_en.eq(1)
                m.d.sync += self.init_index.eq(self.init_index + 1)
                with m.If(init_row == rows_m1):
                    m.d.sync += [init_row.eq(0), init_layer.eq(init_layer + 1)]
                    with m.If(init_layer == N - 1):
                        m.next = "RUN"
                with m.Else():
                    m.d.sync += init_row.eq(init_row + 1)
            with m.State("RUN"):
                m.d.comb += self.mac_en.eq(ml < N)
                prod_done = Mux(ml == 0, 1, fin)
                with m.If((ml < N) & prod_done & self.queue_empty & self.issue_idle):
                    # the MAC of layer ml is done: its examination starts in the next cycle,
                    # that of the last issue's dirty-list append (its X0 sees it)
                    with m.If(ml != 0):
                        m.d.comb += self.dl_clear.eq(Mux(ml[0], 0b01, 0b10))
                    m.d.sync += [self.exam_layer.eq(ml), ex_active.eq(1), more.eq(1),
                                 self.index.eq(0), self.index1.eq(1), ml.eq(ml + 1)]
                with m.Elif((ml == N) & fin):
                    m.d.comb += [self.dl_clear.eq(0b10 if (N - 1) % 2 else 0b01), latch.eq(1)]
                    m.d.sync += [self.done.eq(1), self.cycles.eq(cyc + 1), ex_active.eq(0)]
                    m.next = "IDLE"
        with m.If(self.done):
            m.d.sync += self.done.eq(0)
        return m

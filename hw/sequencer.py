"""Layer sequencer: runs the layers of one step one after another and counts the cycles."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import check_int

__all__ = ["Sequencer"]

COUNTER_WIDTH = 32


class Sequencer(wiring.Component):
    """Per-step FSM: IDLE -> for each layer [ENC] ISSUE DRAIN ACT -> IDLE (done).

    Cycle by cycle, for a step whose start is sampled at the end of cycle ``E0``:

    * ``ENC`` (1 cycle): ``load[l]`` - the layer's delta encoder compares and latches its
      events. For layer 0 this is the IDLE cycle in which ``start`` is sampled (no extra cycle);
      for layer ``l > 0`` it is the cycle after layer ``l-1``'s ACT (its outputs are registered).
    * ``ISSUE`` (``S_l + 1`` cycles, ``S_l`` = sum of the events' ``maxlen``): the MAC issues one
      word per cycle; the state is left in the first cycle with ``idle`` high (nothing waiting,
      nothing issuing) - for ``S_l = 0`` that is the first ISSUE cycle.
    * ``DRAIN`` (1 cycle): the last product is added (the MAC's ``drain_cycles = 2`` counts the
      cycle that detected ``idle``, in which the last word was read, and this one).
    * ``ACT`` (1 cycle): ``act[l]`` - requantize/activate all rows into the output registers.

    So layer ``l`` takes ``4 + S_l`` cycles from its ENC to the next layer's ENC, and ``done``
    is high in the cycle after the last ACT (``ready`` is high in it too: a new ``start`` may be
    sampled in the done cycle). ``cycles`` counts the clock edges from the one that samples
    ``start`` to the one that samples ``done`` high: ``sum_l (4 + S_l)``, the step's period when
    steps run back to back.

    Parameters (keyword-only): ``n_layers`` (1..64).

    Ports
    -----
    start, first: In(1) sampled when ``ready``; ``first`` also raises ``clear`` (episode reset).
    ready: Out(1) idle; done: Out(1) one-cycle pulse, outputs valid.
    started: Out(1) a step starts this cycle (counters clear); clear: Out(1) episode reset now.
    full: Out(1) this step is a full pass (threshold bypassed): the first step after ``first``
    or after ``rst`` (pysim: the first step after ``reset()`` or construction).
    load: Out(n_layers) encoder ``l`` latches its events now; act: Out(n_layers) activation ``l``
    registers now; layer: Out the layer whose events flow to the MAC.
    idle: In(1) the MAC has nothing to issue.
    thr_we, thr_sel: In threshold write request; thr_write: Out(n_layers) per-layer write
    enables (only while ``ready``).
    cycles: Out(32) cycles of the last step (counts while a step runs; final when ``done``).
    """

    LAYER_OVERHEAD = 4  # ENC + idle detection + DRAIN + ACT
    STEP_OVERHEAD = 0  # the start cycle is layer 0's ENC; the done cycle may start the next step

    def __init__(self, *, n_layers):
        self._n = check_int("Sequencer", "n_layers", n_layers, 1, 64)
        self._lw = max(1, ceil_log2(self._n))
        super().__init__({
            "start": In(1),
            "first": In(1),
            "ready": Out(1),
            "done": Out(1),
            "started": Out(1),
            "clear": Out(1),
            "full": Out(1),
            "load": Out(self._n),
            "act": Out(self._n),
            "layer": Out(unsigned(self._lw)),
            "idle": In(1),
            "thr_we": In(1),
            "thr_sel": In(unsigned(self._lw)),
            "thr_write": Out(self._n),
            "cycles": Out(unsigned(COUNTER_WIDTH)),
        })

    def elaborate(self, platform):
        m = Module()
        last = self._n - 1
        m.d.sync += self.done.eq(0)
        fresh = Signal(init=1)  # no step since rst: the state is the reset state
        full = Signal()
        m.d.comb += self.full.eq(full)
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.ready.eq(1)
                with m.If(self.thr_we):
                    m.d.comb += self.thr_write.eq(1 << self.thr_sel)
                with m.If(self.start):
                    m.d.comb += [self.started.eq(1), self.clear.eq(self.first),
                                 self.load.eq(1), self.full.eq(self.first | fresh)]
                    m.d.sync += [self.layer.eq(0), self.cycles.eq(1),
                                 full.eq(self.first | fresh), fresh.eq(0)]
                    m.next = "ISSUE"
            with m.State("ENC"):
                m.d.comb += self.load.eq(1 << self.layer)
                m.d.sync += self.cycles.eq(self.cycles + 1)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(self.idle):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += self.cycles.eq(self.cycles + 1)
                m.next = "ACT"
            with m.State("ACT"):
                m.d.comb += self.act.eq(1 << self.layer)
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(self.layer == last):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.layer.eq(self.layer + 1)
                    m.next = "ENC"
        return m

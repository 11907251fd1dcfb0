"""Delta encoder: thresholded input changes as a stream of (index, delta) events."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pysim.fixed import FixedFormat

from ._checks import check_int
from .shapes import delta_shape, raw_vector, threshold_shape

__all__ = ["DeltaEncoder", "event_layout"]


def event_layout(index_width: int, delta_width: int) -> data.StructLayout:
    """Payload of an event stream: input ``index`` (unsigned) and its ``delta`` (signed)."""
    return data.StructLayout({"index": unsigned(index_width), "delta": signed(delta_width)})


class DeltaEncoder(wiring.Component):
    """Compares every input with its last propagated value and emits the significant changes.

    Semantics (pysim ``DeltaNetwork.step``): ``d = x - x_hat``; input ``i`` is an *event* when
    ``d != 0 and (|d| >= threshold or full)``; ``x_hat[i] <= x[i]`` for events only (``x_hat`` resets to
    0). Events whose column is empty (``mask[i]`` false) update ``x_hat`` and are counted but
    are not emitted: they would cost MAC cycles for nothing.

    Parameters (keyword-only)
    -------------------------
    n_in: inputs (1..4096). fmt: pysim ``FixedFormat`` of the inputs (signed).
    threshold: reset value of the threshold register, raw codes of ``fmt`` (>= 0; values at or
    above ``2**fmt.width`` never fire and are stored as ``2**fmt.width``).
    mask: optional sequence of ``n_in`` bools, which events are emitted (default: all).
    thr_width: width of the ``thr_data`` write port (default ``fmt.width``).
    index_width, delta_width: payload widths (defaults: the minimum), so several encoders can
    share one stream signature.

    Ports
    -----
    x: In(ArrayLayout(signed(w), n_in)) inputs, sampled at ``load``.
    load: In(1) compare ``x`` with ``x_hat`` now: latch the pending events and their deltas,
    update ``x_hat``, count the events. Must only be raised when ``o`` has nothing pending.
    clear: In(1) episode reset: ``x_hat`` is 0 from this edge on; with ``load`` in the same
    cycle the comparison already uses ``x_hat = 0``.
    full: In(1) with ``load``: a full pass, every non-zero delta is an event whatever the
    threshold (the first step after an episode reset, pysim's ``steps == 0``).
    thr_we, thr_data: write the threshold register (raw, unsigned).
    threshold: Out current threshold register.
    o: Out(stream of event_layout) pending events, lowest index first.
    events: Out(range(n_in + 1)) events of the last ``load`` (including unmasked ones).

    Latency and throughput: events latched at the ``load`` edge are valid from the next cycle;
    one event per cycle while ``o.ready`` is high (combinational priority encoder).
    """

    def __init__(self, *, n_in, fmt, threshold, mask=None, thr_width=None, index_width=None,
                 delta_width=None):
        owner = "DeltaEncoder"
        self._n = check_int(owner, "n_in", n_in, 1, 4096)
        if not isinstance(fmt, FixedFormat) or not fmt.signed:
            raise TypeError(f"{owner}: fmt must be a signed pysim FixedFormat, got {fmt!r}")
        self._fmt = fmt
        self._threshold = check_int(owner, "threshold", threshold, 0)
        if mask is None:
            mask = [True] * self._n
        mask = [bool(v) for v in mask]
        if len(mask) != self._n:
            raise ValueError(f"{owner}: mask must have n_in={self._n} entries, got {len(mask)}")
        self._mask = tuple(mask)
        self._thr_width = check_int(owner, "thr_width",
                                    fmt.width if thr_width is None else thr_width, 1, 64)
        need_iw = max(1, ceil_log2(self._n))
        self._iw = check_int(owner, "index_width",
                             need_iw if index_width is None else index_width, need_iw, 32)
        need_dw = delta_shape(fmt).width
        self._dw = check_int(owner, "delta_width",
                             need_dw if delta_width is None else delta_width, need_dw, 64)
        super().__init__({
            "x": In(raw_vector(fmt, self._n)),
            "load": In(1),
            "clear": In(1),
            "full": In(1),
            "thr_we": In(1),
            "thr_data": In(unsigned(self._thr_width)),
            "threshold": Out(unsigned(self.threshold_width)),
            "o": Out(stream.Signature(event_layout(self._iw, self._dw))),
            "events": Out(range(self._n + 1)),
        })

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self._n

    @property
    def threshold_width(self) -> int:
        return max(threshold_shape(self._fmt).width, self._thr_width)

    @property
    def threshold_reset(self) -> int:
        """Reset value of the threshold register (``2**w`` stands for "never")."""
        return min(self._threshold, 1 << self._fmt.width)

    @property
    def latency(self) -> int:
        """Cycles from the ``load`` edge to the first valid event."""
        return 1

    def elaborate(self, platform):
        m = Module()
        n = self._n

        thr = Signal(unsigned(self.threshold_width), init=self.threshold_reset)
        x_hat = Signal(raw_vector(self._fmt, n))
        deltas = Signal(data.ArrayLayout(delta_shape(self._fmt), n))
        pending = Signal(n)
        m.d.comb += self.threshold.eq(thr)
        with m.If(self.thr_we):
            m.d.sync += thr.eq(self.thr_data)

        # All comparisons in parallel; with clear the old x_hat reads as 0 (episode start).
        ev_bits, emit_bits = [], []
        for i in range(n):
            xh = Mux(self.clear, 0, x_hat[i])
            d = Signal(delta_shape(self._fmt), name=f"d{i}")
            m.d.comb += d.eq(self.x[i] - xh)
            mag = Signal(threshold_shape(self._fmt), name=f"mag{i}")  # |d| <= 2**w - 1
            m.d.comb += mag.eq(Mux(d < 0, -d, d))
            ev = Signal(name=f"ev{i}")
            m.d.comb += ev.eq((d != 0) & ((mag >= thr) | self.full))
            ev_bits.append(ev)
            emit_bits.append(ev if self._mask[i] else C(0, 1))
            with m.If(self.load):
                m.d.sync += [
                    deltas[i].eq(d),
                    x_hat[i].eq(Mux(ev, self.x[i], xh)),
                ]
            with m.Elif(self.clear):
                m.d.sync += x_hat[i].eq(0)

        # Priority encoder: the lowest pending index goes first.
        lowest = Signal(n)
        m.d.comb += lowest.eq(pending & (~pending + 1))
        m.d.comb += self.o.valid.eq(pending.any())
        for i in reversed(range(n)):
            with m.If(pending[i]):
                m.d.comb += [self.o.payload.index.eq(i), self.o.payload.delta.eq(deltas[i])]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += pending.eq(pending & ~lowest)
        with m.If(self.load):
            m.d.sync += [
                pending.eq(Cat(*emit_bits)),
                self.events.eq(sum(ev_bits)),
            ]
        return m

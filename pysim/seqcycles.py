"""Cycle model of the sequential (memory-based) delta core, ``hw/seqtop.py``'s ``DeltaSeqTop``.

The hardware must match this model exactly (tests/test_seqcore.py checks the ``cycles`` port
against :meth:`SeqCycleModel.step_cycles` at every step). numpy only.

Geometry: every layer is seen as a convolution ``C x H x W -> O x OH x OW`` with square kernel
``K``, stride ``S`` and zero padding ``P``; a dense layer ``n_in -> n_out`` is the 1x1 conv on a
1x1 image (``C = n_in, O = n_out, H = W = K = S = OH = OW = 1, P = 0``). Inputs and outputs are
flat CHW vectors, so the flatten between a conv and a dense layer is the identity.

Microarchitecture (``L`` MAC lanes, everything in memories):

* Lane ``k`` owns the output channels ``o`` with ``o % L == k``; its accumulator bank of layer
  ``l`` holds neuron ``(o, oy, ox)`` at address ``(o // L) * OH * OW + oy * OW + ox``
  (``depth_l = ceil(O / L) * OH * OW`` words per lane).
* Weight column ``col = (c * K + ky) * K + kx``: every lane stores the non-zero weights of its
  channels in that column (sorted by ``o``), padded to ``len[col] = max over lanes``.
* A step runs its phases one after the other:

  - ``SCAN_l``: one input per cycle (``n_in_l`` cycles) + ``SCAN_OVERHEAD`` (pipeline: the 5
    data stages of the last input). Compares with ``x_hat``, writes ``x_hat`` and buffers the events that
    reach the MAC (an event whose channel holds no non-zero weight, or whose input position
    reaches no output, is counted but not buffered: it costs no MAC cycle).
  - ``INIT_l`` (first step after a reset only): the bias into every accumulator address,
    ``depth_l`` cycles + ``INIT_OVERHEAD``.
  - ``MAC_l``: for each buffered event, for each kernel position ``(ky, kx)`` that lands on the
    output grid, ``max(1, len[col])`` issue cycles (an empty column costs one cycle), plus
    ``MAC_OVERHEAD`` (event-buffer/column-table prefetch, one empty issue slot, 5-cycle drain
    of the weight-address -> weight-read -> weight-select -> product/accumulator-read ->
    accumulator-data -> add/write pipeline).
  - ``FINAL``: the last layer's outputs are requantized into the output registers and the
    running argmax, ``n_out`` cycles + ``FINAL_OVERHEAD`` (the 4 data stages of the last
    output).

::

    cycles = STEP_OVERHEAD
           + sum_l [SCAN_OVERHEAD + n_in_l + MAC_OVERHEAD + events_l @ cost_per_input(l)]
           + FINAL_OVERHEAD + n_out
           + first * sum_l (INIT_OVERHEAD + depth_l)

``cost_per_input(l)[i] = active(c) * sum over valid positions of max(1, len[col])`` where
``active(c)`` says channel ``c`` has a non-zero weight. Cycles are counted like the existing
design: clock edges from the edge that samples ``start`` to the edge that samples ``done`` high
(``STEP_OVERHEAD = 1`` is the start cycle; back-to-back steps take exactly ``cycles`` each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model, conv_tap_valid

__all__ = ["FINAL_OVERHEAD", "INIT_OVERHEAD", "MAC_OVERHEAD", "MAX_LANES", "SCAN_OVERHEAD",
           "STEP_OVERHEAD", "Geometry", "SeqCycleModel", "geometry", "lane_tap_nnz"]

#: the start cycle (the IDLE cycle whose edge samples ``start``)
STEP_OVERHEAD = 1
#: per scan: the 5 data stages of the last input (memory data, requantize, activation,
#: delta, threshold compare + writes)
SCAN_OVERHEAD = 5
#: per MAC phase: first event in the position register, one cycle with the issue register
#: empty (its column-table read), 5 drain cycles (weight address -> weight read -> weight
#: select -> product and accumulator read -> accumulator data -> add and write)
MAC_OVERHEAD = 7
#: per bias initialisation: the data cycle of the last address (bias ROM read)
INIT_OVERHEAD = 1
#: final output scan: the 4 data stages of the last output (memory data, requantize,
#: activation, output registers + argmax)
FINAL_OVERHEAD = 4
MAX_LANES = 64


@dataclass(frozen=True)
class Geometry:
    """A layer as a convolution (a dense layer is the 1x1 conv on a 1x1 image)."""

    C: int
    H: int
    W: int
    O: int
    K: int
    S: int
    P: int
    OH: int
    OW: int

    @property
    def n_in(self) -> int:
        return self.C * self.H * self.W

    @property
    def n_out(self) -> int:
        return self.O * self.OH * self.OW

    @property
    def n_cols(self) -> int:
        return self.C * self.K * self.K

    @property
    def pixels(self) -> int:
        return self.OH * self.OW

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("C", "H", "W", "O", "K", "S", "P", "OH", "OW")}


def geometry(layer) -> Geometry:
    if layer.kind == "dense":
        return Geometry(layer.n_in, 1, 1, layer.n_out, 1, 1, 0, 1, 1)
    if layer.kind == "conv2d":
        return Geometry(layer.in_ch, layer.in_h, layer.in_w, layer.out_ch, layer.kernel,
                        layer.stride, layer.padding, layer.out_h, layer.out_w)
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def taps(model: Model, i: int) -> np.ndarray:
    """Layer ``i``'s raw weights as ``(O, C, K, K)`` (a dense ``(O, C)`` as ``(O, C, 1, 1)``)."""
    g = geometry(model.config.layers[i])
    return np.asarray(model.w_raw[i], dtype=np.int64).reshape(g.O, g.C, g.K, g.K)


def lane_tap_nnz(nonzero: np.ndarray, lanes: int) -> np.ndarray:
    """``(L, C, K, K)``: non-zero taps of each lane's channels (``o % L == k``) per column."""
    O = nonzero.shape[0]
    rows = -(-O // lanes)
    pad = np.zeros((rows * lanes,) + nonzero.shape[1:], dtype=np.int64)
    pad[:O] = nonzero
    return pad.reshape((rows, lanes) + nonzero.shape[1:]).sum(axis=0)


@dataclass(frozen=True, eq=False)
class SeqCycleModel:
    model: Model
    lanes: int

    def __post_init__(self):
        if isinstance(self.lanes, bool) or not isinstance(self.lanes, int) \
                or not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must be an integer in 1..{MAX_LANES}, got {self.lanes!r}")
        object.__setattr__(self, "_cache", {})

    def _memo(self, key, fn):
        c = self._cache
        if key not in c:
            c[key] = fn()
        return c[key]

    # ---- per-layer structure ----------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.model.config.layers)

    def geometry(self, i: int) -> Geometry:
        return geometry(self.model.config.layers[i])

    def lane_nnz_taps(self, i: int) -> np.ndarray:
        """``(L, C, K, K)`` non-zero weights per lane and column."""
        return self._memo(("lt", i), lambda: lane_tap_nnz(taps(self.model, i) != 0, self.lanes))

    def col_len(self, i: int) -> np.ndarray:
        """``(C, K, K)`` issue length of each column: the busiest lane's entries (0: empty)."""
        return self._memo(("len", i), lambda: self.lane_nnz_taps(i).max(axis=0))

    def channel_active(self, i: int) -> np.ndarray:
        """``(C,)`` channels with at least one non-zero weight (others never reach the MAC)."""
        return self._memo(("act", i), lambda: (taps(self.model, i) != 0).any(axis=(0, 2, 3)))

    def depth(self, i: int) -> int:
        """Accumulator words per lane of layer ``i``: ``ceil(O / L) * OH * OW``."""
        g = self.geometry(i)
        return -(-g.O // self.lanes) * g.pixels

    def _valid(self, i: int):
        g = self.geometry(i)
        return (conv_tap_valid(g.H, g.OH, g.K, g.S, g.P),   # (K, H)
                conv_tap_valid(g.W, g.OW, g.K, g.S, g.P))   # (K, W)

    def _per_input(self, i: int, per_tap: np.ndarray) -> np.ndarray:
        """Sum of ``per_tap[..., c, ky, kx]`` over the valid positions of every input."""
        vy, vx = self._valid(i)
        return np.einsum("...cab,ay,bx->...cyx", per_tap, vy, vx)

    def positions(self, i: int) -> np.ndarray:
        """``(n_in,)`` kernel positions of each input that land on the output grid."""
        g = self.geometry(i)
        return self._per_input(i, np.ones((g.C, g.K, g.K), dtype=np.int64)).reshape(-1)

    def cost_per_input(self, i: int) -> np.ndarray:
        """``(n_in,)`` MAC cycles one event at each input costs."""
        def f():
            g = self.geometry(i)
            c = self._per_input(i, np.maximum(self.col_len(i), 1).astype(np.int64))
            c = c * self.channel_active(i)[:, None, None]
            return c.reshape(g.n_in).astype(np.int64)
        return self._memo(("cost", i), f)

    def lane_nnz(self, i: int) -> np.ndarray:
        """``(n_in, L)`` useful MACs of each lane for one event at each input."""
        def f():
            g = self.geometry(i)
            w = self._per_input(i, self.lane_nnz_taps(i))  # (L, C, H, W)
            return w.reshape(self.lanes, g.n_in).T.astype(np.int64)
        return self._memo(("lnnz", i), f)

    # ---- per step ---------------------------------------------------------------------------
    def fixed_cycles(self) -> int:
        """Cycles of a step without MAC work (and not first)."""
        cfg = self.model.config
        return int(STEP_OVERHEAD + sum(SCAN_OVERHEAD + ly.n_in + MAC_OVERHEAD
                                       for ly in cfg.layers) + FINAL_OVERHEAD + cfg.n_out)

    def init_cycles(self) -> int:
        """Extra cycles of a first step (bias initialisation of every layer)."""
        return int(sum(INIT_OVERHEAD + self.depth(i) for i in range(self.n_layers)))

    def mac_cycles(self, event_masks) -> np.ndarray:
        """``(n_layers, B)`` MAC issue cycles per layer."""
        return np.stack([np.asarray(ev, dtype=np.int64) @ self.cost_per_input(i)
                         for i, ev in enumerate(event_masks)])

    def step_cycles(self, event_masks, first) -> np.ndarray:
        """``(B,)`` cycles of one step from ``DeltaNetwork.last_events`` and ``first`` (the
        step was the first after a reset: ``DeltaNetwork.steps == 0`` before it)."""
        if len(event_masks) != self.n_layers:
            raise ValueError(f"need {self.n_layers} event masks, got {len(event_masks)}")
        busy = self.mac_cycles(event_masks).sum(axis=0)
        first = np.asarray(first, dtype=np.int64).reshape(-1)
        return self.fixed_cycles() + busy + first * self.init_cycles()

    def busy_cycles(self, event_masks) -> np.ndarray:
        """``(B,)`` MAC issue cycles (``sum_l events_l @ cost_per_input(l)``)."""
        return self.mac_cycles(event_masks).sum(axis=0)

    def lane_work(self, event_masks) -> np.ndarray:
        """``(B, L)`` useful MACs per lane for one step."""
        return sum(np.asarray(ev, dtype=np.int64) @ self.lane_nnz(i)
                   for i, ev in enumerate(event_masks))

    def ideal_cycles(self, significant) -> np.ndarray:
        """``ceil(significant / L)`` summed over layers, from ``(n_layers, B)`` counts."""
        return (-(-np.asarray(significant) // self.lanes)).sum(axis=0)

    def dense_cycles(self) -> int:
        """The same schedule with every input an event and no pruning (every column
        ``ceil(O / L)`` long, every channel active), not a first step."""
        total = self.fixed_cycles()
        for i in range(self.n_layers):
            g = self.geometry(i)
            total += int(self.positions(i).sum()) * -(-g.O // self.lanes)
        return int(total)

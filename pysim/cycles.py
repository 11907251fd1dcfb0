"""Cycle model of the deltanet hardware: cycles per step predicted from a step's events.

The hardware (``hw/``) must match this model exactly; a test checks it on recorded episodes.

Microarchitecture assumed (see ``hw/top.py`` for the implementation):

* ``L`` MAC lanes. Lane ``k`` owns the output rows ``r`` with ``r % L == k`` (its own bank of the
  pre-activation memory), so lanes never write the same row.
* Weights are stored column-compressed per lane: for input column ``j`` lane ``k`` holds the
  ``n[j, k]`` non-zero weights of its rows. All lanes share one address counter, so column ``j``
  costs ``maxlen[j] = max_k n[j, k]`` issue cycles (lanes with fewer entries idle; with
  lane-balanced pruning no lane idles). Columns with no non-zero weight cost nothing.
* Per layer a fixed overhead ``LAYER_OVERHEAD`` (delta-encode compare, idle detection, pipeline
  drain, requantize/activate); per step ``STEP_OVERHEAD`` (none: the start cycle is layer 0's
  encode cycle).

    cycles(step) = STEP_OVERHEAD + sum_l [ LAYER_OVERHEAD + sum_{j in events_l} maxlen_l[j] ]

The ideal for comparison is ``ceil(significant_l / L)`` per layer; a dense schedule on the
same lanes issues every column with ``ceil(n_out / L)`` cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model

#: Cycles per layer besides MAC issue (``hw/top.py`` gives the cycle-by-cycle breakdown):
#: 1 encode (compare all inputs, latch the events) + 1 cycle that sees the MAC idle (the last
#: word's memory read) + 1 drain (the last product is added) + 1 requantize/activate.
LAYER_OVERHEAD = 4
#: Cycles per step besides the layers: none. Cycles are counted from the clock edge that samples
#: ``start`` to the edge that samples ``done``; the start cycle is layer 0's encode cycle and the
#: done cycle may already start the next step, so back-to-back steps take exactly this many.
STEP_OVERHEAD = 0
MAX_LANES = 64


def lane_nnz(nonzero: np.ndarray, lanes: int) -> np.ndarray:
    """(n_in, L): non-zero weights of each lane's slice (rows r % L == k) of each column."""
    n_out, n_in = nonzero.shape
    out = np.zeros((n_in, lanes), dtype=np.int64)
    for k in range(lanes):
        out[:, k] = nonzero[k::lanes, :].sum(axis=0)
    return out


@dataclass(frozen=True, eq=False)
class CycleModel:
    model: Model
    lanes: int

    def __post_init__(self):
        if not isinstance(self.lanes, int) or not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must be an integer in 1..{MAX_LANES}, got {self.lanes!r}")
        for i, ly in enumerate(self.model.config.layers):
            if ly.kind != "dense":
                raise ValueError(f"CycleModel: layer {i} kind {ly.kind!r} has no cycle model "
                                 "(the hardware runs dense layers only)")

    def lane_nnz(self, i: int) -> np.ndarray:
        return lane_nnz(self.model.nonzero(i, "fixed"), self.lanes)

    def maxlen(self, i: int) -> np.ndarray:
        """Issue cycles of each input column of layer ``i`` (0 for an all-zero column)."""
        return self.lane_nnz(i).max(axis=1)

    def layer_cycles(self, event_masks) -> np.ndarray:
        """(n_layers, B) cycles per layer from the event masks of one step."""
        return np.stack([LAYER_OVERHEAD + np.asarray(ev, dtype=np.int64) @ self.maxlen(i)
                         for i, ev in enumerate(event_masks)])

    def step_cycles(self, event_masks) -> np.ndarray:
        """(B,) cycles of one step, from ``DeltaNetwork.last_events``."""
        return STEP_OVERHEAD + self.layer_cycles(event_masks).sum(axis=0)

    def lane_work(self, event_masks) -> np.ndarray:
        """(B, L) useful MACs per lane for one step."""
        return sum(np.asarray(ev, dtype=np.int64) @ self.lane_nnz(i)
                   for i, ev in enumerate(event_masks))

    def busy_cycles(self, event_masks) -> np.ndarray:
        """(B,) MAC issue cycles (cycles in which the lanes are fed)."""
        return sum(np.asarray(ev, dtype=np.int64) @ self.maxlen(i)
                   for i, ev in enumerate(event_masks))

    def dense_cycles(self) -> int:
        """Cycles of a dense schedule (every column, no pruning) on the same lanes."""
        cfg = self.model.config
        per_layer = [LAYER_OVERHEAD + ly.n_in * -(-ly.n_out // self.lanes) for ly in cfg.layers]
        return STEP_OVERHEAD + int(sum(per_layer))

    def ideal_cycles(self, significant: np.ndarray) -> np.ndarray:
        """ceil(significant / L) summed over layers, from (n_layers, B) counts."""
        return (-(-np.asarray(significant) // self.lanes)).sum(axis=0)

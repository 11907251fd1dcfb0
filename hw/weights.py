"""Column-compressed per-lane weight layout (numpy only): what the MAC's memories hold.

Lane ``k`` of ``L`` owns the output rows ``r`` with ``r % L == k`` (local row ``r // L``). For
each layer ``l`` and each input column ``j`` with at least one non-zero weight, every lane
stores ``maxlen[l][j] = max_k nnz(lane k's slice of column j)`` consecutive words starting at
the same address ``start[l][j]``: the non-zero weights of its rows in increasing row order, then
invalid padding words. Layers follow each other in the address space (layer 0 first), columns in
increasing ``j``. All-zero columns take no words (``maxlen = 0``) and are never issued.

A word is ``valid`` (1 bit, MSB) | ``row`` (local row) | ``weight`` (two's complement, LSBs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pysim.cycles import lane_nnz

__all__ = ["WeightPlan"]


@dataclass(frozen=True, eq=False)
class WeightPlan:
    """Per-lane memory contents and the column table for ``weights`` on ``lanes`` lanes."""

    weights: tuple  # int64 (n_out, n_in) raw codes per layer
    lanes: int
    weight_width: int  # bits of a stored weight (two's complement)

    def __post_init__(self):
        ws = tuple(np.asarray(w, dtype=np.int64) for w in self.weights)
        object.__setattr__(self, "weights", ws)
        L = self.lanes
        lim = 1 << (self.weight_width - 1)
        for i, w in enumerate(ws):
            if w.ndim != 2:
                raise ValueError(f"WeightPlan: layer {i} weights must be 2-D, got {w.shape}")
            if w.size and (w.min() < -lim or w.max() >= lim):
                raise ValueError(f"WeightPlan: layer {i} weights do not fit "
                                 f"{self.weight_width} bits")
        starts, lens, nnzs = [], [], []
        entries = [[] for _ in range(L)]  # per lane: (valid, row, weight)
        addr = 0
        for w in ws:
            n_out, n_in = w.shape
            nz = w != 0
            ln = lane_nnz(nz, L)  # (n_in, L)
            maxlen = ln.max(axis=1) if L else np.zeros(n_in, dtype=np.int64)
            st = np.zeros(n_in, dtype=np.int64)
            for j in range(n_in):
                st[j] = addr
                for k in range(L):
                    rows = [r for r in range(k, n_out, L) if nz[r, j]]
                    for r in rows:
                        entries[k].append((1, r // L, int(w[r, j])))
                    entries[k].extend([(0, 0, 0)] * (int(maxlen[j]) - len(rows)))
                addr += int(maxlen[j])
            starts.append(st)
            lens.append(maxlen.astype(np.int64))
            nnzs.append(nz.sum(axis=0).astype(np.int64))
        object.__setattr__(self, "col_start", tuple(starts))
        object.__setattr__(self, "col_len", tuple(lens))
        object.__setattr__(self, "col_nnz", tuple(nnzs))
        object.__setattr__(self, "_entries", entries)
        object.__setattr__(self, "used_depth", addr)

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def depth(self) -> int:
        """Words per lane memory (at least 1)."""
        return max(1, self.used_depth)

    @property
    def rows_per_lane(self) -> int:
        return max(-(-w.shape[0] // self.lanes) for w in self.weights)

    @property
    def row_width(self) -> int:
        return max(1, (self.rows_per_lane - 1).bit_length())

    @property
    def word_width(self) -> int:
        return 1 + self.row_width + self.weight_width

    @property
    def col_base(self) -> tuple:
        """Index of each layer's first column in the flat column table."""
        out, b = [], 0
        for w in self.weights:
            out.append(b)
            b += w.shape[1]
        return tuple(out)

    @property
    def n_columns(self) -> int:
        return sum(w.shape[1] for w in self.weights)

    @property
    def max_len(self) -> int:
        return max([int(x.max()) if x.size else 0 for x in self.col_len] + [1])

    @property
    def max_nnz(self) -> int:
        return max([int(x.max()) if x.size else 0 for x in self.col_nnz] + [1])

    @property
    def table_fields(self) -> tuple:
        """Widths of the column-table fields ``(start, len, nnz)``."""
        return (max(1, self.depth.bit_length()), max(1, self.max_len.bit_length()),
                max(1, self.max_nnz.bit_length()))

    @property
    def table_width(self) -> int:
        return sum(self.table_fields)

    def column_mask(self, layer: int) -> tuple:
        """Which columns of ``layer`` hold a non-zero weight (the encoder's emit mask)."""
        return tuple(bool(v) for v in self.col_len[layer] > 0)

    def lane_words(self, lane: int) -> list:
        """Packed words of ``lane``'s memory, ``depth`` of them."""
        ww, rw = self.weight_width, self.row_width
        out = []
        for valid, row, wt in self._entries[lane]:
            out.append((valid << (ww + rw)) | (row << ww) | (wt & ((1 << ww) - 1)))
        return out + [0] * (self.depth - len(out))

    def lane_entries(self, lane: int) -> list:
        """``(valid, local_row, weight)`` of ``lane``'s used words (for tests and reports)."""
        return list(self._entries[lane])

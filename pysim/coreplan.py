"""Memory layout of the event-driven delta core (numpy only): what its memories hold.

The event-driven core (``hw/core.py``) and its cycle model (:mod:`pysim.corecycles`) both read
this plan, so the layout is written once. Terms:

* ``L`` MAC lanes. Lane ``k`` owns the output neurons ``o`` of every layer with ``o % L == k``;
  its *row* of neuron ``o`` is ``o // L``. A layer has ``rows = ceil(n_out / L)`` rows per lane.
* **Accumulator banks.** Every lane has two accumulator memories (banks): layer ``l`` lives in
  bank ``l % 2`` at bank address ``acc_base[l] + row``, so the MAC of layer ``l + 1`` and the
  examination of layer ``l`` never share a memory port. An accumulator word has
  ``acc_width`` bits; beside it (a 1-bit memory) its *dirty* bit: the MAC changed it in this
  step.
* **Weights.** One weight memory per lane holds every layer, column by column: column ``j`` of
  layer ``l`` takes ``len[l][j] = max_k nnz(lane k's slice of column j)`` words from
  ``start[l][j]`` in every lane (lane ``k``: the non-zero weights of its neurons in increasing
  row order, then invalid padding). All-zero columns take no words. A word is
  ``valid (MSB) | acc address (bank address of the neuron) | weight (two's complement)``.
* **Examination memories** (per lane, hidden layers ``l < N - 1`` only): ``x_hat`` of the next
  layer's input ``o`` (the neuron's activation as last propagated) and ``next`` (the
  ``start | len`` of column ``o`` of layer ``l + 1``), both at ``x_base[l] + row``.
* **Intake.** The observation arrives in words of ``P = obs_words`` codes; code ``p`` of word
  ``w`` is input ``j = w * P + p``. ``x_hat`` of layer 0 is one memory of ``ceil(n_in / P)``
  words of ``P`` codes; slot ``p`` has its own column table ``intake_col[p][w] = start | len``.
* **Bias.** Written into every accumulator at an episode start, row by row: init step ``g``
  (``g = row_base[l] + row``) writes, in every lane, the bias of its neuron of that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model

__all__ = ["MAX_LANES", "MAX_OBS_WORDS", "CorePlan", "bits"]

MAX_LANES = 64
MAX_OBS_WORDS = 256


def bits(n: int) -> int:
    """Unsigned bits that hold every value in ``0..n`` (at least 1)."""
    return max(1, int(n).bit_length())


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"CorePlan: {name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"CorePlan: {name} must be in {lo}..{hi}, got {value}")
    return int(value)


@dataclass(frozen=True, eq=False)
class CorePlan:
    """The memory contents of the event-driven core for ``model`` on ``lanes`` lanes, with
    observation words of ``obs_words`` codes. Build with :meth:`build`."""

    model: Model
    lanes: int
    obs_words: int
    rows: tuple  # per layer: ceil(n_out / L)
    acc_base: tuple  # per layer: first bank address of the layer in bank l % 2
    bank_depth: tuple  # (depth of bank 0, depth of bank 1), at least 1 each
    row_base: tuple  # per layer: first bias-init step of the layer
    x_base: tuple  # per hidden layer: first x_hat/next address of the layer
    col_start: tuple  # per layer: (n_in,) first weight word of each column
    col_len: tuple  # per layer: (n_in,) words of each column (0: all-zero column)
    lane_nnz: tuple  # per layer: (L, n_in) non-zero weights of each lane's slice of a column
    weight_words: tuple  # per lane: list of packed weight words
    weight_depth: int

    @classmethod
    def build(cls, model: Model, lanes: int, obs_words: int) -> CorePlan:
        if not isinstance(model, Model):
            raise TypeError(f"CorePlan: model must be a pysim Model, got {type(model).__name__}")
        L = _check_int("lanes", lanes, 1, MAX_LANES)
        P = _check_int("obs_words", obs_words, 1, MAX_OBS_WORDS)
        cfg = model.config
        for i, ly in enumerate(cfg.layers):
            if ly.kind != "dense":
                raise ValueError(f"CorePlan: layer {i} is {ly.kind!r}; the event-driven core "
                                 "runs dense layers (conv2d models run on the sequential core)")
        n = len(cfg.layers)
        rows = tuple(-(-ly.n_out // L) for ly in cfg.layers)
        acc_base, fill = [], [0, 0]
        for i in range(n):
            acc_base.append(fill[i % 2])
            fill[i % 2] += rows[i]
        row_base = tuple(int(v) for v in np.cumsum((0,) + rows[:-1]))
        x_base = tuple(int(v) for v in np.cumsum((0,) + rows[:-2]))[:n - 1]
        starts, lens, lnnz = [], [], []
        addr = 0
        for i in range(n):
            nz = model.w_raw[i] != 0  # (n_out, n_in)
            per_lane = np.stack([nz[k::L].sum(axis=0) for k in range(L)])  # (L, n_in)
            ln = per_lane.max(axis=0)
            st = addr + np.cumsum(ln) - ln
            addr += int(ln.sum())
            starts.append(st.astype(np.int64))
            lens.append(ln.astype(np.int64))
            lnnz.append(per_lane.astype(np.int64))
        plan = cls(model, L, P, rows, tuple(acc_base), (max(1, fill[0]), max(1, fill[1])),
                   row_base, x_base, tuple(starts), tuple(lens), tuple(lnnz), (), max(1, addr))
        object.__setattr__(plan, "weight_words", plan._pack_weights())
        return plan

    # ---- sizes and widths ---------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return len(self.config.layers)

    @property
    def acc_width(self) -> int:
        return max(ly.acc_bits for ly in self.config.layers)

    @property
    def weight_width(self) -> int:
        return max(ly.weight_fmt.width for ly in self.config.layers)

    @property
    def acc_addr_width(self) -> int:
        return bits(max(self.bank_depth) - 1)

    @property
    def word_width(self) -> int:
        return 1 + self.acc_addr_width + self.weight_width

    @property
    def start_width(self) -> int:
        return bits(self.weight_depth - 1)

    @property
    def len_width(self) -> int:
        return bits(max(int(v.max()) for v in self.col_len))

    @property
    def x_depth(self) -> int:
        """Words of the per-lane ``x_hat``/``next`` memories (at least 1)."""
        return max(1, sum(self.rows[:-1]))

    @property
    def x_width(self) -> int:
        """Bits of a stored hidden activation (the widest hidden output format)."""
        return max([ly.out_fmt.width for ly in self.config.layers[:-1]] + [1])

    @property
    def delta_width(self) -> int:
        """Bits of a delta of any layer's input (the widest input format + 1)."""
        return max(self.config.in_fmt(i).width for i in range(self.n_layers)) + 1

    @property
    def obs_depth(self) -> int:
        return -(-self.config.n_in // self.obs_words)

    @property
    def init_steps(self) -> int:
        """Bias-initialisation steps of an episode start (one row of every lane per step)."""
        return int(sum(self.rows))

    @property
    def group_slots(self) -> int:
        """Slots of an event group: ``P`` from the intake, ``L`` from an examination round."""
        return max(self.lanes, self.obs_words)

    @property
    def queue_depth(self) -> int:
        """Groups the event queue must hold: every intake word, or every round of a layer."""
        return max([self.obs_depth] + list(self.rows[:-1]) + [1])

    # ---- memory contents ----------------------------------------------------------------------
    def _pack_weights(self) -> tuple:
        L, ww, aw = self.lanes, self.weight_width, self.acc_addr_width
        words = [np.zeros(self.weight_depth, dtype=object) for _ in range(L)]
        for i in range(self.n_layers):
            w = self.model.w_raw[i]
            base = self.acc_base[i]
            for k in range(L):
                sub = w[k::L]  # rows of lane k, local row order
                cols, rws = np.nonzero(sub.T)  # sorted by column, then by row
                if not cols.size:
                    continue
                rank = np.arange(cols.size) - np.searchsorted(cols, cols, side="left")
                addr = self.col_start[i][cols] + rank
                vals = sub[rws, cols]
                for a, r, v in zip(addr.tolist(), rws.tolist(), vals.tolist()):
                    words[k][a] = ((1 << (aw + ww)) | ((base + r) << ww)
                                   | (int(v) & ((1 << ww) - 1)))
        return tuple([int(x) for x in wl] for wl in words)

    def column_word(self, layer: int, j) -> np.ndarray:
        """``start | len << start_width`` of column(s) ``j`` of ``layer`` (0 past the end)."""
        j = np.asarray(j, dtype=np.int64)
        n = self.config.layers[layer].n_in
        ok = (j >= 0) & (j < n)
        jj = np.where(ok, j, 0)
        st, ln = self.col_start[layer][jj], self.col_len[layer][jj]
        return np.where(ok & (ln > 0), st | (ln << self.start_width), 0)

    def intake_columns(self) -> list:
        """Per slot ``p``: the column words of inputs ``w * P + p`` for every word ``w``."""
        P, W = self.obs_words, self.obs_depth
        return [self.column_word(0, np.arange(W) * P + p).tolist() for p in range(P)]

    def next_columns(self) -> list:
        """Per lane: the ``next`` memory (column word of layer ``l + 1`` for each neuron)."""
        L = self.lanes
        out = []
        for k in range(L):
            words = []
            for i in range(self.n_layers - 1):
                o = np.arange(self.rows[i]) * L + k
                words += self.column_word(i + 1, o).tolist()
            out.append(words or [0])
        return out

    def bias_words(self) -> list:
        """Per lane: the bias (raw accumulator code) of its neuron at every init step."""
        L = self.lanes
        out = []
        for k in range(L):
            words = []
            for i in range(self.n_layers):
                b = np.asarray(self.model.b_raw[i], dtype=np.int64)
                o = np.arange(self.rows[i]) * L + k
                words += [int(b[x]) if x < b.size else 0 for x in o.tolist()]
            out.append(words)
        return out

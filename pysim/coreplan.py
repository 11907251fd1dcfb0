"""Memory layout of the event-driven delta core (numpy only): what its memories hold.

The event-driven core (``hw/core.py``) and its cycle model (:mod:`pysim.corecycles`) both read
this plan, so the layout is written once. Every layer is seen as a convolution
(:class:`Geometry`): ``C x H x W -> O x OH x OW``, kernel ``K``, stride ``S``, zero padding
``P``; a dense layer ``n_in -> n_out`` is the 1x1 convolution of a 1x1 image. Inputs and outputs
are flat CHW vectors (the flatten between a conv and a dense layer is the identity). Terms:

* ``L`` MAC lanes. Lane ``k`` owns the output channels ``o`` of every layer with
  ``o % L == k``; neuron ``(o, pix)`` (``pix = oy * OW + ox``) is the lane's *row*
  ``(o // L) * pixels + pix``. A layer has ``rows = ceil(O / L) * pixels`` rows per lane.
* **Accumulator banks.** Every lane has two accumulator memories (banks): layer ``l`` lives in
  bank ``l % 2`` at bank address ``acc_base[l] + row``, so the MAC of layer ``l + 1`` and the
  examination of layer ``l`` never share a memory port. An accumulator word has
  ``acc_width`` bits; beside it (a 1-bit memory) its *dirty* bit: the MAC changed it in this
  step.
* **Weights.** One weight memory per lane holds every layer, column by column: column
  ``col = (c * K + ky) * K + kx`` of layer ``l`` takes ``len[l][col] = max_k nnz(lane k's slice
  of the column)`` words from ``start[l][col]`` in every lane (lane ``k``: the non-zero weights
  of its channels in increasing channel order, then invalid padding). All-zero columns take no
  words. A word is ``valid (MSB) | acc address | weight (two's complement)``; the acc address is
  that of the channel's pixel 0, ``acc_base[l] + (o // L) * pixels``: the MAC adds the event's
  output pixel (0 for a dense layer).
* **Keys.** What the core stores about an input ``j`` of layer ``l`` to find its work: for a
  dense layer the column's ``start | len << start_width`` (0: empty column); for a conv layer
  the kernel positions of ``j = (c, y, x)`` that land on the output grid, ``ky = ky0 + a * S``,
  ``kx = kx0 + b * S`` for ``a < ny``, ``b < nx``, reaching output ``(oy0 - a, ox0 - b)``,
  packed as ``colbase | pixbase << cw | ny << (cw + pw) | nx << (cw + pw + nb)`` with
  ``colbase`` the *column table* address of ``(c, ky0, kx0)`` and ``pixbase = oy0 * OW + ox0``
  (0: no position reaches a non-empty column). The column table (one memory, every conv
  layer's columns from ``ctab_base[l]``) holds each column's ``start | len``.
* **Examination memories** (per lane, hidden layers ``l < N - 1`` only): ``x_hat`` of the next
  layer's input (the neuron's activation as last propagated) and ``next`` (the key of that
  input in layer ``l + 1``), both at ``x_base[l] + row``.
* **Intake.** The observation arrives in words of ``P = obs_words`` codes; code ``p`` of word
  ``w`` is input ``j = w * P + p``. ``x_hat`` of layer 0 is one memory of ``ceil(n_in / P)``
  words of ``P`` codes; beside it the keys of the word's ``P`` inputs.
* **Bias.** Written into every accumulator at an episode start, row by row: init step ``g``
  (``g = row_base[l] + row``) writes, in every lane, the bias of its neuron of that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model

__all__ = ["MAX_LANES", "MAX_OBS_WORDS", "CorePlan", "Geometry", "bits", "geometry", "pack_words"]

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
    def conv(self) -> bool:
        return not (self.H == self.W == self.K == self.OH == self.OW == 1)

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

    def axis_positions(self, n: int, n_out: int) -> np.ndarray:
        """(n, 3): for every input coordinate along an axis of ``n`` (output ``n_out``): the
        first kernel offset that reaches the output grid, its output coordinate, and how many
        offsets (``k0 + a * S``, output ``o0 - a``) reach it."""
        out = np.zeros((n, 3), dtype=np.int64)
        for y in range(n):
            ks = [a for a in range(self.K) if (y + self.P - a) % self.S == 0
                  and 0 <= (y + self.P - a) // self.S < n_out]
            if ks:
                out[y] = (ks[0], (y + self.P - ks[0]) // self.S, len(ks))
        return out

    def positions(self):
        """Per input ``j`` (CHW): the list of ``(col, pix)`` it reaches, in the issue order
        (offset rows ``a`` outer, ``b`` inner)."""
        ay = self.axis_positions(self.H, self.OH)
        ax = self.axis_positions(self.W, self.OW)
        out = []
        for c in range(self.C):
            for y in range(self.H):
                for x in range(self.W):
                    (ky0, oy0, ny), (kx0, ox0, nx) = ay[y], ax[x]
                    out.append([((c * self.K + ky0 + a * self.S) * self.K + kx0 + b * self.S,
                                 (oy0 - a) * self.OW + ox0 - b)
                                for a in range(ny) for b in range(nx)])
        return out


def geometry(layer) -> Geometry:
    if layer.kind == "dense":
        return Geometry(layer.n_in, 1, 1, layer.n_out, 1, 1, 0, 1, 1)
    if layer.kind == "conv2d":
        return Geometry(layer.in_ch, layer.in_h, layer.in_w, layer.out_ch, layer.kernel,
                        layer.stride, layer.padding, layer.out_h, layer.out_w)
    raise ValueError(f"unknown layer kind {layer.kind!r}")


@dataclass(frozen=True, eq=False)
class CorePlan:
    """The memory contents of the event-driven core for ``model`` on ``lanes`` lanes, with
    observation words of ``obs_words`` codes. Build with :meth:`build`."""

    model: Model
    lanes: int
    obs_words: int
    geometry: tuple  # per layer: Geometry
    rows: tuple  # per layer: ceil(O / L) * pixels
    acc_base: tuple  # per layer: first bank address of the layer in bank l % 2
    bank_depth: tuple  # (depth of bank 0, depth of bank 1), at least 1 each
    row_base: tuple  # per layer: first bias-init step of the layer
    x_base: tuple  # per hidden layer: first x_hat/next address of the layer
    col_start: tuple  # per layer: (n_cols,) first weight word of each column
    col_len: tuple  # per layer: (n_cols,) words of each column (0: all-zero column)
    lane_nnz: tuple  # per layer: (L, n_cols) non-zero weights of each lane's slice of a column
    ctab_base: tuple  # per layer: first column-table address (conv layers; 0 for dense)
    weight_words: tuple  # per lane: list of packed weight words
    weight_depth: int

    @classmethod
    def build(cls, model: Model, lanes: int, obs_words: int) -> CorePlan:
        if not isinstance(model, Model):
            raise TypeError(f"CorePlan: model must be a pysim Model, got {type(model).__name__}")
        L = _check_int("lanes", lanes, 1, MAX_LANES)
        P = _check_int("obs_words", obs_words, 1, MAX_OBS_WORDS)
        cfg = model.config
        n = len(cfg.layers)
        geo = tuple(geometry(ly) for ly in cfg.layers)
        rows = tuple(-(-g.O // L) * g.pixels for g in geo)
        acc_base, fill = [], [0, 0]
        for i in range(n):
            acc_base.append(fill[i % 2])
            fill[i % 2] += rows[i]
        row_base = tuple(int(v) for v in np.cumsum((0,) + rows[:-1]))
        x_base = tuple(int(v) for v in np.cumsum((0,) + rows[:-2]))[:n - 1]
        starts, lens, lnnz, cbase = [], [], [], []
        addr, caddr = 0, 0
        for i in range(n):
            g = geo[i]
            nz = (model.w_raw[i] != 0).reshape(g.O, g.n_cols)
            per_lane = np.stack([nz[k::L].sum(axis=0) for k in range(L)])  # (L, n_cols)
            ln = per_lane.max(axis=0)
            st = addr + np.cumsum(ln) - ln
            addr += int(ln.sum())
            starts.append(st.astype(np.int64))
            lens.append(ln.astype(np.int64))
            lnnz.append(per_lane.astype(np.int64))
            cbase.append(caddr if g.conv else 0)
            caddr += g.n_cols if g.conv else 0
        plan = cls(model, L, P, geo, rows, tuple(acc_base),
                   (max(1, fill[0]), max(1, fill[1])), row_base, x_base, tuple(starts),
                   tuple(lens), tuple(lnnz), tuple(cbase), (), max(1, addr))
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
    def has_conv(self) -> bool:
        return any(g.conv for g in self.geometry)

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
    def ctab_depth(self) -> int:
        """Words of the column table (every conv layer's columns; at least 1)."""
        return max(1, sum(g.n_cols for g in self.geometry if g.conv))

    @property
    def pix_width(self) -> int:
        """Bits of an output pixel index (``pix = oy * OW + ox``)."""
        return bits(max(g.pixels for g in self.geometry) - 1)

    @property
    def count_width(self) -> int:
        """Bits of a conv key's ``ny`` / ``nx`` (offsets per axis that reach the grid)."""
        return bits(max([-(-g.K // g.S) for g in self.geometry if g.conv] + [1]))

    @property
    def key_width(self) -> int:
        """Bits of an input's key (the wider of the dense and the conv form)."""
        dense = self.start_width + self.len_width
        conv = bits(self.ctab_depth - 1) + self.pix_width + 2 * self.count_width
        return max(dense, conv if self.has_conv else 0)

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

    # ---- neurons ------------------------------------------------------------------------------
    def neuron(self, layer: int, lane: int, row) -> np.ndarray:
        """Flat (CHW) output index of lane ``lane``'s row(s) ``row`` of ``layer`` (may be
        ``>= n_out`` for the padding rows of a lane with fewer channels)."""
        g = self.geometry[layer]
        row = np.asarray(row, dtype=np.int64)
        return ((row // g.pixels) * self.lanes + lane) * g.pixels + row % g.pixels

    def real_rows(self, layer: int, lane: int) -> int:
        """Rows of ``lane`` holding a neuron of ``layer`` (they come first)."""
        g = self.geometry[layer]
        return -(-(g.O - lane) // self.lanes) * g.pixels if lane < g.O else 0

    # ---- memory contents ----------------------------------------------------------------------
    def _pack_weights(self) -> tuple:
        L, ww, aw = self.lanes, self.weight_width, self.acc_addr_width
        words = [np.zeros(self.weight_depth, dtype=object) for _ in range(L)]
        for i in range(self.n_layers):
            g = self.geometry[i]
            w = self.model.w_raw[i].reshape(g.O, g.n_cols)
            base = self.acc_base[i]
            for k in range(L):
                sub = w[k::L]  # channels of lane k, local channel order
                cols, chs = np.nonzero(sub.T)  # sorted by column, then by channel
                if not cols.size:
                    continue
                rank = np.arange(cols.size) - np.searchsorted(cols, cols, side="left")
                addr = self.col_start[i][cols] + rank
                vals = sub[chs, cols]
                for a, r, v in zip(addr.tolist(), chs.tolist(), vals.tolist()):
                    words[k][a] = ((1 << (aw + ww)) | ((base + r * g.pixels) << ww)
                                   | (int(v) & ((1 << ww) - 1)))
        return tuple([int(x) for x in wl] for wl in words)

    def column_word(self, layer: int, col) -> np.ndarray:
        """``start | len << start_width`` of column(s) ``col`` of ``layer`` (0 past the end
        and for empty columns)."""
        col = np.asarray(col, dtype=np.int64)
        n = self.geometry[layer].n_cols
        ok = (col >= 0) & (col < n)
        cc = np.where(ok, col, 0)
        st, ln = self.col_start[layer][cc], self.col_len[layer][cc]
        return np.where(ok & (ln > 0), st | (ln << self.start_width), 0)

    def column_table(self) -> list:
        """The column table: ``start | len`` of every conv layer's columns, from
        ``ctab_base[l]`` (one zero word when there is no conv layer)."""
        out = []
        for i, g in enumerate(self.geometry):
            if g.conv:
                out += self.column_word(i, np.arange(g.n_cols)).tolist()
        return out or [0]

    def keys(self, layer: int) -> np.ndarray:
        """``(n_in,)`` key of every input of ``layer`` (see the module docstring)."""
        g = self.geometry[layer]
        if not g.conv:
            return self.column_word(layer, np.arange(g.n_in)).astype(np.int64)
        cw = bits(self.ctab_depth - 1)
        pw, nb = self.pix_width, self.count_width
        ay = g.axis_positions(g.H, g.OH)
        ax = g.axis_positions(g.W, g.OW)
        lens = self.col_len[layer]
        out = np.zeros(g.n_in, dtype=np.int64)
        j = 0
        for c in range(g.C):
            for y in range(g.H):
                (ky0, oy0, ny) = ay[y]
                for x in range(g.W):
                    (kx0, ox0, nx) = ax[x]
                    col0 = (c * g.K + ky0) * g.K + kx0
                    cols = [col0 + (a * g.K + b) * g.S for a in range(ny) for b in range(nx)]
                    if cols and lens[cols].any():
                        out[j] = ((self.ctab_base[layer] + col0)
                                  | ((oy0 * g.OW + ox0) << cw) | (int(ny) << (cw + pw))
                                  | (int(nx) << (cw + pw + nb)))
                    j += 1
        return out

    def intake_keys(self) -> list:
        """Per slot ``p``: the keys of inputs ``w * P + p`` of layer 0 for every word ``w``."""
        P, W, n_in = self.obs_words, self.obs_depth, self.config.n_in
        k0 = self.keys(0)
        j = np.arange(W) * P
        return [np.where(j + p < n_in, k0[np.minimum(j + p, n_in - 1)], 0).tolist()
                for p in range(P)]

    def next_keys(self) -> list:
        """Per lane: the ``next`` memory (key in layer ``l + 1`` of each hidden neuron)."""
        L = self.lanes
        out = []
        keys = [self.keys(i + 1) for i in range(self.n_layers - 1)]
        for k in range(L):
            words = []
            for i in range(self.n_layers - 1):
                o = self.neuron(i, k, np.arange(self.rows[i]))
                n_out = self.config.layers[i].n_out
                words += np.where(o < n_out, keys[i][np.minimum(o, n_out - 1)], 0).tolist()
            out.append(words or [0])
        return out

    def bias_words(self) -> list:
        """Per lane: the bias (raw accumulator code) of its neuron at every init step."""
        L = self.lanes
        out = []
        for k in range(L):
            words = []
            for i in range(self.n_layers):
                g = self.geometry[i]
                b = np.asarray(self.model.b_raw[i], dtype=np.int64)
                o = (np.arange(self.rows[i]) // g.pixels) * L + k
                words += [int(b[x]) if x < b.size else 0 for x in o.tolist()]
            out.append(words)
        return out


def pack_words(x_raw, n_in: int, obs_words: int, width: int) -> list:
    """``n_in`` raw codes -> ``ceil(n_in / obs_words)`` words of ``obs_words`` codes each:
    code ``p`` of word ``a`` is input ``a * obs_words + p``, in bits ``[p*width, (p+1)*width)``
    (two's complement); the last word's missing codes are 0."""
    x = np.asarray(x_raw, dtype=np.int64).ravel()
    if x.size != n_in:
        raise ValueError(f"observation has {x.size} codes, the design takes {n_in}")
    mask = (1 << width) - 1
    out = []
    for a in range(0, n_in, obs_words):
        out.append(sum((int(v) & mask) << (p * width)
                       for p, v in enumerate(x[a:a + obs_words].tolist())))
    return out

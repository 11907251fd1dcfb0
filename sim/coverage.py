"""Functional coverage of the closed loop: which cases of the event-driven core a run exercised.

:meth:`sim.coreloop.CoreBench.run` (``coverage=True``) samples a :class:`Coverage` once per
closed-loop step with a :class:`StepRecord`: the *reference's* state around the step (layer-0
input codes, every layer's ``x_hat`` before the step, the event masks, the accumulators after
it) and the figures the *hardware* reported (``cycles``, per-layer ``macs``). Every other
quantity is derived from those and from the memory layout (:class:`pysim.coreplan.CorePlan`),
so the bins count what the run drove through the design, whichever engine ran it. Bins are
cocotb-coverage ``CoverPoint`` s (one trie per :class:`Coverage`, under its own root name); a
bin's hit count is the number of **steps** in which it was hit.

Bin groups (``l<i>``: layer ``i``; "examined": the neurons whose accumulator the MAC wrote in
this step - every neuron at an episode start or after a threshold write):

* ``passes``: ``episode start`` (a full pass), ``rescan after threshold write``, ``delta
  step``.
* ``threshold_writes``: ``layer <i>``, a run-time write of that layer's threshold register
  before the step (``StepRecord.threshold_writes``).
* ``events.l<i>``: events of the step: ``0``, ``1``, ``2-3``, ``4-7``, ``8-15``, ``16+``.
* ``collisions.l<i>`` (steps with 2 or more events whose columns hold weights): the most
  writes one accumulator address of one lane took in the step: ``none`` (every address at
  most once), ``2``, ``3+``. Lane
  ``k`` owns the output channels ``o % L == k``; an event's column issues one weight word per
  cycle in every lane (its non-zero channels of the lane in channel order), so two events write
  the same address exactly when both reach the same neuron.
* ``collision_gap.l<i>``: the distance in issue words (= cycles while groups issue back to
  back, as every layer-0 group does) between two consecutive writes of one address: ``1``
  (back to back: the read-modify-write needs the value still in flight), ``2``, ``3+``. The
  issue order is the core's: layer 0 in input order, a hidden layer in the order its producer's
  examination rounds deliver its events (the dirty lists in first-touch order).
* ``saturation.l<i>`` (layers whose ``out_fmt`` saturates): an examined neuron's requantized
  value clipped at the format's ``max`` or ``min``.
* ``wrap.l<i>``: ``accumulator``, an examined accumulator that wrapped (the exact
  ``b + W @ x_hat`` differs from the stored code); ``activation``, a requantized value that
  wrapped (layers whose ``out_fmt`` wraps).
* ``threshold.l<i>`` (delta steps; the inputs the core compared: the codes of the observation
  words that changed - what the bench writes by default, ``writes="changed"`` - or the examined
  neurons of the layer below): ``fire |d| = theta``,
  ``hold |d| = theta - 1``, ``fire |d| > theta``, ``hold 0 < |d| < theta - 1``.
* ``cycles``: the ``cycles`` port over the MAC-bound ideal ``sum_l ceil(macs_l / L)``:
  ``no MACs`` (ideal 0), ``<= 1.25x``, ``1.25-2x``, ``2-4x``, ``4-8x``, ``> 8x``.

A bin that no run of the model can hit is left out of the percentages and listed with its
reason (:meth:`Coverage.unreachable`): an events bin above the layer's input count, a collision
no weight row allows (or, for ``none``, a layer whose every two non-empty columns share an
output), a saturation or wrap that the interval bound of the accumulators (bias
plus the weights times the input ranges, layer by layer) rules out or the overflow mode
excludes, a threshold case the threshold excludes (``theta = 1`` holds nothing).
The summary (:meth:`Coverage.summary`) adds what an empty bin needs explained: per layer the
most events of one step and the extremes of the examined neurons' requantized values.
:func:`merge` adds summaries of several runs; :func:`report` renders one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from cocotb_coverage.coverage import CoverPoint, coverage_db

from ..pysim.coreplan import CorePlan
from ..pysim.fixed import shift_round
from ..pysim.network import conv2d_im2col

__all__ = ["Coverage", "StepRecord", "merge", "report"]

#: events per step: (label, lowest, highest or None)
EVENT_BINS = (("0", 0, 0), ("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8-15", 8, 15),
              ("16+", 16, None))
#: cycles over the MAC-bound ideal: (label, above, at most)
CYCLE_BINS = (("<= 1.25x", 0.0, 1.25), ("1.25-2x", 1.25, 2.0), ("2-4x", 2.0, 4.0),
              ("4-8x", 4.0, 8.0), ("> 8x", 8.0, np.inf))
NO_MACS = "no MACs"
COLLISION_BINS = ("none", "2", "3+")
GAP_BINS = ("1", "2", "3+")
FIRE_AT, HOLD_BELOW, FIRE_ABOVE, HOLD_FAR = ("fire |d| = theta", "hold |d| = theta - 1",
                                             "fire |d| > theta", "hold 0 < |d| < theta - 1")
START, RESCAN, DELTA = "episode start", "rescan after threshold write", "delta step"
#: why a bin stayed empty when no run-time threshold write was sampled
NO_WRITES = ("no run-time threshold write was sampled (the closed-loop bench, "
             "sim.coreloop.CoreBench.run, makes none)")

_roots = itertools.count()


@dataclass(frozen=True)
class StepRecord:
    """One closed-loop step as the coverage model samples it (raw codes, one env).

    ``x_raw``: layer-0 input codes; ``x_hat``: per layer, ``x_hat`` *before* the step;
    ``events``: per layer, the event mask; ``acc``: per layer, the accumulator codes *after*
    the step; ``cycles``, ``macs``: what the hardware reported; ``threshold_writes``:
    ``(layer, raw)`` written since the previous step."""

    first: bool
    x_raw: np.ndarray
    x_hat: tuple
    events: tuple
    acc: tuple
    cycles: int | None = None
    macs: tuple = ()
    threshold_writes: tuple = ()

    @classmethod
    def from_reference(cls, ref, x_raw, x_hat_before, first: bool, hw: dict,
                       threshold_writes=()) -> StepRecord:
        """From ``DeltaNetwork`` ``ref`` (batch 1) just after its step, ``x_hat_before`` (its
        ``x_hat`` just before) and the hardware's step dict (``cycles``, ``macs``)."""
        return cls(bool(first), np.asarray(x_raw, dtype=np.int64).reshape(-1),
                   tuple(np.asarray(v).reshape(-1) for v in x_hat_before),
                   tuple(np.asarray(v, dtype=bool).reshape(-1) for v in ref.last_events),
                   tuple(np.asarray(v).reshape(-1) for v in ref.acc),
                   hw.get("cycles"), tuple(int(v) for v in hw.get("macs") or ()),
                   tuple((int(a), int(b)) for a, b in threshold_writes))


def _bucket(n: int, label: str) -> bool:
    """``n`` lies in events bin ``label``."""
    _, lo, hi = next(b for b in EVENT_BINS if b[0] == label)
    return n >= lo and (hi is None or n <= hi)


def _ratio_bin(ratio: float, label: str) -> bool:
    """``ratio`` (cycles / ideal; None: no MACs) lies in cycles bin ``label``."""
    if label == NO_MACS:
        return ratio is None
    if ratio is None:
        return False
    _, lo, hi = next(b for b in CYCLE_BINS if b[0] == label)
    return lo < ratio <= hi


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _sink(value) -> None:
    """The function the coverage points decorate: sampling is all they do."""


class _Layer:
    """What the coverage model needs of one layer: formats, weights, and its issue stream
    (per input: the ``(lane, word offset, row)`` of every weight word its events issue)."""

    def __init__(self, plan: CorePlan, i: int):
        cfg, model = plan.config, plan.model
        self.ly = ly = cfg.layers[i]
        self.geo = g = plan.geometry[i]
        self.out_fmt = ly.out_fmt
        self.acc_frac = cfg.acc_fmt(i).frac_bits
        self.acc_bits = ly.acc_bits
        self.relu = ly.activation == "relu"
        self.w = np.asarray(model.w_raw[i], dtype=np.int64)
        b = np.asarray(model.b_raw[i], dtype=np.int64)
        self.b = b if ly.kind == "dense" else np.repeat(b, g.pixels)
        self.wmat = self.w.reshape(g.O, g.n_cols)
        L = plan.lanes
        lens = plan.col_len[i]
        self.work = plan.keys(i) != 0
        positions = g.positions() if g.conv else [[(j, 0)] for j in range(g.n_in)]
        nz = self.wmat != 0
        lane_chs = [[np.nonzero(nz[k::L, c])[0] for c in range(g.n_cols)] for k in range(L)]
        self.cost = np.zeros(g.n_in, dtype=np.int64)
        self.words = []
        for j, pos in enumerate(positions):
            lanes, offs, rows, t = [], [], [], 0
            for col, pix in pos:
                for k in range(L):
                    chs = lane_chs[k][col]
                    lanes.append(np.full(chs.size, k, dtype=np.int64))
                    offs.append(t + np.arange(chs.size, dtype=np.int64))
                    rows.append(chs * g.pixels + pix)
                t += max(1, int(lens[col])) if g.conv else int(lens[col])
            if self.work[j]:
                self.cost[j] = t
            self.words.append((_cat(lanes), _cat(offs), _cat(rows)))
        #: the most non-zero weights of one output (the most writes one address can take)
        self.row_nnz = int(nz.sum(axis=1).max()) if nz.size else 0
        #: two inputs with work whose columns reach no common output exist (a dense layer;
        #: a conv layer: assumed)
        self.disjoint = True
        if not g.conv:
            a = nz[:, self.work].astype(np.int64)
            shared = (a.T @ a) > 0
            np.fill_diagonal(shared, True)
            self.disjoint = not bool(shared.all())

    def linear(self, x: np.ndarray) -> np.ndarray:
        """Exact ``W @ x`` of raw codes (int64)."""
        if self.ly.kind == "dense":
            return self.w @ x
        y = conv2d_im2col(x.astype(np.float64)[None], self.wmat.astype(np.float64), self.ly)
        return np.rint(y[0]).astype(np.int64)

    def requantize(self, acc: np.ndarray) -> tuple:
        """``(value before overflow handling, activation)`` of accumulator codes."""
        pre = shift_round(acc, self.acc_frac - self.out_fmt.frac_bits, self.out_fmt.rounding)
        y = self.out_fmt.handle_overflow(pre)
        return pre, (np.maximum(y, 0) if self.relu else y)

    def stream(self, order: np.ndarray) -> tuple:
        """``(lane, slot, row)`` of every weight word the events ``order`` issue, in order
        (``slot``: issue word of the layer's step)."""
        if not len(order):
            z = np.zeros(0, dtype=np.int64)
            return z, z, z
        base = np.cumsum(self.cost[order]) - self.cost[order]
        parts = [self.words[j] for j in order]
        lane = np.concatenate([p[0] for p in parts])
        slot = np.concatenate([p[1] + b for p, b in zip(parts, base)])
        row = np.concatenate([p[2] for p in parts])
        return lane, slot, row


class Coverage:
    """Functional coverage of closed-loop steps of ``model`` on ``lanes`` lanes with
    observation words of ``obs_words`` codes (see the module docstring for the bins)."""

    def __init__(self, model, lanes: int, obs_words: int | None = None):
        cfg = model.config
        self.plan = plan = CorePlan.build(model, lanes, obs_words or min(cfg.n_in, 8))
        self.lanes = plan.lanes
        self.n_layers = n = len(cfg.layers)
        self.layers = [_Layer(plan, i) for i in range(n)]
        self.theta = [max(cfg.threshold_raw(i), 1) for i in range(n)]
        self.root = f"deltanet_coverage_{next(_roots)}"
        self.steps = 0
        self.cycles_below_ideal = 0
        #: per layer: the extremes of the examined neurons' requantized values (before
        #: overflow handling), to say how far from saturation a run stayed
        self.peaks = [None] * n
        #: per layer: the most events of one step
        self.most_events = [0] * n
        self._prev_x0 = None
        self._unreachable = {}
        self._samplers = {}
        self._points = {}
        self._define(n)

    # ---- the bins ---------------------------------------------------------------------------
    def _point(self, group: str, labels, *, rel=None, unreachable=None) -> None:
        """A coverage point of ``labels`` minus the ``unreachable`` ones (``{label: reason}``).
        Sampled with a value and ``rel(value, label)``, or by default with the set of labels
        hit in the step."""
        unreachable = {k: v for k, v in (unreachable or {}).items() if v}
        if unreachable:
            self._unreachable[group] = unreachable
        bins = [b for b in labels if b not in unreachable]
        if not bins:
            return
        name = f"{self.root}.{group}"
        cp = CoverPoint(name, bins=bins, rel=rel or (lambda hit, b: b in hit),
                        inj=rel is not None)
        self._samplers[group] = cp(_sink)
        self._points[group] = coverage_db[name]

    def _define(self, n: int) -> None:
        self._point("passes", (START, RESCAN, DELTA))
        self._point("threshold_writes", [f"layer {i}" for i in range(n)])
        for i, bound in enumerate(self._bounds()):
            self._layer_points(i, *bound)
        self._point("cycles", [NO_MACS] + [b[0] for b in CYCLE_BINS], rel=_ratio_bin)

    def _layer_points(self, i: int, acc_lo: int, acc_hi: int, in_lo: int, in_hi: int):
        """The bins of layer ``i``, its accumulators bounded by ``[acc_lo, acc_hi]`` and its
        inputs by ``[in_lo, in_hi]`` (:meth:`_bounds`)."""
        lay = self.layers[i]
        g = lay.geo
        self._point(f"events.l{i}", [b[0] for b in EVENT_BINS], rel=_bucket,
                    unreachable={lab: f"layer {i} has {g.n_in} inputs"
                                 for lab, lo, _ in EVENT_BINS if lo > g.n_in})
        why = (f"no output of layer {i} has two non-zero weights" if lay.row_nnz < 2
               else f"layer {i} has {g.n_in} input(s)" if g.n_in < 2 else None)
        self._point(f"collisions.l{i}", COLLISION_BINS,
                    unreachable={"none": why or (None if lay.disjoint else
                                                 f"every two non-empty columns of layer {i} "
                                                 "share an output"),
                                 "2": why,
                                 "3+": why or (f"no output of layer {i} has three non-zero "
                                               "weights" if lay.row_nnz < 3 else None)})
        self._point(f"collision_gap.l{i}", GAP_BINS,
                    unreachable=dict.fromkeys(GAP_BINS, why))
        pre_lo, _ = lay.requantize(np.array([acc_lo]))
        pre_hi, _ = lay.requantize(np.array([acc_hi]))
        pre_lo, pre_hi = int(pre_lo[0]), int(pre_hi[0])
        f = lay.out_fmt
        acc_max = 1 << (lay.acc_bits - 1)
        acc_fits = -acc_max <= acc_lo and acc_hi < acc_max
        inside = (f"interval bound: accumulators in [{acc_lo}, {acc_hi}] requantize to "
                  f"[{pre_lo}, {pre_hi}], inside {f} [{f.min_raw}, {f.max_raw}]")
        if f.overflow == "sat":
            why_max = None if (pre_hi > f.max_raw or not acc_fits) else inside
            why_min = ("ReLU: a value below 0 becomes 0, never the format's min"
                       if lay.relu else
                       None if (pre_lo < f.min_raw or not acc_fits) else inside)
        else:
            why_max = why_min = f"{f} wraps (overflow 'wrap'): it never saturates"
        self._point(f"saturation.l{i}", ("max", "min"),
                    unreachable={"max": why_max, "min": why_min})
        why_act = (f"{f} saturates (overflow 'sat')" if f.overflow == "sat" else
                   None if (pre_hi > f.max_raw or pre_lo < f.min_raw or not acc_fits)
                   else inside)
        why_acc = None if not acc_fits else (
            f"interval bound: accumulators in [{acc_lo}, {acc_hi}] fit {lay.acc_bits} "
            "bits")
        self._point(f"wrap.l{i}", ("accumulator", "activation"),
                    unreachable={"accumulator": why_acc, "activation": why_act})
        th = self.theta[i]
        span = in_hi - in_lo
        self._point(f"threshold.l{i}", (FIRE_AT, HOLD_BELOW, FIRE_ABOVE, HOLD_FAR),
                    unreachable={
                        FIRE_AT: (f"theta {th} exceeds the input range's span {span}"
                                  if th > span else None),
                        HOLD_BELOW: ("theta 1 (threshold 0): every non-zero change fires"
                                     if th == 1 else None),
                        FIRE_ABOVE: (f"theta {th} >= the input range's span {span}"
                                     if th >= span else None),
                        HOLD_FAR: (f"theta {th}: no |d| with 0 < |d| < theta - 1"
                                   if th <= 2 else None)})

    def _bounds(self) -> list:
        """Per layer ``(acc_lo, acc_hi, in_lo, in_hi)``: interval bounds of the accumulators
        (bias + weights times the input ranges) and of the inputs, layer by layer (a conv
        layer: the widest input range for every input, an upper bound at the borders)."""
        cfg = self.plan.config
        lo = np.full(cfg.n_in, cfg.input_fmt.min_raw, dtype=np.int64)
        hi = np.full(cfg.n_in, cfg.input_fmt.max_raw, dtype=np.int64)
        out = []
        for lay in self.layers:
            w = lay.wmat
            if lay.ly.kind == "dense":
                a, b = w * lo[None, :], w * hi[None, :]
            else:
                a, b = w * min(lo), w * max(hi)
            up = np.maximum(a, b).sum(axis=1)
            down = np.minimum(a, b).sum(axis=1)
            if lay.ly.kind != "dense":
                up, down = np.repeat(up, lay.geo.pixels), np.repeat(down, lay.geo.pixels)
            acc_hi, acc_lo = lay.b + up, lay.b + down
            out.append((int(acc_lo.min()), int(acc_hi.max()), int(lo.min()), int(hi.max())))
            f = lay.out_fmt
            acc_max = 1 << (lay.acc_bits - 1)
            if f.overflow == "wrap" or acc_lo.min() < -acc_max or acc_hi.max() >= acc_max:
                lo = np.full(lay.geo.n_out, max(f.min_raw, 0) if lay.relu else f.min_raw)
                hi = np.full(lay.geo.n_out, f.max_raw)
            else:  # requantize, saturate and ReLU are monotonic
                lo, hi = lay.requantize(acc_lo)[1], lay.requantize(acc_hi)[1]
        return out

    # ---- sampling ---------------------------------------------------------------------------
    def _hit(self, group: str, value) -> None:
        if group in self._samplers:
            self._samplers[group](value)

    def sample(self, step: StepRecord) -> None:
        """Sample one closed-loop step (see :class:`StepRecord`)."""
        for layer, raw in step.threshold_writes:
            self.theta[layer] = max(int(raw), 1)
        rescan = bool(step.threshold_writes)
        full = step.first or rescan
        self.steps += 1
        self._hit("passes", {START if step.first else RESCAN if rescan else DELTA})
        self._hit("threshold_writes", {f"layer {a}" for a, _ in step.threshold_writes})
        x = np.asarray(step.x_raw, dtype=np.int64)
        compared = self._written(x, full)
        order = np.nonzero(step.events[0] & self.layers[0].work)[0]
        for i, lay in enumerate(self.layers):
            ev = np.asarray(step.events[i], dtype=bool)
            xh = np.asarray(step.x_hat[i], dtype=np.int64)
            acc = np.asarray(step.acc[i], dtype=np.int64)
            self._hit(f"events.l{i}", int(ev.sum()))
            self.most_events[i] = max(self.most_events[i], int(ev.sum()))
            if not step.first:  # an episode start ignores the thresholds
                self._thresholds(i, np.abs(x - xh), ev, compared)
            lane, slot, row = lay.stream(order)
            if len(order) >= 2:
                self._collisions(i, lane, slot, row)
            nid = self._examined(i, full, lane, row)
            examined = np.zeros(lay.geo.n_out, dtype=bool)
            examined[nid[nid >= 0]] = True
            pre, y = lay.requantize(acc)
            over = examined & (pre > lay.out_fmt.max_raw)
            under = examined & (pre < lay.out_fmt.min_raw)
            if examined.any():
                seen = (int(pre[examined].min()), int(pre[examined].max()))
                old = self.peaks[i] or seen
                self.peaks[i] = (min(old[0], seen[0]), max(old[1], seen[1]))
            if lay.out_fmt.overflow == "sat":
                self._hit(f"saturation.l{i}",
                          {lab for lab, hit in (("max", over.any()),
                                                ("min", under.any() and not lay.relu)) if hit})
            exact = lay.b + lay.linear(np.where(ev, x, xh))  # b + W @ x_hat after the step
            self._hit(f"wrap.l{i}", {lab for lab, hit in (
                ("accumulator", (examined & (exact != acc)).any()),
                ("activation", lay.out_fmt.overflow == "wrap" and (over | under).any())) if hit})
            if i + 1 < self.n_layers:
                # the next layer's events in the order the examination rounds deliver them:
                # rounds in order, lanes in order within a round
                safe = np.where(nid >= 0, nid, 0)
                order = safe[(nid >= 0) & step.events[i + 1][safe] & self.layers[i + 1].work[safe]]
                compared = examined
            x = y
        if step.cycles is not None and step.macs:
            ideal = int(sum(-(-m // self.lanes) for m in step.macs))
            if ideal and step.cycles < ideal:
                self.cycles_below_ideal += 1
            self._hit("cycles", step.cycles / ideal if ideal else None)

    def _written(self, x0: np.ndarray, full: bool) -> np.ndarray:
        """The layer-0 inputs the core compares in this step: every one on a full pass, else
        every code of the observation words whose codes changed (the words written)."""
        prev, self._prev_x0 = self._prev_x0, x0
        if full or prev is None:
            return np.ones(x0.size, dtype=bool)
        P = self.plan.obs_words
        pad = -(-x0.size // P) * P - x0.size
        chg = np.pad(x0 != prev, (0, pad)).reshape(-1, P).any(axis=1)
        return np.repeat(chg, P)[:x0.size]

    def _thresholds(self, i: int, ad: np.ndarray, ev: np.ndarray, compared: np.ndarray):
        """Threshold edge cases of layer ``i``: ``ad`` = ``|x - x_hat|`` before the step."""
        th = self.theta[i]
        seen, held = compared & ev, compared & ~ev & (ad > 0)
        self._hit(f"threshold.l{i}", {lab for lab, hit in (
            (FIRE_AT, seen & (ad == th)), (FIRE_ABOVE, seen & (ad > th)),
            (HOLD_BELOW, held & (ad == th - 1)), (HOLD_FAR, held & (ad < th - 1))) if hit.any()})

    def _collisions(self, i: int, lane, slot, row) -> None:
        """Writes of one accumulator address of one lane in layer ``i``'s issue stream."""
        key = lane * (1 << 32) + row
        srt = np.lexsort((slot, key))
        k, s = key[srt], slot[srt]
        gaps = (s[1:] - s[:-1])[k[1:] == k[:-1]]
        _, counts = np.unique(k, return_counts=True)
        most = int(counts.max()) if counts.size else 0
        self._hit(f"collisions.l{i}", {"none" if most < 2 else "2" if most == 2 else "3+"})
        self._hit(f"collision_gap.l{i}",
                  {"1" if v == 1 else "2" if v == 2 else "3+" for v in gaps.tolist()})

    def _examined(self, i: int, full: bool, lane, row) -> np.ndarray:
        """``(rounds, L)`` neurons of layer ``i`` its examination takes (-1: none): every row
        on a full pass, else each lane's dirty list (rows in first-touch order)."""
        plan, L, n_out = self.plan, self.lanes, self.layers[i].geo.n_out
        if full:
            nid = np.stack([plan.neuron(i, k, np.arange(plan.rows[i])) for k in range(L)],
                           axis=1)
        else:
            dirty = []
            for k in range(L):
                u, first_at = np.unique(row[lane == k], return_index=True)
                dirty.append(u[np.argsort(first_at, kind="stable")])
            nid = np.full((max(len(d) for d in dirty), L), n_out, dtype=np.int64)
            for k, d in enumerate(dirty):
                nid[:len(d), k] = plan.neuron(i, k, d)
        return np.where(nid < n_out, nid, -1)

    # ---- results ----------------------------------------------------------------------------
    def bins(self) -> dict:
        """``{group: {bin: steps that hit it}}`` of the reachable bins."""
        return {g: {str(k): int(v) for k, v in cp.detailed_coverage.items()}
                for g, cp in self._points.items()}

    def unreachable(self) -> dict:
        """``{group: {bin: why no run can hit it}}``."""
        return {g: dict(v) for g, v in self._unreachable.items()}

    def summary(self) -> dict:
        """Bins, unreachable bins, notes on empty ones, percentages: JSON-ready, mergeable."""
        peaks = {}
        for i, (lay, pk) in enumerate(zip(self.layers, self.peaks)):
            if pk is not None:
                f = lay.out_fmt
                peaks[f"l{i}"] = {"fmt": str(f), "min_raw": f.min_raw, "max_raw": f.max_raw,
                                  "seen_min": pk[0], "seen_max": pk[1]}
        return _summarize({"steps": self.steps, "cycles_below_ideal": self.cycles_below_ideal,
                           "bins": self.bins(), "unreachable": self.unreachable(),
                           "peaks": peaks, "most_events": {f"l{i}": v for i, v in
                                                           enumerate(self.most_events)}})

    def report(self) -> str:
        """Hit counts, empty bins and unreachable bins as Markdown text."""
        return report(self.summary())


def _notes(bins: dict, peaks: dict, most_events: dict) -> dict:
    """Why an empty bin is empty, where that is known from the run itself."""
    notes = {}
    for g, hits in bins.items():
        fam, _, layer = g.partition(".")
        pk = peaks.get(layer)
        for b, n in hits.items():
            if n:
                continue
            if g == "threshold_writes" or (g, b) == ("passes", RESCAN):
                notes.setdefault(g, {})[b] = NO_WRITES
            elif fam == "events" and layer in most_events and \
                    most_events[layer] < next(lo for lab, lo, _ in EVENT_BINS if lab == b):
                notes.setdefault(g, {})[b] = (f"the most events of one step was "
                                              f"{most_events[layer]}")
            elif fam == "saturation" and pk is not None:
                seen, lim = (pk["seen_max"], pk["max_raw"]) if b == "max" else \
                    (pk["seen_min"], pk["min_raw"])
                notes.setdefault(g, {})[b] = (
                    f"the {'largest' if b == 'max' else 'smallest'} requantized value examined "
                    f"was {seen}, {100.0 * seen / lim:.0f}% of {pk['fmt']}'s {b} {lim}")
    return notes


FAMILIES = ("passes", "threshold_writes", "events", "collisions", "collision_gap",
            "threshold", "saturation", "wrap", "cycles")


def _group_key(group: str) -> tuple:
    fam, _, layer = group.partition(".")
    return (FAMILIES.index(fam) if fam in FAMILIES else len(FAMILIES),
            int(layer[1:]) if layer[1:].isdigit() else -1, group)


def _summarize(s: dict) -> dict:
    bins = {g: s["bins"][g] for g in sorted(s["bins"], key=_group_key)}
    unreachable = {g: s["unreachable"][g] for g in sorted(s["unreachable"], key=_group_key)}
    groups = {}
    for g, hits in bins.items():
        fam = g.split(".")[0]
        e = groups.setdefault(fam, {"hit": 0, "reachable": 0, "unreachable": 0})
        e["hit"] += sum(1 for v in hits.values() if v > 0)
        e["reachable"] += len(hits)
    for g, un in unreachable.items():
        groups.setdefault(g.split(".")[0], {"hit": 0, "reachable": 0,
                                            "unreachable": 0})["unreachable"] += len(un)
    groups = {f: groups[f] for f in sorted(groups, key=_group_key)}
    for e in groups.values():
        e["percent"] = round(100.0 * e["hit"] / e["reachable"], 1) if e["reachable"] else None
    hit = sum(e["hit"] for e in groups.values())
    reach = sum(e["reachable"] for e in groups.values())
    return {
        "steps": s["steps"],
        "hit": hit,
        "reachable": reach,
        "percent": round(100.0 * hit / reach, 1) if reach else None,
        "cycles_below_ideal": s["cycles_below_ideal"],
        "groups": groups,
        "bins": bins,
        "empty": {g: [b for b, n in hits.items() if n == 0] for g, hits in bins.items()
                  if any(n == 0 for n in hits.values())},
        "unreachable": unreachable,
        "peaks": s["peaks"],
        "most_events": s["most_events"],
        "notes": _notes(bins, s["peaks"], s["most_events"]),
    }


def merge(summaries) -> dict:
    """One summary of several (:meth:`Coverage.summary`): hits add up; a bin counts as
    reachable if it is in any of them (a bin unreachable in one run and reachable in another,
    e.g. of another model, is reachable)."""
    summaries = list(summaries)
    bins, unreachable = {}, {}
    for s in summaries:
        for g, hits in s["bins"].items():
            tgt = bins.setdefault(g, {})
            for b, n in hits.items():
                tgt[b] = tgt.get(b, 0) + int(n)
    for s in summaries:
        for g, un in s["unreachable"].items():
            for b, why in un.items():
                if b not in bins.get(g, {}):
                    whys = unreachable.setdefault(g, {}).setdefault(b, [])
                    if why not in whys:
                        whys.append(why)
    unreachable = {g: {b: "; ".join(w) for b, w in un.items()} for g, un in unreachable.items()}
    # the extremes add up only between runs with the same formats (the same model)
    peaks = {}
    for layer in {k for s in summaries for k in s["peaks"]}:
        pks = [s["peaks"].get(layer) for s in summaries]
        if any(pk is None or pk["fmt"] != pks[0]["fmt"] for pk in pks):
            continue
        peaks[layer] = {**pks[0], "seen_min": min(pk["seen_min"] for pk in pks),
                        "seen_max": max(pk["seen_max"] for pk in pks)}
    most = {}
    for s in summaries:
        for layer, v in s["most_events"].items():
            most[layer] = max(most.get(layer, 0), v)
    return _summarize({"steps": sum(s["steps"] for s in summaries),
                       "cycles_below_ideal": sum(s["cycles_below_ideal"] for s in summaries),
                       "bins": bins, "unreachable": unreachable,
                       "peaks": dict(sorted(peaks.items())), "most_events": most})


def report(summary: dict) -> str:
    """A summary (:meth:`Coverage.summary` or :func:`merge`) as Markdown text."""
    s = summary
    pct = "-" if s["percent"] is None else f"{s['percent']:.1f}%"
    lines = [f"{s['hit']} of {s['reachable']} reachable bins hit ({pct}) over {s['steps']} "
             f"steps; {sum(len(v) for v in s['unreachable'].values())} bins unreachable; "
             f"{s['cycles_below_ideal']} steps below the MAC-bound ideal.", "",
             "| group | hit | hits per bin (steps) |", "|---|---|---|"]
    for g, hits in s["bins"].items():
        n = sum(1 for v in hits.values() if v > 0)
        cells = ", ".join(f"{b}: {v}" for b, v in hits.items()).replace("|", "\\|")
        lines.append(f"| `{g}` | {n}/{len(hits)} | {cells} |")
    if s["empty"]:
        lines += ["", "Empty bins:", ""]
        for g, labels in s["empty"].items():
            for b in labels:
                why = s["notes"].get(g, {}).get(b, "not hit in these steps")
                lines.append(f"- `{g}` `{b}`: {why}")
    if s["unreachable"]:
        lines += ["", "Unreachable bins (left out of the percentages):", ""]
        for g, un in s["unreachable"].items():
            for b, why in un.items():
                lines.append(f"- `{g}` `{b}`: {why}")
    return "\n".join(lines) + "\n"

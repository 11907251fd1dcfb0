"""Cycle model of the event-driven delta core (``hw/core.py``): cycles per step from its events.

The hardware matches this model exactly: every test and every closed-loop run compares the
core's ``cycles`` port with :meth:`CoreCycleModel.step_cycles`. numpy only; the layout comes
from :class:`pysim.coreplan.CorePlan`.

How a step runs (cycle 1 is the first cycle after the clock edge that samples ``start``)
---------------------------------------------------------------------------------------
Work moves through the core as **groups** of candidate events in one event queue: an intake
group is one observation word (``P`` codes, delta-encoded as the host writes it, before
``start``); an examination group is one *round* (one neuron of every lane). A group enters the
queue only if it holds *work*: a propagated event whose weight column is not empty. Its
**cost** is the sum of those columns' lengths: the issue stage spends one cycle per column word,
all lanes in step, with no cycle between groups.

* An episode start (``first``) first writes the bias into every accumulator, one row of every
  lane per cycle: ``INIT = sum_l rows_l`` cycles. ``S_0 = 1 + first * INIT``.
* **MAC of layer l** starts at ``S_l``. Group ``g`` (available from ``a_g``, cost ``c_g``) issues
  from ``s_g = max(a_g, s_{g-1} + c_{g-1})`` (``s_{-1} + c_{-1} = S_l``). Intake groups are
  available at ``S_0`` in write order (ascending word address). The MAC is done in the first
  cycle ``f_l = max(S_l, D_l, s_last + c_last)`` in which its producer is done (``D_l``) and the
  queue is empty. Each issue writes its accumulators 2 cycles later (``MAC_LATENCY``).
* **Examination of layer l** re-examines the neurons whose accumulator changed in this step:
  lane ``k`` keeps them in its *dirty list* in the order the MAC first touched them (groups in
  order, a group's slots in order, a column's words in row order). Round ``r`` takes entry
  ``r`` of every lane: ``R_l = max_k len(dirty_k)`` rounds, one per cycle from
  ``x_l = f_l + MAC_LATENCY - 1`` (the cycle of the last accumulator write). An episode start or the step after a threshold write examines every
  neuron instead (``R_l = rows_l``, round ``r`` = row ``r``). Round ``r`` requantizes,
  activates and delta-encodes its neurons and, if it holds work, pushes its group, available to
  the MAC of layer ``l + 1`` from ``x_l + r + EXAM_LATENCY + QUEUE_LATENCY``.
  ``S_{l+1} = f_l + 1``; the producer of layer ``l + 1`` is done from
  ``D_{l+1} = x_l + R_l + EXAM_LATENCY`` (``x_l + 1`` if ``R_l = 0``: round 0 always takes
  its cycle, as whether it holds a neuron is known only then); ``D_0 = S_0``.
* The last layer's examination writes the output registers ``OUT_LATENCY`` cycles after a
  round starts (``D_N = x_{N-1} + R_{N-1} + OUT_LATENCY``, or ``x_{N-1} + 1`` if no round);
  ``done`` is high in cycle ``D_N + 1``: that number is ``cycles``. ``ready`` is high in the ``done`` cycle, so
  back-to-back steps take exactly ``cycles`` each. The host's observation writes come before
  ``start`` (one word per cycle); ``ready`` (and so ``start``) waits ``INTAKE_LATENCY``
  cycles after the last write, until that word is queued: the latency of a step from its
  first write to ``done`` is ``writes + INTAKE_LATENCY + cycles``.

So a step costs ``MAC issue cycles + examination rounds not hidden behind the next layer's MAC
+ about 7 cycles per layer``, never a scan of a layer's inputs or outputs (except at episode
starts and after threshold writes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .coreplan import CorePlan
from .model import Model

__all__ = [
    "EXAM_LATENCY",
    "INTAKE_LATENCY",
    "MAC_LATENCY",
    "OUT_LATENCY",
    "QUEUE_LATENCY",
    "CoreCycleModel",
    "StepSchedule",
    "max_cycles",
]

#: cycles from an issue to the accumulator write (weight read, weight register, product and
#: accumulator read, add and write); the examination's first round starts in the cycle of the
#: last write (``x_l = f_l + MAC_LATENCY - 1``), when the last dirty-list append is known
MAC_LATENCY = 3
#: cycles from a round's start to its group's push (dirty-list read, accumulator read,
#: requantize, saturate + activate, delta + compare)
EXAM_LATENCY = 4
#: cycles from a round's start to the output registers (the last layer: no delta, no push)
OUT_LATENCY = 3
#: cycles from the edge that accepts an observation word to its group's push
INTAKE_LATENCY = 3
#: cycles from a push to the group being readable at the head of the queue
QUEUE_LATENCY = 1


@dataclass
class StepSchedule:
    """What :meth:`CoreCycleModel.schedule` found for one step (all cycle numbers absolute)."""

    cycles: int
    mac_cycles: list  # per layer: issue cycles (sum of group costs)
    rounds: list  # per layer: examination rounds
    groups: list  # per layer: groups issued
    dirty: list  # per layer: neurons examined (dirty-list entries, or every neuron)
    lane_work: np.ndarray  # (L,) useful MACs per lane


def max_cycles(plan: CorePlan) -> int:
    """An upper bound of any step's ``cycles`` on ``plan``: every layer issues each of its
    columns at most once per step (each input is written, or each neuron examined, once) and
    runs at most ``rows`` rounds; sizes the core's cycle counter."""
    per_layer = MAC_LATENCY + EXAM_LATENCY + QUEUE_LATENCY + 2
    return int(1 + plan.init_steps + sum(int(c.sum()) + r + per_layer
                                         for c, r in zip(plan.col_len, plan.rows)))


class CoreCycleModel:
    """Exact cycles of the event-driven core of ``model`` on ``lanes`` lanes."""

    def __init__(self, model: Model, lanes: int, obs_words: int | None = None):
        if obs_words is None:
            obs_words = min(model.config.n_in, 8)
        self.plan = CorePlan.build(model, lanes, obs_words)
        self.lanes = self.plan.lanes
        self._cols = []  # per layer, per lane: rows (local) of each column, in row order
        for i in range(self.plan.n_layers):
            nz = model.w_raw[i] != 0
            self._cols.append([[np.nonzero(nz[k::self.lanes, j])[0]
                                for j in range(nz.shape[1])] for k in range(self.lanes)])

    # ---- one step -------------------------------------------------------------------------
    def schedule(self, event_masks, first: bool, rescan: bool = False) -> StepSchedule:
        """The schedule of one step from ``DeltaNetwork.last_events`` (one env: ``(n_in,)``
        masks or ``(1, n_in)``); ``first``: episode start; ``rescan``: a threshold was
        written since the last step."""
        plan, L = self.plan, self.lanes
        cfg = plan.config
        N = plan.n_layers
        ev = [np.asarray(e, dtype=bool).reshape(-1) for e in event_masks]
        if len(ev) != N:
            raise ValueError(f"need {N} event masks, got {len(ev)}")
        full = bool(first) or bool(rescan)
        start = 1 + (plan.init_steps if first else 0)
        # layer 0: one group per observation word with work, available at S_0
        P = plan.obs_words
        j = np.arange(plan.obs_depth * P).reshape(-1, P)
        ok = j < cfg.n_in
        jj = np.where(ok, j, 0)
        work = ok & ev[0][jj] & (plan.col_len[0][jj] > 0)
        groups = [(start, [int(c) for c in row[w]]) for row, w in zip(jj, work) if w.any()]
        S, D = start, start
        macs, rounds, ngroups, dirty_n = [], [], [], []
        lane_work = np.zeros(L, dtype=np.int64)
        for i in range(N):
            lens = plan.col_len[i]
            t = S
            for avail, cols in groups:
                t = max(t, avail) + int(lens[cols].sum())
            macs.append(int(sum(int(lens[cols].sum()) for _, cols in groups)))
            ngroups.append(len(groups))
            f = max(S, D, t)
            x = f + MAC_LATENCY - 1
            for _, cols in groups:
                lane_work += plan.lane_nnz[i][:, cols].sum(axis=1)
            # the dirty lists: first touch, in issue order
            if full:
                R = plan.rows[i]
                order = [list(range(R)) for _ in range(L)]
            else:
                order = []
                for k in range(L):
                    seen = {}
                    for _, cols in groups:
                        for c in cols:
                            for r in self._cols[i][k][c].tolist():
                                seen.setdefault(r, None)
                    order.append(list(seen))
                R = max(len(o) for o in order)
            rounds.append(R)
            n_out = cfg.layers[i].n_out
            dirty_n.append(sum(sum(1 for r in o if r * L + k < n_out)
                               for k, o in enumerate(order)))
            if i + 1 < N:
                nxt = ev[i + 1]
                if not full:
                    examined = np.zeros(n_out, dtype=bool)
                    for k, o in enumerate(order):
                        idx = np.asarray(o, dtype=np.int64) * L + k
                        examined[idx[idx < n_out]] = True
                    if (nxt & ~examined).any():
                        bad = int(np.nonzero(nxt & ~examined)[0][0])
                        raise ValueError(f"layer {i + 1} input {bad} fired but its neuron was "
                                         "not re-examined: the events are not those of a "
                                         "step of this model")
                nlen = plan.col_len[i + 1]
                groups = []
                for r in range(R):
                    cols = []
                    for k in range(L):
                        if r < len(order[k]):
                            o = order[k][r] * L + k
                            if o < n_out and nxt[o] and nlen[o] > 0:
                                cols.append(o)
                    if cols:
                        groups.append((x + r + EXAM_LATENCY + QUEUE_LATENCY, cols))
            S = f + 1
            D = x + R + (EXAM_LATENCY if i + 1 < N else OUT_LATENCY) if R else x + 1
        return StepSchedule(D + 1, macs, rounds, ngroups, dirty_n, lane_work)

    def step_cycles(self, event_masks, first, rescan=False) -> np.ndarray:
        """``(B,)`` cycles of one step for a batch: ``event_masks`` per layer ``(B, n_in)``,
        ``first`` ``(B,)`` (the step was the first after a reset)."""
        ev = [np.atleast_2d(np.asarray(e, dtype=bool)) for e in event_masks]
        first = np.broadcast_to(np.asarray(first, dtype=bool).reshape(-1), (ev[0].shape[0],))
        return np.array([self.schedule([e[b] for e in ev], bool(first[b]), rescan).cycles
                         for b in range(ev[0].shape[0])], dtype=np.int64)

    # ---- reference figures ----------------------------------------------------------------
    def ideal_cycles(self, significant) -> np.ndarray:
        """``sum_l ceil(significant_l / L)`` from ``(n_layers, B)`` counts: the MAC-bound
        ideal."""
        return (-(-np.asarray(significant) // self.lanes)).sum(axis=0)

    def max_cycles(self) -> int:
        """An upper bound of any step's ``cycles`` (:func:`max_cycles`)."""
        return max_cycles(self.plan)

    def dense_cycles(self) -> int:
        """MAC issue cycles of a dense schedule on the same lanes: every input of every layer,
        unpruned (``n_in * ceil(n_out / L)`` per layer)."""
        return int(sum(ly.n_in * -(-ly.n_out // self.lanes) for ly in self.plan.config.layers))

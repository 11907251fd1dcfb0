"""Cycle model of the event-driven delta core (``hw/core.py``): cycles per step from its events.

The hardware matches this model exactly: every test and every closed-loop run compares the
core's ``cycles`` port with :meth:`CoreCycleModel.step_cycles`. numpy only; the layout comes
from :class:`pysim.coreplan.CorePlan`.

How a step runs (cycle 1 is the first cycle after the clock edge that samples ``start``)
---------------------------------------------------------------------------------------
Work moves through the core as **groups** of candidate events in one event queue: an intake
group is one observation word (``P`` codes, delta-encoded as the host writes it, before
``start``); an examination group is one *round* (one neuron of every lane). A group enters the
queue only if it holds *work*: a propagated event whose key is not 0 (it reaches a non-empty
weight column). Its **cost**: in a dense layer the sum of its events' column lengths (the issue
stage spends one cycle per column word, all lanes in step, with no cycle between groups); in a
conv layer the sum over its events' kernel positions that land on the output grid of
``max(1, len)`` (an empty column's position still takes its cycle).

* An episode start (``first``) first writes the bias into every accumulator, one row of every
  lane per cycle: ``INIT = sum_l rows_l`` cycles. ``S_0 = 1 + first * INIT``.
* **MAC of layer l** starts at ``S_l``. Group ``g`` (available from ``a_g``, cost ``c_g``) issues
  from ``s_g = max(a_g + lag, s_{g-1} + c_{g-1})`` (``s_{-1} + c_{-1} = S_l + lag``; ``lag`` is
  1 for a conv layer, whose first position needs a column-table read, else 0). Intake groups are
  available at ``S_0`` in write order (ascending word address). The MAC is done in the first
  cycle ``f_l = max(S_l, D_l, s_last + c_last)`` in which its producer is done (``D_l``) and the
  queue is empty (``S_l`` itself when no group came). Each issue appends to the dirty lists
  ``APPEND_LATENCY`` - 1 cycles later and writes its accumulators ``MAC_LATENCY`` - 1 cycles
  later.
* **Examination of layer l** re-examines the neurons whose accumulator changed in this step:
  lane ``k`` keeps them in its *dirty list* in the order the MAC first touched them (groups in
  order, a group's slots in order, a conv event's positions in order, a column's words in
  channel order). Round ``r`` takes entry
  ``r`` of every lane: ``R_l = max_k len(dirty_k)`` rounds, one per cycle from
  ``x_l = f_l + APPEND_LATENCY - 1`` (the cycle of the last dirty-list append; round 0 reads
  its accumulators in the next cycle, that of the last accumulator write). An episode start
  or the step after a threshold write examines every
  neuron instead (``R_l = rows_l``, round ``r`` = row ``r``). Round ``r`` requantizes,
  activates and delta-encodes its neurons and, if it holds work, pushes its group, available to
  the MAC of layer ``l + 1`` from ``x_l + r + EXAM_LATENCY + QUEUE_LATENCY``.
  ``S_{l+1} = f_l + 1``; the producer of layer ``l + 1`` is done from
  ``D_{l+1} = x_l + R_l + EXAM_LATENCY`` (``x_l + 1`` if ``R_l = 0``: round 0 always takes
  its cycle, as whether it holds a neuron is known only then); ``D_0 = S_0``.
* The last layer's examination writes the output registers at the edge that ends the cycle
  ``OUT_LATENCY`` cycles after a round starts; ``done`` is high from the cycle after the last
  round's write: ``cycles = x_{N-1} + R_{N-1} + OUT_LATENCY`` (``x_{N-1} + 2`` if no round:
  round 0 always takes its cycle). ``ready`` is high in the
  ``done`` cycle, so
  back-to-back steps take exactly ``cycles`` each. The host's observation writes come before
  ``start`` (one word per cycle); ``ready`` (and so ``start``) waits ``INTAKE_LATENCY``
  cycles after the last write, until that word is queued: the latency of a step from its
  first write to ``done`` is ``writes + INTAKE_LATENCY + cycles``.

So a step costs ``MAC issue cycles + examination rounds not hidden behind the next layer's MAC
+ about 5 cycles per layer``, never a scan of a layer's inputs or outputs (except at episode
starts and after threshold writes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .coreplan import CorePlan
from .model import Model

__all__ = [
    "APPEND_LATENCY",
    "EXAM_LATENCY",
    "INTAKE_LATENCY",
    "MAC_LATENCY",
    "OUT_LATENCY",
    "QUEUE_LATENCY",
    "CoreCycleModel",
    "StepSchedule",
    "max_cycles",
]

#: cycles from an issue to the accumulator write (weight read, weight register and dirty-bit
#: read, product and accumulator read, add and write)
MAC_LATENCY = 3
#: cycles from an issue to its dirty-list append (with the accumulator read); the
#: examination's first round starts in the cycle of the last append
#: (``x_l = f_l + APPEND_LATENCY - 1``)
APPEND_LATENCY = 2
#: cycles from a round's start to its group's push (dirty-list read; accumulator read;
#: requantize and the threshold window; saturate, activate, delta and compare)
EXAM_LATENCY = 3
#: cycles from a round's start to the cycle whose ending edge writes the output registers (the
#: last layer: no delta, no push); the step's ``done`` rises at that edge
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


def _input_costs(plan: CorePlan, layer: int):
    """Per input of ``layer``: its positions as CSR arrays ``(ptr, col, pix)`` (a dense input:
    the one position ``(j, 0)``), whether it has work (key != 0), and its issue cost: a dense
    column's length, or for a conv input ``sum over positions of max(1, len)`` (a position whose
    column is empty still takes its cycle)."""
    g = plan.geometry[layer]
    lens = plan.col_len[layer]
    work = plan.keys(layer) != 0
    if not g.conv:
        ptr = np.arange(g.n_in + 1, dtype=np.int64)
        col = np.arange(g.n_in, dtype=np.int64)
        pix = np.zeros(g.n_in, dtype=np.int64)
        return ptr, col, pix, work, np.where(work, lens, 0).astype(np.int64)
    pos = g.positions()
    cnt = np.array([len(p) for p in pos], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
    flat = [q for p in pos for q in p]
    col = np.array([q[0] for q in flat], dtype=np.int64).reshape(-1)
    pix = np.array([q[1] for q in flat], dtype=np.int64).reshape(-1)
    per_pos = np.maximum(lens[col], 1) if col.size else np.zeros(0, dtype=np.int64)
    cost = np.bincount(np.repeat(np.arange(g.n_in), cnt), weights=per_pos,
                       minlength=g.n_in).astype(np.int64)
    return ptr, col, pix, work, np.where(work, cost, 0).astype(np.int64)


def max_cycles(plan: CorePlan) -> int:
    """An upper bound of any step's ``cycles`` on ``plan``: every input of a layer is issued at
    most once per step (each is written, or its neuron examined, once), a layer has at most
    ``rows`` rounds and at most as many groups as its producer has words or rounds (a conv
    layer's group costs one more cycle); sizes the core's cycle counter."""
    per_layer = MAC_LATENCY + EXAM_LATENCY + QUEUE_LATENCY + 2
    total = 1 + plan.init_steps
    for i in range(plan.n_layers):
        cost = _input_costs(plan, i)[4]
        groups = plan.obs_depth if i == 0 else plan.rows[i - 1]
        total += int(cost.sum()) + plan.rows[i] + per_layer + groups
    return int(total)


class CoreCycleModel:
    """Exact cycles of the event-driven core of ``model`` on ``lanes`` lanes."""

    def __init__(self, model: Model, lanes: int, obs_words: int | None = None):
        if obs_words is None:
            obs_words = min(model.config.n_in, 8)
        self.plan = plan = CorePlan.build(model, lanes, obs_words)
        self.lanes = L = plan.lanes
        self._inputs = [_input_costs(plan, i) for i in range(plan.n_layers)]
        # per layer, per lane: CSR of each column's non-zero local channels, in channel order
        self._lane_cols = []
        for i in range(plan.n_layers):
            g = plan.geometry[i]
            nz = (model.w_raw[i] != 0).reshape(g.O, g.n_cols)
            per = []
            for k in range(L):
                cols, chs = np.nonzero(nz[k::L].T)
                ptr = np.searchsorted(cols, np.arange(g.n_cols + 1))
                per.append((ptr.astype(np.int64), chs.astype(np.int64)))
            self._lane_cols.append(per)

    def _touch_order(self, layer: int, cols: np.ndarray, pix: np.ndarray, lane: int):
        """Rows of ``lane`` that the items ``(cols, pix)`` touch, in first-touch order."""
        ptr, chs = self._lane_cols[layer][lane]
        n = ptr[cols + 1] - ptr[cols]
        total = int(n.sum())
        if not total:
            return np.zeros(0, dtype=np.int64)
        offs = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        rows = (chs[np.repeat(ptr[cols], n) + offs] * self.plan.geometry[layer].pixels
                + np.repeat(pix, n))
        uniq, first = np.unique(rows, return_index=True)
        return uniq[np.argsort(first, kind="stable")]

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
        work = ok & ev[0][jj] & self._inputs[0][3][jj]
        keep = work.any(axis=1)
        avail = np.full(int(keep.sum()), start, dtype=np.int64)
        members = [row[w] for row, w in zip(jj[keep], work[keep])]
        S, D = start, start
        macs, rounds, ngroups, dirty_n = [], [], [], []
        lane_work = np.zeros(L, dtype=np.int64)
        for i in range(N):
            g = plan.geometry[i]
            ptr, pcol, ppix, _, cost = self._inputs[i]
            c = np.array([int(cost[m].sum()) for m in members], dtype=np.int64)
            # issue: t = max(t, a_g) + c_g (a conv group's first position needs its
            # column-table read: available one cycle later)
            lag = 1 if g.conv else 0
            if c.size:
                suffix = np.cumsum(c[::-1])[::-1]
                t = int(max(S + lag + c.sum(), (avail + lag + suffix).max()))
            else:
                t = S
            macs.append(int(c.sum()))
            ngroups.append(len(members))
            f = max(S, D, t)
            x = f + APPEND_LATENCY - 1
            inputs = (np.concatenate(members) if members else np.zeros(0, dtype=np.int64))
            cnt = ptr[inputs + 1] - ptr[inputs]
            tot = int(cnt.sum())
            idx = np.repeat(ptr[inputs], cnt) + np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt,
                                                                          cnt)
            icol, ipix = pcol[idx], ppix[idx]
            lane_work += plan.lane_nnz[i][:, icol].sum(axis=1)
            # the dirty lists: first touch, in issue order
            if full:
                order = [np.arange(plan.rows[i], dtype=np.int64) for _ in range(L)]
                R = plan.rows[i]
            else:
                order = [self._touch_order(i, icol, ipix, k) for k in range(L)]
                R = max(len(o) for o in order)
            rounds.append(R)
            n_out = cfg.layers[i].n_out
            nid = np.full((R, L), -1, dtype=np.int64)
            for k, o in enumerate(order):
                if len(o):
                    n = plan.neuron(i, k, o)
                    nid[:len(o), k] = np.where(n < n_out, n, -1)
            real = nid >= 0
            dirty_n.append(int(real.sum()))
            if i + 1 < N:
                nxt = ev[i + 1]
                safe = np.where(real, nid, 0)
                if not full:
                    examined = np.zeros(n_out, dtype=bool)
                    examined[nid[real]] = True
                    if (nxt & ~examined).any():
                        bad = int(np.nonzero(nxt & ~examined)[0][0])
                        raise ValueError(f"layer {i + 1} input {bad} fired but its neuron was "
                                         "not re-examined: the events are not those of a "
                                         "step of this model")
                wk = real & nxt[safe] & self._inputs[i + 1][3][safe]
                keep = wk.any(axis=1)
                r_idx = np.nonzero(keep)[0]
                avail = (x + r_idx + EXAM_LATENCY + QUEUE_LATENCY).astype(np.int64)
                members = [safe[r][wk[r]] for r in r_idx]
            S = f + 1
            D = x + R + (EXAM_LATENCY if i + 1 < N else OUT_LATENCY - 1) if R else x + 1
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
        unpruned (per kernel position that reaches the output grid, ``ceil(O / L)`` words)."""
        total = 0
        for i, g in enumerate(self.plan.geometry):
            ptr = self._inputs[i][0]
            total += int(ptr[-1]) * -(-g.O // self.lanes)
        return int(total)

"""Magnitude pruning: gradual with RL fine-tuning (Zhu & Gupta), or one-shot; lane balancing.

Choices (the paper does not publish its schedule)
-------------------------------------------------
* **What is pruned**: the weights of the exported policy layers (the ones the hardware runs);
  value nets / critics stay dense. Biases are never pruned.
* **Scope**: ``per-layer`` (default) prunes every layer to the target sparsity; ``global`` ranks
  all policy weights together by magnitude (big layers then take most of the pruning).
* **Gradual schedule** (Zhu & Gupta 2017): sparsity ``s(t) = s_f * (1 - (1 - t/T)^3)`` over the
  first ``ramp`` fraction (2/3) of the fine-tuning steps, recomputing the masks from the current
  magnitudes ``n_events`` (10) times; the rest of the fine-tuning runs at the final sparsity.
  Masks are re-applied after *every* optimizer step (a torch optimizer step post-hook), so the
  weights the RL algorithm acts with are always the pruned ones. Fine-tuning restarts the
  algorithm's schedules: PPO's learning rate anneals again over the fine-tuning steps; DQN
  explores with its final epsilon (constant); off-policy algorithms reuse the saved replay buffer.
  ``overrides`` replace SB3 hyper-parameters for the fine-tuning (``custom_objects`` at load,
  before the model is set up), e.g. ``{"n_steps": 256}``: PPO with rl-zoo's LunarLander rollouts
  (16 x 1024 steps) gets too few updates to recover from pruning.
* **Lane balancing** (Spartus column-balanced pruning): with ``L`` lanes, lane ``k`` owns the
  output rows ``r % L == k``. In every column, every lane keeps the same number ``K`` of weights
  (its ``K`` largest), ``K = max(1, round((1 - s) * ceil(n_out / L)))`` for the whole layer;
  a lane that owns fewer than ``K`` rows keeps all of them. The achieved sparsity can then differ
  from the target for small layers (e.g. a 2-output layer keeps at least one weight per lane).
  :func:`check_balance` verifies the property; :func:`lane_balance` gives mean/worst lane work.
  With ``whole_columns=True``, a layer in which every lane owns at most one row (``n_out <= L``,
  e.g. the output layer) is pruned by whole columns instead: the ``max(1, round((1 - s) n_in))``
  columns with the largest L1 norm are kept entirely, the others are removed (an all-zero column
  costs the hardware nothing, a kept one a single cycle in which ``n_out`` lanes work; still
  balanced). Without it such a layer stays dense, and with ``n_out < L`` its cycles run at
  ``n_out / L`` utilisation.
* **Output layer**: ``out_sparsity`` (per-layer scope only) gives the last layer its own target
  (default: the same as the others); with ``whole_columns`` it sets how many hidden units of the
  last hidden layer feed the outputs, and so how many of its delta events reach the (poorly
  lane-filled) output layer. The schedule ramps every layer with the same cubic.
* **Ladder** (:func:`prune_ladder`, what ``deltanet compress`` searches from): one fine-tuning
  run walks down a geometric ladder of lane-balanced sparsities; each level is first distilled
  from the dense policy (:class:`Distiller`), then RL-fine-tuned until its float return on check
  seeds is back within the budget of the dense policy's (or a cap), so the RL steps go to the
  levels that distillation does not recover.
* **One-shot** pruning (``finetune_steps=0``, used by ``deltanet sweep``) masks the artifact's
  weights directly and keeps its formats, scaling and thresholds.
* **Per-layer targets**: a sequence of sparsities, one per layer, instead of one number (per-layer
  scope only; ``deltanet compress`` searches them): each layer is pruned to its own target, with
  the lane balancing and whole-column rule above; the schedule ramps every layer with the same
  cubic.
* **Keeping the best pruned policy**: RL fine-tuning can lose a policy as well as recover it
  (DQN on Acrobot, 30k training steps, per-layer 0.7 over 15k fine-tuning steps: -137 one-shot;
  fine-tuned, it fell to -500, never at the goal, at 0.6 and never came back). As ``deltanet
  train`` does, the deterministic policy is validated on ``eval_episodes`` (default 20; Atari 0:
  no selection) held-out episodes seeded ``VALIDATION_SEED ...``: the one-shot pruning (the
  final masks on the weights before fine-tuning), then at ``checks`` (4) evenly spaced steps
  once the masks have reached their target, and at the end. The best is kept (ties: the later
  one), masks included, so fine-tuning never returns a policy that validates worse than
  one-shot pruning; the provenance records its step and both returns (``pruning.selected``).
* **Source**: the pruned artifact's provenance names the artifact it was pruned from
  (``pruning.source``, its path as given, and ``pruning.source_checksum``); ``deltanet
  calibrate`` takes it as the dense reference.
* **Clean-up** (``cleanup=True``; on by default in ``deltanet prune``, ``--no-cleanup`` turns it
  off): hidden units that nothing reads (or that only add a constant) are then removed, see
  :mod:`deltanet.cleanup`. Removing rows renumbers the lanes' rows, so a lane-balanced mask may
  be less balanced afterwards. With lanes, :func:`order_for_lanes` then re-orders the units of
  every hidden dense layer (a permutation of its rows and bias and of the next layer's columns:
  the same network, bit for bit in fixed point) so that the busiest lane of each column holds
  as few non-zeros as it can; the provenance records the balance before and after.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np

from .progress import shown

SCOPES = ("per-layer", "global")


def check_sparsity(s) -> float:
    if not isinstance(s, (int, float)) or not (0.0 <= float(s) < 1.0) or math.isnan(s):
        raise ValueError(f"--sparsity must lie in [0, 1), got {s!r}")
    return float(s)


def check_sparsities(s):
    """One sparsity (a float) or per-layer sparsities (a tuple of floats), each checked."""
    if isinstance(s, (list, tuple)):
        return tuple(check_sparsity(v) for v in s)
    return check_sparsity(s)


def _scaled(sparsity, frac: float):
    """``sparsity * frac`` for one sparsity or per-layer ones."""
    if isinstance(sparsity, (list, tuple)):
        return [v * frac for v in sparsity]
    return sparsity * frac


def cubic_sparsity(t: float, total: float, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: ``s_f + (s_i - s_f) * (1 - t/T)^3`` for ``0 <= t <= T``."""
    frac = min(max(t / total, 0.0), 1.0) if total > 0 else 1.0
    return final + (initial - final) * (1.0 - frac) ** 3


def _keep_largest(w: np.ndarray, n_keep: int) -> np.ndarray:
    """Boolean mask keeping the ``n_keep`` largest |w| (ties broken by position, stable)."""
    flat = np.abs(w).ravel()
    mask = np.zeros(flat.size, dtype=bool)
    if n_keep > 0:
        order = np.argsort(-flat, kind="stable")
        mask[order[:n_keep]] = True
    return mask.reshape(w.shape)


def balanced_mask(w: np.ndarray, sparsity: float, lanes: int,
                  whole_columns: bool = False) -> np.ndarray:
    """Column-balanced magnitude mask of ``w`` (n_out, n_in) for ``lanes`` lanes."""
    if not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"--balanced-lanes must be a positive integer, got {lanes!r}")
    n_out, n_in = w.shape
    rows_max = math.ceil(n_out / lanes)
    if whole_columns and rows_max == 1:
        keep = _keep_largest(np.abs(w).sum(axis=0), max(1, round((1.0 - sparsity) * n_in)))
        return np.broadcast_to(keep[None, :], w.shape).copy()
    k = max(1, round((1.0 - sparsity) * rows_max))
    mask = np.zeros(w.shape, dtype=bool)
    for lane in range(lanes):
        rows = np.arange(lane, n_out, lanes)
        if rows.size == 0:
            continue
        kk = min(k, rows.size)
        sub = np.abs(w[rows])  # (rows, n_in)
        order = np.argsort(-sub, axis=0, kind="stable")[:kk]  # per column
        for j in range(n_in):
            mask[rows[order[:, j]], j] = True
    return mask


def lane_nnz(mask: np.ndarray, lanes: int) -> np.ndarray:
    """(lanes, n_in): non-zero weights of each lane's slice of each column."""
    n_out = mask.shape[0]
    out = np.zeros((lanes, mask.shape[1]), dtype=np.int64)
    for lane in range(lanes):
        out[lane] = mask[lane:n_out:lanes].sum(axis=0)
    return out


def check_balance(mask: np.ndarray, lanes: int) -> tuple[bool, str]:
    """Is every column lane-balanced? (same non-zero count in every lane, see module doc)."""
    mask = np.asarray(mask, dtype=bool)
    n_out = mask.shape[0]
    rows = np.array([len(range(lane, n_out, lanes)) for lane in range(lanes)])
    nnz = lane_nnz(mask, lanes)
    for j in range(mask.shape[1]):
        col = nnz[:, j]
        k = col.max()
        want = np.minimum(k, rows)
        if not np.array_equal(col, want):
            return False, (f"column {j}: lanes hold {col.tolist()} non-zeros "
                           f"(expected {want.tolist()})")
    return True, "balanced"


def lane_cost(mask: np.ndarray, lanes: int) -> int:
    """Issue cycles of one event on every input: the busiest lane's non-zeros, summed over the
    columns."""
    return int(lane_nnz(np.asarray(mask, dtype=bool), lanes).max(axis=0).sum())


def lane_order(mask: np.ndarray, lanes: int) -> np.ndarray:
    """A permutation ``perm`` of the rows of ``mask`` (n_out, n_in) such that
    ``lane_cost(mask[perm], lanes) <= lane_cost(mask, lanes)``, as low as a local search finds.

    Lane ``k`` owns the rows ``r % lanes == k`` (fixed counts). Starting from the identity, the
    best swap of two rows on different lanes is taken, one row at a time, while any swap
    lowers the cost, or keeps it and lowers the sum of squared lane counts (which evens the
    lanes out where a single swap cannot lower a column's maximum yet); deterministic."""
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    nz = mask.astype(np.int64)
    lane = np.arange(n) % lanes
    cnt = np.stack([nz[lane == k].sum(axis=0) for k in range(lanes)])
    cost = int(cnt.max(axis=0).sum())
    sq = int((cnt * cnt).sum())
    improved = True
    while improved and lanes > 1:
        improved = False
        for a in range(n):
            p = lane[a]
            for q in range(lanes):
                if q == p:
                    continue
                b_rows = np.flatnonzero(lane == q)
                if b_rows.size == 0:
                    continue
                others = [k for k in range(lanes) if k not in (p, q)]
                rest = cnt[others].max(axis=0) if others else np.zeros(cnt.shape[1], np.int64)
                diff = nz[b_rows] - nz[a]  # (rows of q, n_in)
                new_p = cnt[p] + diff
                new_q = cnt[q] - diff
                costs = np.maximum(np.maximum(new_p, new_q), rest).sum(axis=1)
                sqs = sq + (new_p * new_p + new_q * new_q).sum(axis=1) \
                    - int((cnt[p] * cnt[p] + cnt[q] * cnt[q]).sum())
                i = int(np.lexsort((sqs, costs))[0])
                if (costs[i], sqs[i]) < (cost, sq):
                    b = int(b_rows[i])
                    cnt[p] += diff[i]
                    cnt[q] -= diff[i]
                    lane[a], lane[b] = q, p
                    cost, sq = int(costs[i]), int(sqs[i])
                    improved = True
                    p = q
    # lane k's rows, in their original order, at positions k, k + lanes, ...
    perm = np.empty(n, dtype=np.int64)
    for k in range(lanes):
        perm[k::lanes] = np.flatnonzero(lane == k)
    return perm


def order_for_lanes(model, lanes: int):
    """``model`` with the units of every hidden dense layer that feeds a dense layer re-ordered
    by :func:`lane_order` (rows, biases and masks of the layer, columns of the next); the
    output layer (the actions) and conv layers keep their order. Returns ``(model, report)``
    with the per-layer issue cost of one event on every input, before and after."""
    from deltanet.pysim import LayerParams
    from deltanet.pysim.config import DenseLayer

    layers = model.config.layers
    params = list(model.params)
    report = []
    for i in range(len(layers) - 1):
        if not (isinstance(layers[i], DenseLayer) and isinstance(layers[i + 1], DenseLayer)):
            continue
        p, nxt = params[i], params[i + 1]
        nz = np.asarray(p.mask, dtype=bool) & (np.asarray(p.weight) != 0)
        before = lane_cost(nz, lanes)
        perm = lane_order(nz, lanes)
        after = lane_cost(nz[perm], lanes)
        report.append({"layer": i, "cost_before": before, "cost_after": after})
        if after < before:
            params[i] = LayerParams(p.weight[perm], p.bias[perm], p.mask[perm])
            params[i + 1] = LayerParams(nxt.weight[:, perm], nxt.bias, nxt.mask[:, perm])
    return model.replace(params=tuple(params)), report


def trim_for_lanes(model, lanes: int):
    """``model`` with every dense layer of more than one row per lane trimmed back to lane
    balance: in each column, each lane keeps at most ``ceil(nnz / lanes)`` of its non-zero
    weights (its largest), so that the column takes the fewest issue words its non-zeros allow.
    The clean-up renumbers rows and breaks the balance of a lane-balanced mask, and a re-order
    (:func:`order_for_lanes`) cannot always restore it (Pendulum's 28-unit layer: 527 issue
    words for its 121 columns where 466 would do). Returns ``(model, dropped weights per
    layer)``."""
    from deltanet.pysim import LayerParams
    from deltanet.pysim.config import DenseLayer

    params = list(model.params)
    dropped = []
    for i, ly in enumerate(model.config.layers):
        p = params[i]
        if not isinstance(ly, DenseLayer) or -(-ly.n_out // lanes) < 2:
            dropped.append(0)
            continue
        w = np.asarray(p.weight, dtype=np.float64)
        mask = np.asarray(p.mask, dtype=bool) & (w != 0)
        k = -(-mask.sum(axis=0) // lanes)  # per column: the fewest words its non-zeros need
        keep = np.zeros_like(mask)
        for lane in range(lanes):
            rows = np.arange(lane, ly.n_out, lanes)
            if rows.size == 0:
                continue
            mag = np.where(mask[rows], np.abs(w[rows]), -1.0)
            order = np.argsort(-mag, axis=0, kind="stable")  # per column, largest first
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(rows.size)[:, None], axis=0)
            keep[rows] = mask[rows] & (rank < k[None, :])
        n = int(mask.sum() - keep.sum())
        dropped.append(n)
        if n:
            params[i] = LayerParams(p.weight, p.bias, keep & np.asarray(p.mask, dtype=bool))
    return model.replace(params=tuple(params)), dropped


def lane_balance(mask: np.ndarray, lanes: int) -> float:
    """Spartus' balance: mean lane work / worst lane work, summed over columns (1.0 = ideal)."""
    nnz = lane_nnz(np.asarray(mask, dtype=bool), lanes)
    worst = nnz.max(axis=0).sum()
    return float(nnz.sum() / (lanes * worst)) if worst else 1.0


def compute_masks(weights, sparsity: float, scope: str = "per-layer",
                  lanes: int | None = None, whole_columns: bool = False,
                  out_sparsity: float | None = None) -> list:
    """Magnitude masks (True = kept) for a list of (n_out, n_in) weight arrays; ``sparsity``:
    one target, or one per layer (per-layer scope)."""
    if scope not in SCOPES:
        raise ValueError(f"pruning scope must be one of {SCOPES}, got {scope!r}")
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    if isinstance(sparsity, (list, tuple)):
        if scope != "per-layer" or out_sparsity is not None:
            raise ValueError("per-layer sparsities need per-layer scope and no output-layer "
                             "sparsity")
        if len(sparsity) != len(weights):
            raise ValueError(f"{len(sparsity)} sparsities for {len(weights)} layers")
        return [compute_masks([w], s, scope, lanes, whole_columns)[0]
                for w, s in zip(weights, sparsity)]
    if out_sparsity is not None and len(weights) > 1:
        if scope != "per-layer":
            raise ValueError("an output-layer sparsity needs per-layer scope (not --global)")
        return (compute_masks(weights[:-1], sparsity, scope, lanes, whole_columns)
                + compute_masks(weights[-1:], out_sparsity, scope, lanes, whole_columns))
    if sparsity <= 0:
        return [np.ones(w.shape, dtype=bool) for w in weights]
    if lanes:
        if scope == "global":
            raise ValueError("--balanced-lanes needs per-layer sparsity (not --global)")
        return [balanced_mask(w, sparsity, lanes, whole_columns) for w in weights]
    if scope == "per-layer":
        return [_keep_largest(w, round((1 - sparsity) * w.size)) for w in weights]
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    keep = _keep_largest(flat, round((1 - sparsity) * flat.size))
    out, pos = [], 0
    for w in weights:
        out.append(keep[pos:pos + w.size].reshape(w.shape))
        pos += w.size
    return out


def mask_stats(masks, lanes: int | None = None) -> dict:
    masks = [np.asarray(m).reshape(np.shape(m)[0], -1) for m in masks]  # conv: (O, C*K*K)
    total = sum(m.size for m in masks)
    kept = sum(int(m.sum()) for m in masks)
    d = {"sparsity": 1 - kept / total,
         "per_layer_sparsity": [round(1 - float(m.mean()), 4) for m in masks]}
    if lanes:
        d["lane_balance"] = [round(lane_balance(m, lanes), 4) for m in masks]
        d["balanced"] = all(check_balance(m, lanes)[0] for m in masks)
    return d


# ---- one-shot pruning of an artifact -----------------------------------------------------------
def prune_oneshot(model, sparsity, scope: str = "per-layer", lanes: int | None = None,
                  whole_columns: bool = False, source=None):
    """Mask ``model``'s weights by magnitude (no fine-tuning); config and meta are kept.
    ``sparsity``: one target or one per layer. ``source``: the path ``model`` was read from
    (recorded in the provenance)."""
    from deltanet.pysim import LayerParams

    sparsity = check_sparsities(sparsity)
    ws = [model.float_weight(i) for i in range(len(model.params))]
    masks = compute_masks([w.reshape(w.shape[0], -1) for w in ws], sparsity, scope, lanes,
                          whole_columns)
    params = [LayerParams(p.weight, p.bias, m.reshape(p.mask.shape) & p.mask)
              for p, m in zip(model.params, masks)]
    meta = dict(model.meta)
    prov = dict(meta.get("provenance", {}))
    prov["pruning"] = {"method": "one-shot magnitude", "target": sparsity, "scope": scope,
                       "lanes": lanes, "whole_columns": whole_columns,
                       **mask_stats([p.mask for p in params], lanes)}
    if source is not None:
        prov["pruning"].update({"source": str(source),
                                "source_checksum": model.meta.get("checksum")})
    meta["provenance"] = prov
    return model.replace(params=params, meta=meta)


# ---- gradual pruning with RL fine-tuning -----------------------------------------------------
def make_prune_callback(linears, final: float, steps: int, scope: str, lanes, ramp: float = 2 / 3,
                        n_events: int = 10, log=print, whole_columns: bool = False,
                        out_final: float | None = None):
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    ramp_steps = max(1, int(steps * ramp))
    event_every = max(1, ramp_steps // n_events)

    class GradualPrune(BaseCallback):
        def __init__(self):
            super().__init__()
            self.masks = [torch.ones_like(m.weight, dtype=torch.bool) for m in linears]
            self.next_event = 0
            self.current = 0.0
            self.ramp_steps = ramp_steps

        def apply(self, *_args, **_kwargs):
            with torch.no_grad():
                for m, mask in zip(linears, self.masks):
                    m.weight.mul_(mask)

        def update(self, t):
            frac = cubic_sparsity(t, ramp_steps, 1.0)  # every layer: its target x frac
            # conv weights (O, C, K, K) as (O, C*K*K): a column is one (c, ky, kx) tap
            ws = [m.weight.detach().cpu().numpy().reshape(m.weight.shape[0], -1)
                  for m in linears]
            masks = compute_masks(ws, _scaled(final, frac), scope, lanes, whole_columns,
                                  None if out_final is None else out_final * frac)
            self.masks = [torch.as_tensor(mk.reshape(tuple(m.weight.shape)))
                          for mk, m in zip(masks, linears)]
            self.current = frac
            self.apply()

        def _on_training_start(self):
            self.update(0)
            self.next_event = event_every

        def _on_step(self) -> bool:
            t = self.num_timesteps
            if t >= self.next_event and self.current < 1.0:
                self.update(t)
                self.next_event = t + event_every
                kept = sum(int(mk.sum()) for mk in self.masks)
                total = sum(mk.numel() for mk in self.masks)
                log(f"  fine-tuning step {t:,} of {steps:,}: masks at {self.current:.0%} of "
                    f"the target, sparsity {1 - kept / total:.3f}")
            return True

        def _on_training_end(self):
            if self.current < 1.0:
                self.update(ramp_steps)

    return GradualPrune()


class _Session:
    """An artifact's SB3 model loaded for fine-tuning: ``src`` (the artifact), ``prov``,
    ``env_id``, ``algo``, ``seed``, ``model`` (SB3), ``env``, ``vn_src`` (its VecNormalize
    statistics or None), ``linears``, ``optimizers``."""


def _finetune_session(model_path, sb3_path=None, overrides: dict | None = None) -> _Session:
    """Load the SB3 model beside ``model_path`` (or ``sb3_path``) on its env for fine-tuning:
    replay buffer restored (off-policy), DQN exploration at its final epsilon, seeded with the
    training seed + 1, one torch thread."""
    import torch
    from stable_baselines3.common.utils import ConstantSchedule, set_random_seed

    from deltanet.pysim import load_model

    from .export import flat_space_objects, policy_linears
    from .train import algo_class, find_sb3, make_vec_env

    ss = _Session()
    ss.src = src = load_model(model_path)
    ss.prov = prov = dict(src.meta.get("provenance", {}))
    sb3_path = Path(sb3_path) if sb3_path else find_sb3(src.meta, model_path)
    if not sb3_path.exists():
        raise FileNotFoundError(f"SB3 model {sb3_path} not found")
    ss.env_id = src.meta["env_id"]
    ss.algo = algo = prov.get("algo", "").lower()
    if algo not in ("ppo", "a2c", "dqn", "sac", "td3"):
        raise ValueError(f"{model_path}: provenance names algorithm {prov.get('algo')!r}; "
                         "fine-tuning supports PPO, A2C, DQN, SAC, TD3")
    ss.seed = seed = int(prov.get("seed", 0))
    torch.set_num_threads(1)
    set_random_seed(seed + 1)
    # VecNormalize statistics saved beside the SB3 model (by train or an earlier prune): the
    # fine-tuning sees the observations normalised as in training, with the statistics frozen
    # so that the exported input map is the one the policy was fine-tuned with
    vn_rec = prov.get("vecnormalize")
    ss.vn_src = vn_src = (Path(model_path).parent / vn_rec["file"]
                          if isinstance(vn_rec, dict) and vn_rec.get("file") else None)
    if vn_src is not None and not vn_src.exists():
        raise FileNotFoundError(f"{model_path}: its VecNormalize statistics {vn_src} are "
                                "missing")
    ss.env = env = make_vec_env(ss.env_id, int(prov.get("n_envs", 1)), seed + 1,
                                vecnormalize=vn_src)
    if vn_src is not None:
        env.training = False
    # overrides: hyper-parameters for the fine-tuning (SB3 custom_objects, applied before the
    # model is set up), e.g. a shorter PPO rollout (n_steps) for more updates per env step
    objects = {**flat_space_objects(sb3_path, env.observation_space), **(overrides or {})}
    ss.model = model = algo_class(algo).load(sb3_path, env=env, device="cpu",
                                             custom_objects=objects)
    model.set_random_seed(seed + 1)
    # the replay buffer `deltanet train` saves beside its <stem>.sb3.zip (another zip, such as
    # an imported agent's, has none)
    name = sb3_path.name
    rb = (sb3_path.with_name(name[:-len(".sb3.zip")] + ".sb3.replay.pkl")
          if name.endswith(".sb3.zip") else None)
    if hasattr(model, "replay_buffer"):
        if rb is not None and rb.exists():
            model.load_replay_buffer(rb)
            model.learning_starts = 0
        else:
            model.learning_starts = min(model.learning_starts or 1000, 1000)
    if algo == "dqn":
        model.exploration_schedule = ConstantSchedule(model.exploration_final_eps)
    ss.linears = policy_linears(model)
    ss.optimizers = ([model.actor.optimizer] if algo in ("sac", "td3")
                     else [model.policy.optimizer])
    return ss


def make_select_callback(ss: _Session, prune_cb, steps: int, episodes: int, checks: int = 4,
                         log=print):
    """Validate the pruned policy (module doc, "Keeping the best pruned policy"): the one-shot
    pruning at the start (the final masks on the weights before fine-tuning; the fine-tuning
    then starts from the dense weights as before), then ``checks`` evenly spaced steps after
    the masks are final; :meth:`finish` validates the final policy, restores the best into the
    model and ``prune_cb.masks`` and returns the record for the provenance."""
    import copy

    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    from .train import VALIDATION_SEED, make_vec_env, validation_seeds

    ramp_steps = prune_cb.ramp_steps
    at = sorted({ramp_steps + k * (steps - ramp_steps) // checks for k in range(checks)})
    env = make_vec_env(ss.env_id, 1, VALIDATION_SEED, vecnormalize=ss.vn_src)
    if ss.vn_src is not None:
        env.training, env.norm_reward = False, False

    class SelectBest(BaseCallback):
        def __init__(self):
            super().__init__()
            self.best = None  # (mean return, step, policy state, masks)
            self.todo = list(at)
            self.final_mean = None

        def validate(self, what: str) -> float:
            env.seed(VALIDATION_SEED)
            rets, _ = evaluate_policy(self.model, env, n_eval_episodes=episodes,
                                      deterministic=True, return_episode_rewards=True)
            mean = float(np.mean(rets))
            t = int(self.model.num_timesteps)
            if self.best is None or mean >= self.best[0]:
                self.best = (mean, t, copy.deepcopy(self.model.policy.state_dict()),
                             [mk.clone() for mk in prune_cb.masks])
            log(f"  validation of {what}: mean return over {episodes} episodes {mean:.2f} "
                f"(best {self.best[0]:.2f})")
            return mean

        def _on_training_start(self) -> None:
            dense = copy.deepcopy(self.model.policy.state_dict())
            prune_cb.update(ramp_steps)  # the final masks on the weights as they are
            self.validate("the one-shot pruning (fine-tuning step 0)")
            self.model.policy.load_state_dict(dense)
            prune_cb.update(0)

        def _on_step(self) -> bool:
            if self.todo and self.num_timesteps >= self.todo[0] and prune_cb.current >= 1.0:
                while self.todo and self.num_timesteps >= self.todo[0]:
                    self.todo.pop(0)
                self.validate(f"fine-tuning step {self.num_timesteps:,}")
            return True

        def finish(self) -> dict:
            self.final_mean = self.validate("the final policy")
            env.close()
            mean, t, state, masks = self.best
            if t != int(self.model.num_timesteps):
                what = "the one-shot pruning" if t == 0 else f"fine-tuning step {t:,}"
                log(f"keeping the best validated pruned policy, {what}: mean return "
                    f"{mean:.2f} (the final one: {self.final_mean:.2f})")
                self.model.policy.load_state_dict(state)
                prune_cb.masks = masks
            return {"finetune_step": t, "validation_mean_return": mean,
                    "final_validation_mean_return": self.final_mean,
                    "validation_episodes": episodes,
                    "validation_seeds": validation_seeds(episodes)}

    return SelectBest()


def _export_masked(ss: _Session, prov: dict, masks, vnpath, log):
    """The session's current policy as a float artifact with ``masks``."""
    from deltanet.pysim import LayerParams

    from .train import export_policy

    m = export_policy(ss.model, ss.env_id, prov, vnpath, log)
    return m.replace(params=[LayerParams(p.weight, p.bias, mk) for p, mk in zip(m.params, masks)])


def prune_finetune(model_path, sparsity, out, *, scope: str = "per-layer",
                   lanes: int | None = None, finetune_steps: int | None = None,
                   sb3_path=None, progress: bool = True, log=print,
                   whole_columns: bool = False, out_sparsity: float | None = None,
                   overrides: dict | None = None, cleanup: bool = False,
                   eval_episodes: int | None = None):
    """Gradual magnitude pruning of the policy in an artifact's SB3 model, with fine-tuning
    (``sparsity``: one target or one per layer); ``cleanup``: then remove the hidden units
    nothing reads (:func:`apply_cleanup`); ``eval_episodes``: validation episodes of the
    best-policy selection (module doc; None: 20, Atari 0; 0: keep the final policy)."""
    from stable_baselines3.common.callbacks import CallbackList

    from deltanet.pysim import save_model

    from .atari import is_atari
    from .train import EVAL_EPISODES, save_sb3_atomic, sb3_paths, vecnormalize_path, versions

    sparsity = check_sparsities(sparsity)
    if out_sparsity is not None:
        out_sparsity = check_sparsity(out_sparsity)
    ss = _finetune_session(model_path, sb3_path, overrides)
    src, prov, model, env_id, algo = ss.src, ss.prov, ss.model, ss.env_id, ss.algo
    steps = finetune_steps if finetune_steps is not None else max(1000, prov.get("steps", 0) // 2)
    cb = make_prune_callback(ss.linears, sparsity, steps, scope, lanes, log=log,
                             whole_columns=whole_columns, out_final=out_sparsity)
    if eval_episodes is None:
        eval_episodes = 0 if is_atari(env_id) else EVAL_EPISODES
    if not isinstance(eval_episodes, int) or eval_episodes < 0:
        raise ValueError(f"eval_episodes must be a non-negative integer, got {eval_episodes!r}")
    select = (make_select_callback(ss, cb, steps, eval_episodes, log=log)
              if steps > 0 and eval_episodes > 0 else None)
    hooks = [o.register_step_post_hook(cb.apply) for o in ss.optimizers]
    t0 = time.time()
    log(f"pruning {env_id} {algo.upper()} policy to sparsity {sparsity} ({scope}"
        f"{f', {lanes} lanes balanced' if lanes else ''}"
        f"{', whole columns where n_out <= lanes' if lanes and whole_columns else ''}"
        f"{f', output layer {out_sparsity}' if out_sparsity is not None else ''}), "
        f"fine-tuning {steps:,} env steps")
    try:
        if steps > 0:
            model.learn(total_timesteps=steps, progress_bar=shown(progress),
                        callback=cb if select is None else CallbackList([cb, select]))
        else:
            cb.init_callback(model)
            cb.update(1)
    finally:
        for h in hooks:
            h.remove()
    cb.apply()
    selected = select.finish() if select is not None else None
    out = Path(out)
    zpath, rbpath = sb3_paths(out)
    vnpath = vecnormalize_path(out) if ss.vn_src is not None else None
    save_sb3_atomic(model, zpath, rbpath if hasattr(model, "replay_buffer") else None, vnpath)
    masks = [mk.cpu().numpy().astype(bool) for mk in cb.masks]
    new_prov = dict(prov)
    new_prov.update({
        "sb3_zip": zpath.name,
        "pruning": {"method": "gradual magnitude (Zhu & Gupta cubic) + RL fine-tuning",
                    "target": sparsity, "scope": scope, "lanes": lanes,
                    "whole_columns": whole_columns, "out_sparsity": out_sparsity,
                    "overrides": dict(overrides or {}),
                    "finetune_steps": steps, "ramp_fraction": 2 / 3, "events": 10,
                    "source": str(model_path), "source_checksum": src.meta.get("checksum"),
                    "seconds": round(time.time() - t0, 1), **mask_stats(masks, lanes)},
        "versions": versions(),
    })
    if selected is not None:
        new_prov["pruning"]["selected"] = selected
    if "pruning" in prov:  # pruned again: the earlier pruning's record, kept as its history
        new_prov["pruning"]["previous"] = prov["pruning"]
    new_prov.pop("vecnormalize", None)  # export_policy records the saved copy
    m = _export_masked(ss, new_prov, masks, vnpath, log)
    if cleanup:
        m = apply_cleanup(m, lanes, log)
    save_model(m, out)
    ss.env.close()
    st = new_prov["pruning"]
    bal = f", lane balance {st['lane_balance']}" if lanes else ""
    log(f"wrote {out}: sparsity {st['sparsity']:.3f} per layer {st['per_layer_sparsity']}"
        f"{bal} ({time.time() - t0:.0f} s)")
    return m


def finetune_passes(pruning: dict) -> list:
    """Fine-tuning env steps of each pruning pass that made a model, oldest first: its
    provenance's ``pruning`` record and the ``previous`` ones it keeps (a policy pruned again,
    :func:`prune_finetune`); a one-shot pass counts 0."""
    passes = []
    while pruning:
        passes.append(int(pruning.get("finetune_steps", 0)))
        pruning = pruning.get("previous")
    return passes[::-1]


def ladder_sparsities(model, lanes: int, levels: int) -> list:
    """Per-layer sparsity of each level ``k = 0 .. levels`` of :func:`prune_ladder`: the kept
    density falls geometrically from 1 to that of the sparsest lane-balanced mask (one weight
    per lane and column; one column where a layer has at most one row per lane),
    ``density_k = density_final ** (k / levels)``."""
    out = []
    finals = []
    for p in model.params:
        n_out = int(p.weight.shape[0])
        n_in = int(np.prod(p.weight.shape[1:]))
        rows = -(-n_out // lanes)
        finals.append(1.0 / n_in if rows == 1 else 1.0 / rows)
    for k in range(levels + 1):
        out.append([round(1.0 - d ** (k / levels), 6) for d in finals])
    return out


#: distillation of a ladder level (:class:`Distiller`): env steps of states the pruned policy
#: visits per round, rounds, Adam steps per round, minibatch, learning rate (linear decay to 0),
#: and the most bytes of observations kept
DISTILL_SAMPLES = 8_192
DISTILL_ROUNDS = 2
DISTILL_STEPS = 2_000
DISTILL_BATCH = 256
DISTILL_LR = 1e-3
DISTILL_BUFFER_BYTES = 256 << 20


class Distiller:
    """Policy distillation for the pruning ladder: the pruned policy's outputs (logits, action
    means or Q-values: what the exported network computes) are regressed onto those of the dense
    policy it was pruned from (mean squared error), on the states the pruned policy itself
    visits (DAgger: a round collects ``DISTILL_SAMPLES`` env steps with the current pruned
    policy acting deterministically, then trains ``DISTILL_STEPS`` Adam steps on every state
    collected so far, the masks re-applied after each step). Cheap next to RL fine-tuning and
    the same for every algorithm: a level whose return it recovers needs no RL steps.

    ``ss`` is the fine-tuning session (its policy modules are trained in place); its own env
    (seeded ``seed``, the session's VecNormalize statistics frozen) so that the RL rollouts
    are left alone."""

    def __init__(self, ss: _Session, seed: int):
        from stable_baselines3.common.preprocessing import (
            is_image_space,
            is_image_space_channels_first,
        )
        from stable_baselines3.common.vec_env import VecTransposeImage
        from torch import nn

        from .export import sb3_actor
        from .train import make_vec_env

        actor = sb3_actor(ss.model)
        self.ss = ss
        self.student = nn.Sequential(*[m for _, m in actor.modules])
        self.teacher = copy.deepcopy(self.student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.scale = float(actor.image_scale)
        # an argmax decoder (Q-values, logits) ignores an offset common to all outputs: the
        # loss then compares the outputs less their mean, so that it spends nothing on what
        # cannot change the action (a DQN's Q-values differ by far less than their size)
        self.centred = actor.decoder.kind == "argmax"
        env = make_vec_env(ss.env_id, max(1, int(ss.model.n_envs)), seed,
                           vecnormalize=ss.vn_src)
        if ss.vn_src is not None:
            env.training = False
        if (is_image_space(env.observation_space)
                and not is_image_space_channels_first(env.observation_space)):
            env = VecTransposeImage(env)  # as SB3 wraps it: the network sees CHW
        self.env = env
        self.obs = None
        self.states: list = []  # (observations, the dense policy's outputs) per round
        self.rng = np.random.default_rng(seed)

    def _tensor(self, x):
        import torch

        return torch.as_tensor(np.asarray(x), dtype=torch.float32) * self.scale

    def collect(self, n: int) -> None:
        """``n`` env steps (at least) with the pruned policy acting; the states kept (the
        oldest dropped beyond ``DISTILL_BUFFER_BYTES``)."""
        import torch

        if self.obs is None:
            self.obs = self.env.reset()
        new = []
        while sum(len(x) for x in new) < n:
            act, _ = self.ss.model.predict(self.obs, deterministic=True)
            new.append(np.array(self.obs, copy=True))
            self.obs, _, _, _ = self.env.step(act)
        x = np.concatenate(new)
        with torch.no_grad():  # the dense policy's outputs: the targets, computed once
            y = torch.cat([self.teacher(self._tensor(x[i:i + 4096]))
                           for i in range(0, len(x), 4096)])
        self.states.append((x, y))
        keep = max(DISTILL_BATCH, DISTILL_BUFFER_BYTES // max(1, x[0].nbytes))
        while sum(len(s[0]) for s in self.states[1:]) >= keep:
            self.states.pop(0)

    def train(self, apply_masks, steps: int = DISTILL_STEPS) -> float:
        """``steps`` Adam steps on the states collected; ``apply_masks()`` after each. The last
        minibatch loss."""
        import torch

        x_all = np.concatenate([x for x, _ in self.states])
        y_all = torch.cat([y for _, y in self.states])
        params = [p for p in self.student.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=DISTILL_LR)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / max(1, steps))
        self.student.train()
        loss = torch.zeros(())
        for _ in range(steps):
            idx = self.rng.integers(0, len(x_all), size=min(DISTILL_BATCH, len(x_all)))
            loss = self.loss(self.student(self._tensor(x_all[idx])),
                             y_all[torch.as_tensor(idx)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            apply_masks()
        self.student.eval()
        return float(loss.detach())

    def loss(self, out, target):
        """Mean squared error of the outputs (less their mean over the outputs, for argmax)."""
        import torch

        if self.centred:
            out = out - out.mean(dim=-1, keepdim=True)
            target = target - target.mean(dim=-1, keepdim=True)
        return torch.nn.functional.mse_loss(out, target)

    def recover(self, apply_masks) -> float:
        """``DISTILL_ROUNDS`` rounds of collect + train; the last loss."""
        loss = float("nan")
        for _ in range(DISTILL_ROUNDS):
            self.collect(DISTILL_SAMPLES)
            loss = self.train(apply_masks)
        return loss

    def close(self) -> None:
        self.env.close()


#: how the ladder's levels are fine-tuned (recorded in the provenance and the ladder's cache key)
LADDER_METHOD = ("lane-balanced magnitude ladder; each level distilled from the dense policy, "
                 "then RL fine-tuning until recovered")
#: seeds of the ladder's recovery checks (``LADDER_SEED + i``; no other step uses them)
LADDER_SEED = 600_000
#: episodes of a recovery check
LADDER_EPISODES = 20
#: a level fine-tunes for at most this many nominal spans (``finetune_steps / (levels + 1)``)
LADDER_CAP = 3


def float_returns(model, episodes: int = LADDER_EPISODES, seed: int = LADDER_SEED) -> np.ndarray:
    """Float (dense-update) returns of ``model`` on seeds ``seed + i`` (default: the ladder's
    check seeds)."""
    from .rollout import run_episodes

    res = run_episodes(model, episodes, seed, mode="float", delta=False, progress=False)
    return np.asarray(res.summary()["returns"], dtype=np.float64)


def recovered(returns, ref, budget: float) -> tuple:
    """``(ok, mean difference)``: whether a level's check ``returns`` are not clearly below
    ``budget`` of the dense ``ref`` returns on the same seeds: the mean paired difference plus
    one standard error is ``>= -(1 - budget) * |mean(ref)|`` (lenient on purpose: the check
    only decides when the ladder moves on)."""
    d = np.asarray(returns, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return bool(d.mean() + se >= -(1.0 - budget) * abs(float(np.mean(ref)))), float(d.mean())


def prune_ladder(model_path, folder, *, lanes: int, levels: int, finetune_steps: int,
                 budget: float = 0.95, episodes: int = LADDER_EPISODES, progress: bool = True,
                 log=print) -> list:
    """One run of lane-balanced pruning with RL fine-tuning down a ladder of ``levels + 1``
    sparsities (:func:`ladder_sparsities`); the policy at the end of each level is written to
    ``folder/level_<k>.npz`` (float, masked, not cleaned up: every level has the dense shapes).
    Returns the paths. ``deltanet compress`` searches over the levels.

    A level's mask is applied, then the pruned policy is distilled from the dense one
    (:class:`Distiller`: its outputs regressed onto the dense policy's on the states it visits;
    on LunarLanderContinuous's PPO this alone holds the return down to sparsity 0.88, where
    RL fine-tuning lost 12 points already at 0.25). The RL fine-tuning steps follow recovery,
    within ``finetune_steps`` env steps in all: a level is checked (float return over
    ``episodes`` episodes on seeds ``LADDER_SEED + i``) once distilled and then every
    ``chunk`` steps (half a nominal span ``finetune_steps / (levels + 1)``, at least one
    rollout of an on-policy algorithm); it is
    kept and the next level begins once its returns are back within ``budget`` of the dense
    policy's on the same seeds (:func:`recovered`), or after ``LADDER_CAP`` spans with the
    policy of its best check (RL fine-tuning wanders). Levels that one-shot pruning does not
    hurt take no steps, so the hard ones get them: a DQN needs many more steps to recover at
    high sparsity than an even split gives it. Levels not reached when the steps run out are
    written without fine-tuning; the run stops early once the last level is kept."""
    from deltanet.pysim import save_model

    from .train import versions

    ss = _finetune_session(model_path)
    targets = ladder_sparsities(ss.src, lanes, levels)
    span = max(1, finetune_steps // (levels + 1))
    rollout = int(getattr(ss.model, "n_steps", 0) or 0) * int(ss.model.n_envs)
    chunk = max(1, span // 2, rollout)
    ref = float_returns(ss.src, episodes)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    whole = [-(-int(p.weight.shape[0]) // lanes) == 1 for p in ss.src.params]
    dist = Distiller(ss, ss.seed + 2)
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    def set_level(k):
        ws = [m.weight.detach().cpu().numpy().reshape(m.weight.shape[0], -1)
              for m in ss.linears]
        masks = [balanced_mask(w, sp, lanes, wc) if sp > 0 else np.ones(w.shape, dtype=bool)
                 for w, sp, wc in zip(ws, targets[k], whole)]
        cb.masks = [torch.as_tensor(mk.reshape(tuple(m.weight.shape)))
                    for mk, m in zip(masks, ss.linears)]
        cb.apply()
        cb.distill_loss = dist.recover(cb.apply)

    def current(k, steps, total):
        masks = [mk.cpu().numpy().astype(bool) for mk in cb.masks]
        prov = dict(ss.prov)
        prov.pop("sb3_zip", None)
        prov.pop("vecnormalize", None)
        prov.update({"pruning": {
            "method": LADDER_METHOD, "level": k, "levels": levels, "target": targets[k],
            "lanes": lanes,
            "finetune_steps": total, "level_steps": steps,
            "distillation": {"samples": DISTILL_ROUNDS * DISTILL_SAMPLES if k else 0,
                             "loss": cb.distill_loss if k else None},
            "source": str(model_path),
            "source_checksum": ss.src.meta.get("checksum"), **mask_stats(masks, lanes)},
            "versions": versions()})
        return _export_masked(ss, prov, masks, ss.vn_src, _silent_log)

    def snapshot(m, k, rets):
        ok, diff = recovered(rets, ref, budget)
        ret = float(rets.mean())
        prov = dict(m.meta["provenance"])
        prov["pruning"] = {**prov["pruning"], "check_return": round(ret, 4),
                           "check_reference": round(float(ref.mean()), 4), "recovered": ok}
        m = m.replace(meta={**m.meta, "provenance": prov})
        path = folder / f"level_{k}.npz"
        save_model(m, path)
        paths.append(path)
        st = prov["pruning"]
        log(f"ladder level {k}/{levels}: sparsity {st['sparsity']:.3f} per layer "
            f"{st['per_layer_sparsity']}, return {ret:.2f} (dense {ref.mean():.2f}"
            f"{'' if ok else ', not recovered'}) after distillation (loss "
            f"{st['distillation']['loss'] or 0:.3g}) and {st['level_steps']:,} RL "
            f"fine-tuning steps ({st['finetune_steps']:,} in all)")

    class Ladder(BaseCallback):
        def __init__(self):
            super().__init__()
            self.masks = [torch.ones_like(m.weight, dtype=torch.bool) for m in ss.linears]
            self.level = 0
            self.start = 0
            self.level_start = 0
            self.check_at = 0
            self.best = None  # (check returns, policy state, model) of the level's best check
            self.distill_loss = None

        def apply(self, *_args, **_kwargs):
            with torch.no_grad():
                for m, mask in zip(ss.linears, self.masks):
                    m.weight.mul_(mask)

        def _on_training_start(self):
            self.start = self.num_timesteps

        def _on_step(self) -> bool:
            now = self.num_timesteps - self.start
            if now < self.check_at:
                return True
            # check the level (at once for a new one, then every chunk): keep it and go on
            # once recovered, or after its cap with the best policy it had at a check (RL
            # fine-tuning, a DQN's above all, wanders); stop the run after the last level
            while True:
                used = now - self.level_start
                m = current(self.level, used, now)
                rets = float_returns(m, episodes)
                ok = recovered(rets, ref, budget)[0]
                if self.best is None or rets.mean() > self.best[0].mean():
                    self.best = (rets, copy.deepcopy(ss.model.policy.state_dict()), m)
                if not ok and used < LADDER_CAP * span:
                    self.check_at = now + chunk
                    return True
                if not ok:
                    rets, state, m = self.best
                    ss.model.policy.load_state_dict(state)
                self.best = None
                snapshot(m, self.level, rets)
                if self.level >= levels:
                    return False
                self.level += 1
                self.level_start = now
                set_level(self.level)

    cb = Ladder()
    hooks = [o.register_step_post_hook(cb.apply) for o in ss.optimizers]
    log(f"pruning ladder of {ss.env_id} {ss.algo.upper()}: {levels + 1} levels down to "
        f"sparsity {targets[-1]} ({lanes} lanes balanced), up to {finetune_steps:,} fine-tuning "
        f"env steps, each level until its return ({ref.mean():.2f} dense) is back within "
        f"{budget:g} "
        f"(checked every {chunk:,} steps, at most {LADDER_CAP * span:,} steps a level)")
    try:
        ss.model.learn(total_timesteps=max(1, finetune_steps), callback=cb,
                       progress_bar=shown(progress))
    finally:
        for h in hooks:
            h.remove()
    # the steps ran out: the level in progress and those not reached, without more steps
    total = ss.model.num_timesteps - cb.start
    while len(paths) < levels + 1:
        k = len(paths)
        used = total - cb.level_start if k == cb.level else 0
        if k != cb.level:
            cb.level = k
            set_level(k)
        m = current(k, used, total)
        snapshot(m, k, float_returns(m, episodes))
    ss.env.close()
    dist.close()
    return paths


def _silent_log(*args, **kwargs) -> None:
    pass


def apply_cleanup(model, lanes: int | None = None, log=print):
    """:func:`deltanet.cleanup.cleanup` on a pruned model, logging how many units each layer
    lost; with ``lanes`` the lane balance after the clean-up is recorded beside it."""
    from .cleanup import cleanup, cleanup_summary

    out, rep = cleanup(model)
    log(cleanup_summary(rep))
    if lanes:
        st = mask_stats([p.mask for p in out.params], lanes)
        out, order = order_for_lanes(out, lanes)
        st2 = mask_stats([p.mask for p in out.params], lanes)
        log(f"lane balance after the clean-up (rows renumbered): {st['lane_balance']}; "
            f"units re-ordered for {lanes} lanes: {st2['lane_balance']}")
        meta = dict(out.meta)
        prov = dict(meta["provenance"])
        prov["cleanup"] = {**rep, "lane_balance_renumbered": st["lane_balance"],
                           "lane_order": order, "lane_balance": st2["lane_balance"],
                           "balanced": st2["balanced"]}
        meta["provenance"] = prov
        out = out.replace(meta=meta)
    return out

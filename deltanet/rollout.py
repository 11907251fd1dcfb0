"""Closed-loop episodes with the reference network as the policy, batched over envs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deltanet.pysim import DeltaNetwork, Model

from .cleanup import dense_mults
from .envs import check_model_fits_env, make_env
from .progress import bar


@dataclass
class RolloutResult:
    returns: np.ndarray
    lengths: np.ndarray
    # per-layer sums over every env step taken
    sums: dict = field(default_factory=dict)
    dense_per_layer: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())

    def summary(self) -> dict:
        steps = max(self.steps, 1)
        per_layer = []
        for i, dense in enumerate(self.dense_per_layer):
            per_layer.append({
                "layer": i,
                "dense_mults_per_step": int(dense),
                "significant_mults_per_step": float(self.sums["significant"][i] / steps),
                "events_per_step": float(self.sums["events"][i] / steps),
                "weight_reads_per_step": float(self.sums["weight_reads"][i] / steps),
            })
        dense = float(self.dense_per_layer.sum())
        sig = float(self.sums["significant"].sum() / steps)
        return {
            "mean_return": float(self.returns.mean()),
            "std_return": float(self.returns.std()),
            "episodes": len(self.returns),
            "steps": int(self.steps),
            "mean_length": float(self.lengths.mean()),
            "returns": [float(r) for r in self.returns],
            "dense_mults_per_step": dense,
            "significant_mults_per_step": sig,
            "reduction": dense / sig if sig > 0 else float("inf"),
            "per_layer": per_layer,
        }


def merge_results(parts) -> RolloutResult:
    """One result of consecutive runs' episodes (in the given order), sums added."""
    return RolloutResult(np.concatenate([p.returns for p in parts]),
                         np.concatenate([p.lengths for p in parts]),
                         {k: sum(p.sums[k] for p in parts) for k in parts[0].sums},
                         parts[0].dense_per_layer)


def run_episodes(model: Model, episodes: int, seed: int, *, mode: str = "fixed",
                 delta: bool = True, batch: int | None = None, progress: bool = True,
                 max_steps: int | None = None, on_step=None, env_kwargs=None,
                 epsilon: float = 0.0, client=None) -> RolloutResult:
    """Run ``episodes`` episodes (env ``i`` reset with seed ``seed + i``), ``batch`` at a time.

    ``on_step(net, active)`` is called after every network step (``active``: bool per env).
    ``epsilon``: epsilon-greedy evaluation (the Nature DQN protocol plays with 0.05 so that an
    agent cannot stall a game forever): at every step, with probability ``epsilon``, an env
    takes a uniform random action instead of the network's. The network still steps on every
    observation; the draws come from generators seeded with the env's seed, so an episode does
    not depend on ``batch``.

    ``client``: a ``dask.distributed.Client`` (:func:`deltanet.cluster.dask_client`) to split
    the episodes into contiguous seed ranges, one per worker thread, and merge the results in
    seed order; an episode does not depend on the split either.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if client is not None:
        if on_step is not None:
            raise ValueError("on_step cannot be called from the workers of a client")
        parts = np.array_split(np.arange(episodes), min(episodes, sum(client.nthreads().values())))
        futures = [client.submit(run_episodes, model, len(p), seed + int(p[0]), mode=mode,
                                 delta=delta, batch=batch, progress=False, max_steps=max_steps,
                                 env_kwargs=env_kwargs, epsilon=epsilon) for p in parts]
        return merge_results(client.gather(futures))
    env_id = model.meta.get("env_id")
    if not env_id:
        raise ValueError(f"{model.meta.get('path', 'model')}: no env_id in the model")
    batch = min(batch or episodes, episodes)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    n_layers = len(model.config.layers)
    sums = {k: np.zeros(n_layers, dtype=np.int64)
            for k in ("significant", "events", "weight_reads")}
    pbar = bar(total=episodes, desc=f"{env_id} {mode}{'' if delta else ' dense'}",
               unit="ep", progress=progress, leave=False)
    dense = None
    for start in range(0, episodes, batch):
        idx = list(range(start, min(start + batch, episodes)))
        envs = [make_env(env_id, seed + i, **(env_kwargs or {}))() for i in idx]
        check_model_fits_env(model, envs[0])
        coins = [np.random.default_rng(seed + i) for i in idx]
        for env, i in zip(envs, idx):
            env.action_space.seed(seed + i)
        net = DeltaNetwork(model, mode=mode, delta=delta, batch=len(idx))
        dense = dense_mults(model)  # the trained network's, also after a clean-up
        obs = np.stack([np.asarray(e.reset(seed=seed + i)[0], dtype=np.float64).ravel()
                        for e, i in zip(envs, idx)])
        active = np.ones(len(idx), dtype=bool)
        t = 0
        while active.any():
            actions = net.act(obs)
            for k in ("significant", "events", "weight_reads"):
                sums[k] += net.last_counts[k][:, active].sum(axis=1)
            if on_step is not None:
                on_step(net, active.copy())
            for b, env in enumerate(envs):
                if not active[b]:
                    continue
                a = actions[b]
                if epsilon > 0 and coins[b].random() < epsilon:
                    a = env.action_space.sample()
                o, r, term, trunc, _ = env.step(a)
                returns[idx[b]] += float(r)
                lengths[idx[b]] += 1
                obs[b] = np.asarray(o, dtype=np.float64).ravel()
                if term or trunc:
                    active[b] = False
                    pbar.update(1)
            t += 1
            if max_steps is not None and t >= max_steps:
                pbar.update(int(active.sum()))
                break
        for env in envs:
            env.close()
    pbar.close()
    return RolloutResult(returns, lengths, sums, dense)

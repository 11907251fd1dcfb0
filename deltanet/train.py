"""Training RL policies with stable-baselines3 and exporting them as deltanet artifacts.

What ``deltanet train`` does
----------------------------
1. Builds the env (``deltanet.envs.make_env``) and refuses spaces deltanet cannot run: the
   observation must be a Box, the action Discrete or Box, and the algorithm must fit the action
   space (DQN: Discrete only; SAC: Box only; PPO: both).
2. Trains with SB3 on the CPU (``torch.set_num_threads(1)``), seeded (``seed`` for SB3, the envs
   and torch), ReLU MLPs only (``activation_fn=nn.ReLU``) so that the policy exports.
3. Writes checkpoints every ``checkpoint_every`` env steps into ``<out>.ckpt/``
   (``model_<steps>.zip`` plus ``replay_<steps>.pkl`` for off-policy algorithms; the zip is
   written last and atomically, so a checkpoint counts only when its zip exists; the two newest
   are kept). ``resume=True`` continues from the newest one (replay buffer included) up to
   ``steps`` *total* env steps; the schedules (learning rate, exploration) continue where they
   were because SB3 keeps ``num_timesteps``. Resumed runs are seeded with ``seed + num_timesteps``
   so they are deterministic, but not bit-identical to an uninterrupted run.
4. Saves the final SB3 model beside the artifact as ``<out stem>.sb3.zip`` (and, off-policy,
   ``<out stem>.sb3.replay.pkl``); ``deltanet prune`` fine-tunes from it. The artifact records
   the file name (relative to the artifact's folder) in ``provenance["sb3_zip"]``.
5. Exports the deterministic policy with :func:`deltanet.export.export_sb3` (float weights,
   placeholder formats until ``deltanet quantize``) with provenance: algorithm, steps, seed,
   hyper-parameters, library versions, training time.

Hyper-parameters come from :data:`HYPERPARAMS` (one table, rl-zoo values where rl-zoo has them,
with our smaller nets where those reach the reward) and :data:`ALGO_DEFAULTS` for other envs.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from .envs import check_supported, make_env

ALGOS = ("ppo", "dqn", "sac")

#: Defaults for any env without its own entry (SB3 defaults with ReLU 64-64 nets).
ALGO_DEFAULTS = {
    "ppo": {"n_envs": 4, "steps": 100_000, "net_arch": [64, 64], "kwargs": {}},
    "dqn": {"n_envs": 1, "steps": 100_000, "net_arch": [64, 64],
            "kwargs": {"learning_starts": 1000}},
    "sac": {"n_envs": 1, "steps": 50_000, "net_arch": [64, 64], "kwargs": {}},
}

#: Per-env hyper-parameters (rl-zoo style). ``lin_X`` means a learning rate (or clip range)
#: decaying linearly from X to 0; ``kwargs`` go to the SB3 constructor unchanged.
HYPERPARAMS = {
    ("CartPole-v1", "ppo"): {  # rl-zoo ppo.yml CartPole-v1
        "n_envs": 8, "steps": 100_000, "net_arch": [64, 64],
        "kwargs": {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98,
                   "n_epochs": 20, "ent_coef": 0.0, "learning_rate": "lin_0.001",
                   "clip_range": "lin_0.2"}},
    ("CartPole-v1", "dqn"): {  # rl-zoo dqn.yml CartPole-v1
        "n_envs": 1, "steps": 50_000, "net_arch": [256, 256],
        "kwargs": {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                   "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10,
                   "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
                   "exploration_final_eps": 0.04}},
    ("MountainCar-v0", "dqn"): {  # rl-zoo dqn.yml MountainCar-v0
        "n_envs": 1, "steps": 120_000, "net_arch": [256, 256],
        "kwargs": {"learning_rate": 4e-3, "batch_size": 128, "buffer_size": 10_000,
                   "learning_starts": 1000, "gamma": 0.98, "target_update_interval": 600,
                   "train_freq": 16, "gradient_steps": 8, "exploration_fraction": 0.2,
                   "exploration_final_eps": 0.07}},
    ("LunarLander-v3", "dqn"): {  # rl-zoo dqn.yml LunarLander-v2
        "n_envs": 1, "steps": 100_000, "net_arch": [256, 256],
        "kwargs": {"learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000,
                   "learning_starts": 0, "gamma": 0.99, "target_update_interval": 250,
                   "train_freq": 4, "gradient_steps": -1, "exploration_fraction": 0.12,
                   "exploration_final_eps": 0.1}},
    ("LunarLander-v3", "ppo"): {  # rl-zoo ppo.yml LunarLander-v2
        "n_envs": 16, "steps": 1_000_000, "net_arch": [64, 64],
        "kwargs": {"n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999,
                   "n_epochs": 4, "ent_coef": 0.01}},
    ("Pendulum-v1", "sac"): {  # rl-zoo sac.yml Pendulum-v1 (64-64 instead of 256-256)
        "n_envs": 1, "steps": 20_000, "net_arch": [64, 64],
        "kwargs": {"learning_rate": 1e-3}},
    ("Pendulum-v1", "ppo"): {  # rl-zoo ppo.yml Pendulum-v1
        "n_envs": 4, "steps": 100_000, "net_arch": [64, 64],
        "kwargs": {"n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10,
                   "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2,
                   "use_sde": True, "sde_sample_freq": 4}},
}


def hyperparams(env_id: str, algo: str) -> dict:
    """The table entry for ``(env_id, algo)`` or the algorithm's defaults (a deep copy)."""
    from .atari import DQN_ATARI, is_atari

    algo = algo.lower()
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {ALGOS}")
    if is_atari(env_id):
        if algo != "dqn":
            raise ValueError(f"{env_id}: Atari games are trained with DQN (the paper's agent), "
                             f"not {algo.upper()}")
        hp = DQN_ATARI
        return {"n_envs": hp["n_envs"], "steps": hp["steps"], "net_arch": hp["net_arch"],
                "kwargs": {k: (dict(v) if isinstance(v, dict) else v)
                           for k, v in hp["kwargs"].items()}}
    hp = HYPERPARAMS.get((env_id, algo), ALGO_DEFAULTS[algo])
    return {"n_envs": hp["n_envs"], "steps": hp["steps"], "net_arch": list(hp["net_arch"]),
            "kwargs": dict(hp["kwargs"])}


def algo_class(algo: str):
    from stable_baselines3 import DQN, PPO, SAC

    return {"ppo": PPO, "dqn": DQN, "sac": SAC}[algo.lower()]


def check_env_algo(env_id: str, algo: str) -> None:
    """Refuse unknown envs, unsupported spaces and algorithm/action-space mismatches."""
    from .atari import check_atari, is_atari

    algo = algo.lower()
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {ALGOS}")
    if is_atari(env_id):
        check_atari(env_id)
        hyperparams(env_id, algo)  # refuses non-DQN algorithms
        return
    env = make_env(env_id)()
    try:
        check_supported(env)
        act = env.action_space
        if algo == "dqn" and not isinstance(act, gym.spaces.Discrete):
            raise ValueError(f"{env_id}: DQN needs a Discrete action space, {env_id} has {act}")
        if algo == "sac" and not isinstance(act, gym.spaces.Box):
            raise ValueError(f"{env_id}: SAC needs a Box action space, {env_id} has {act}")
    finally:
        env.close()


def _schedule(v):
    if isinstance(v, str) and v.startswith("lin_"):
        start = float(v[4:])
        return lambda progress_remaining: progress_remaining * start
    return v


def versions() -> dict:
    import stable_baselines3
    import torch

    from . import __version__

    return {"deltanet": __version__, "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def make_vec_env(env_id: str, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    from .atari import is_atari, make_train_env

    if is_atari(env_id):
        return make_train_env(env_id, n_envs, seed)

    return sb3_make_vec_env(lambda: make_env(env_id)(), n_envs=n_envs, seed=seed)


# ---- checkpoints ----------------------------------------------------------------------------
_CKPT_RE = re.compile(r"^model_(\d+)\.zip$")


def ckpt_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".ckpt")


def sb3_paths(out) -> tuple[Path, Path]:
    """(SB3 zip, replay buffer pickle) saved beside the artifact ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".sb3.zip"), out.with_name(out.stem + ".sb3.replay.pkl")


def latest_checkpoint(folder) -> tuple[int, Path, Path | None] | None:
    """``(steps, zip, replay-or-None)`` of the newest complete checkpoint, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    if not found:
        return None
    steps, z = max(found)
    rb = folder / f"replay_{steps}.pkl"
    return steps, z, (rb if rb.exists() else None)


def save_sb3_atomic(model, path, replay_path=None) -> None:
    """Save the SB3 model (and replay buffer) so that a crash never leaves a partial zip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if replay_path is not None and hasattr(model, "save_replay_buffer"):
        tmp_rb = Path(replay_path).with_name("." + Path(replay_path).name + ".tmp.pkl")
        model.save_replay_buffer(tmp_rb)
        os.replace(tmp_rb, replay_path)
    tmp = path.with_name("." + path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)


def make_checkpoint_callback(folder, every: int, keep: int = 2):
    from stable_baselines3.common.callbacks import BaseCallback

    class Checkpoints(BaseCallback):
        """Every ``every`` env steps: ``model_<steps>.zip`` (+ ``replay_<steps>.pkl``)."""

        def __init__(self):
            super().__init__()
            self.folder = Path(folder)
            self.last = None

        def _on_training_start(self) -> None:
            self.last = self.num_timesteps

        def _on_step(self) -> bool:
            if self.num_timesteps - self.last >= every:
                self.save()
            return True

        def save(self):
            self.last = n = self.num_timesteps
            if (self.folder / f"model_{n}.zip").exists():
                return
            rb = self.folder / f"replay_{n}.pkl" if hasattr(self.model, "replay_buffer") else None
            save_sb3_atomic(self.model, self.folder / f"model_{n}.zip", rb)
            eps = [e["r"] for e in getattr(self.model, "ep_info_buffer", None) or []]
            if eps:  # Monitor returns (whole games for Atari: Monitor sits below AtariWrapper)
                print(f"checkpoint {n:,} steps: mean return of the last {len(eps)} episodes "
                      f"{np.mean(eps):.2f}", flush=True)
            olds = sorted((int(_CKPT_RE.match(p.name).group(1)), p)
                          for p in self.folder.iterdir() if _CKPT_RE.match(p.name))
            for s, p in olds[:-keep]:
                p.unlink(missing_ok=True)
                (self.folder / f"replay_{s}.pkl").unlink(missing_ok=True)

    return Checkpoints()


# ---- training -----------------------------------------------------------------------------
def train(env_id: str, algo: str, steps: int | None, seed: int, out, *, resume: bool = False,
          progress: bool = True, checkpoint_every: int | None = None, net_arch=None,
          overrides: dict | None = None, log=print):
    """Train (or resume) and export; returns the exported :class:`pysim.Model`."""
    import torch
    from stable_baselines3.common.utils import set_random_seed
    from torch import nn

    from pysim import save_model

    from .export import export_sb3

    algo = algo.lower()
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    check_env_algo(env_id, algo)
    hp = hyperparams(env_id, algo)
    from .atari import export_dqn_cnn, is_atari

    atari = is_atari(env_id)
    if net_arch is not None:
        if atari:
            raise ValueError("--net does not apply to Atari: the network is the Nature DQN")
        hp["net_arch"] = list(net_arch)
    hp["kwargs"].update(overrides or {})
    steps = steps or hp["steps"]
    out = Path(out)
    folder = ckpt_dir(out)
    every = checkpoint_every or max(1000, steps // 10)
    torch.set_num_threads(1)
    cls = algo_class(algo)
    env = make_vec_env(env_id, hp["n_envs"], seed)
    ck = latest_checkpoint(folder) if resume else None
    t0 = time.time()
    if ck is not None:
        done, zpath, rb = ck
        log(f"resuming {env_id} {algo.upper()} from {zpath} ({done} of {steps} steps)")
        set_random_seed(seed + done)
        model = cls.load(zpath, env=env, device="cpu")
        model.set_random_seed(seed + done)
        if rb is not None and hasattr(model, "load_replay_buffer"):
            model.load_replay_buffer(rb)
        remaining = steps - model.num_timesteps
        reset = False
    else:
        if resume:
            log(f"no checkpoint in {folder}: starting {env_id} {algo.upper()} from scratch")
        set_random_seed(seed)
        kwargs = {k: _schedule(v) for k, v in hp["kwargs"].items()}
        if atari:  # SB3's NatureCNN with the default 512-unit head = the Nature DQN
            policy, policy_kwargs = "CnnPolicy", {}
        else:
            policy = "MlpPolicy"
            policy_kwargs = {"net_arch": hp["net_arch"], "activation_fn": nn.ReLU}
        model = cls(policy, env, seed=seed, device="cpu", verbose=0,
                    policy_kwargs=policy_kwargs, **kwargs)
        remaining = steps
        reset = True
    log(f"training {env_id} with {algo.upper()} for {steps:,} env steps, net "
        f"{hp['net_arch']}, seed {seed}; checkpoints every {every:,} steps in {folder}/")
    if remaining > 0:
        cb = make_checkpoint_callback(folder, every)
        model.learn(total_timesteps=remaining, callback=cb, progress_bar=progress,
                    reset_num_timesteps=reset)
        cb.save()
    zpath, rbpath = sb3_paths(out)
    save_sb3_atomic(model, zpath, rbpath if hasattr(model, "replay_buffer") else None)
    provenance = {
        "algo": algo.upper(), "env_id": env_id, "steps": int(model.num_timesteps),
        "seed": seed, "n_envs": hp["n_envs"], "net_arch": hp["net_arch"],
        "activation": "relu", "hyperparams": hp["kwargs"], "sb3_zip": zpath.name,
        "train_seconds": round(time.time() - t0, 1), "resumed": ck is not None,
        "versions": versions(),
    }
    m = export_dqn_cnn(model, env_id, provenance) if atari else export_sb3(model, env_id,
                                                                             provenance)
    save_model(m, out)
    env.close()
    log(f"wrote {out} ({model.num_timesteps:,} steps, {time.time() - t0:.0f} s); "
        f"SB3 model {zpath}")
    return m


def find_sb3(model_meta: dict, artifact_path) -> Path:
    """The SB3 zip recorded in an artifact's provenance (relative to the artifact's folder)."""
    prov = model_meta.get("provenance", {})
    name = prov.get("sb3_zip")
    if not name:
        raise ValueError(f"{artifact_path}: no SB3 model recorded in its provenance "
                         "(train it with `deltanet train`, or pass --sb3)")
    p = Path(name)
    if not p.is_absolute():
        p = Path(artifact_path).parent / p
    if not p.exists():
        raise FileNotFoundError(f"{artifact_path}: its SB3 model {p} is missing (bundled "
                                "artifacts ship without it: re-train with `deltanet train`, "
                                "or pass --sb3)")
    return p

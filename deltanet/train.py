"""Training RL policies with stable-baselines3 and exporting them as deltanet artifacts.

What ``deltanet train`` does
----------------------------
1. Builds the env (``deltanet.envs.make_env``) and refuses spaces deltanet cannot run: the
   observation must be a Box, the action Discrete or Box, and the algorithm must fit the action
   space (DQN: Discrete only; SAC: Box only; PPO: both).
2. Trains with SB3 on the CPU (``torch.set_num_threads(1)``; ``device="cuda"`` puts the network
   on a GPU), seeded (``seed`` for SB3, the envs and torch), ReLU MLPs only
   (``activation_fn=nn.ReLU``) so that the policy exports. ``time_limit`` (seconds) stops the
   training early, with a checkpoint, for jobs on borrowed machines; ``--resume`` continues it.
3. Writes checkpoints every ``checkpoint_every`` env steps into ``<out>.ckpt/``
   (``model_<steps>.zip`` plus ``replay_<steps>.pkl`` for off-policy algorithms; the zip is
   written last and atomically, so a checkpoint counts only when its zip exists; the two newest
   are kept). ``resume=True`` continues from the newest one (replay buffer included) up to
   ``steps`` *total* env steps; the schedules (learning rate, exploration) continue where they
   were because SB3 keeps ``num_timesteps``. Resumed runs are seeded with ``seed + num_timesteps``
   so they are deterministic, but not bit-identical to an uninterrupted run. A checkpoint without
   its replay buffer (one that was too large to move between machines) resumes with an empty
   buffer that is refilled for the algorithm's ``learning_starts`` steps before learning goes on.
4. **Keeps the best policy** (rl-zoo3's practice, with SB3's ``EvalCallback``): every
   ``eval_every`` env steps (default: at each checkpoint) the deterministic policy plays
   ``eval_episodes`` validation episodes (default 20; 0 for Atari games, whose games are long)
   seeded ``VALIDATION_SEED ...`` - the same episodes every time, never used in training and
   apart from the seeds that calibration and ``deltanet compress`` judge with - and the best
   mean so far is kept in ``<out>.ckpt/best.zip`` (+ ``best.json``). DQN on MountainCar with
   rl-zoo3's settings (seed 1), for one: validation mean -99.4 at 96k steps, -200 (never at
   the goal) at the last checkpoint, 120k; the best scored -96.9 on 20 held-out episodes.
   At the end the best is exported (``keep="last"``: the final policy), and the provenance
   records the step and validation return it was chosen at.
5. Saves the chosen SB3 model beside the artifact as ``<out stem>.sb3.zip`` (and, off-policy,
   ``<out stem>.sb3.replay.pkl``); ``deltanet prune`` fine-tunes from it. The artifact records
   the file name (relative to the artifact's folder) in ``provenance["sb3_zip"]``.
5. Exports the deterministic policy with :func:`deltanet.export.export_sb3` (float weights,
   placeholder formats until ``deltanet quantize``) with provenance: algorithm, steps, seed,
   hyper-parameters, library versions, training time.

Hyper-parameters come from rl-zoo3's tuned files (:mod:`deltanet.zoo`: the YAML files of the
installed ``rl_zoo3`` package) for every env they cover, else from :data:`ALGO_DEFAULTS`
(Atari: :data:`deltanet.atari.DQN_ATARI`); ``hyperparams()["source"]`` names the one used
("rl-zoo3 2.7.0 dqn.yml MountainCar-v0" or "algorithm defaults ..."), and ``deltanet train``
prints it with the notes (activation switched to ReLU, an aliased env id, an overridden net or
budget). An entry with ``normalize`` trains inside SB3's VecNormalize; its statistics are saved
beside the SB3 model (``<out stem>.sb3.vecnormalize.pkl``, in the checkpoints too) and folded
into the artifact's input affine map (:func:`export_policy`).
"""

from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from .envs import ale_setting_id, check_supported, make_env
from .importers import load_vecnormalize
from .progress import shown
from .versions import versions
from .zoo import SCHEDULE_KEYS, ZOO_VERSION, schedule, zoo_folder, zoo_hyperparams

__all__ = ["ALGOS", "ALGO_DEFAULTS", "VALIDATION_SEED", "algo_class", "check_env_algo",
           "export_policy", "find_sb3", "hyperparams", "sb3_paths", "train", "versions"]

#: validation episode ``i`` of the best-policy selection is reset with ``VALIDATION_SEED + i``
#: (calibration judges on 100000+ and 200000+, ``deltanet compress`` on 400000+ and 500000+)
VALIDATION_SEED = 700_000
def validation_seeds(episodes: int) -> str:
    """The reset seeds of ``episodes`` validation episodes, as the provenance records them."""
    return f"{VALIDATION_SEED}..{VALIDATION_SEED + episodes - 1}"


#: validation episodes per evaluation by default (Atari: 0, no selection)
EVAL_EPISODES = 20

ALGOS = ("ppo", "a2c", "dqn", "sac", "td3")
#: the algorithms that learn from a replay buffer
OFF_POLICY = ("dqn", "sac", "td3")
DEVICES = ("cpu", "cuda")
#: action spaces each algorithm takes
DISCRETE_ONLY = ("dqn",)
BOX_ONLY = ("sac", "td3")

#: Defaults for any env without a usable rl-zoo3 entry (SB3 defaults with ReLU 64-64 nets).
ALGO_DEFAULTS = {
    "ppo": {"n_envs": 4, "steps": 100_000, "net_arch": [64, 64], "kwargs": {}},
    "a2c": {"n_envs": 4, "steps": 100_000, "net_arch": [64, 64], "kwargs": {}},
    "dqn": {"n_envs": 1, "steps": 100_000, "net_arch": [64, 64],
            "kwargs": {"learning_starts": 1000}},
    "sac": {"n_envs": 1, "steps": 50_000, "net_arch": [64, 64], "kwargs": {}},
    "td3": {"n_envs": 1, "steps": 50_000, "net_arch": [64, 64], "kwargs": {}},
}
#: SB3's default rollout length per env of the on-policy algorithms
ON_POLICY_N_STEPS = {"ppo": 2048, "a2c": 5}
#: SB3's MlpPolicy net of each algorithm: used for an rl-zoo3 entry that names no net_arch
SB3_DEFAULT_NET = {"ppo": [64, 64], "a2c": [64, 64], "dqn": [64, 64], "sac": [256, 256],
                   "td3": [400, 300]}


def hyperparams(env_id: str, algo: str, *, log=None) -> dict:
    """Hyper-parameters for ``(env_id, algo)`` (a fresh dict): ``source``, ``notes``,
    ``n_envs``, ``steps``, ``net_arch``, ``policy_kwargs``, ``normalize``, ``noise``,
    ``kwargs``; from rl-zoo3's file when it has a usable entry, else the defaults (see the
    module doc). ``log``: also print the source line and the notes."""
    from .atari import DQN_ATARI, is_atari

    algo = algo.lower()
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {ALGOS}")
    if is_atari(env_id):
        if algo != "dqn":
            raise ValueError(f"{env_id}: Atari games are trained with DQN (the paper's agent), "
                             f"not {algo.upper()}")
        hp = DQN_ATARI
        out = {"source": "deltanet Atari DQN (rl-zoo3 dqn.yml atari entry, learning starts "
                         "after 20k steps)", "notes": [],
               "n_envs": hp["n_envs"], "steps": hp["steps"], "net_arch": hp["net_arch"],
               "policy_kwargs": copy.deepcopy(hp["policy_kwargs"]), "normalize": None,
               "noise": None,
               "kwargs": {k: (dict(v) if isinstance(v, dict) else v)
                          for k, v in hp["kwargs"].items()}}
    else:
        zoo = zoo_hyperparams(env_id, algo)
        d = ALGO_DEFAULTS[algo]
        if zoo is None or "unusable" in zoo:
            why = ("rl_zoo3 is not installed (make install; or pip install --no-deps "
                   f"rl_zoo3=={ZOO_VERSION})" if zoo is None and zoo_folder() is None else
                   f"rl-zoo3 has no {algo}.yml entry for {env_id}" if zoo is None else
                   f"{zoo['source']} {zoo['unusable']}")
            out = {"source": f"algorithm defaults ({why})", "notes": [],
                   "n_envs": d["n_envs"], "steps": d["steps"], "net_arch": list(d["net_arch"]),
                   "policy_kwargs": {}, "normalize": None, "noise": None,
                   "kwargs": dict(d["kwargs"])}
        else:
            out = dict(zoo)
            if out["steps"] is None:
                out["steps"] = d["steps"]
            if out["net_arch"] is None:
                out["net_arch"] = list(SB3_DEFAULT_NET[algo])
                out["notes"] = out["notes"] + [f"net_arch {out['net_arch']} (SB3's default)"]
    if log is not None:
        log(f"hyper-parameters: {out['source']}")
        for n in out["notes"]:
            log(f"  note: {n}")
    return out


def algo_class(algo: str):
    from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

    return {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}[algo.lower()]


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
    paper_id = ale_setting_id(env_id)
    if paper_id is not None:
        raise ValueError(f"{env_id}: deltanet trains Atari games in the Nature-DQN setting of "
                         f"{paper_id} (frame skip 4, 84x84 grey, 4 frames stacked); "
                         f"{env_id} would train on raw 210x160x3 frames with other frame skips "
                         f"or sticky actions: use --env {paper_id}")
    env = make_env(env_id)()
    try:
        check_supported(env)
        act = env.action_space
        if algo in DISCRETE_ONLY and not isinstance(act, gym.spaces.Discrete):
            raise ValueError(f"{env_id}: {algo.upper()} needs a Discrete action space, "
                             f"{env_id} has {act}")
        if algo in BOX_ONLY and not isinstance(act, gym.spaces.Box):
            raise ValueError(f"{env_id}: {algo.upper()} needs a Box action space, {env_id} "
                             f"has {act}")
    finally:
        env.close()


#: SB3's default replay buffer size (off-policy algorithms)
SB3_BUFFER_SIZE = 1_000_000


def check_replay_memory(env_id: str, algo: str, kwargs: dict, obs_space) -> None:
    """Refuse an off-policy run whose replay buffer of observations cannot fit this machine's
    memory (SB3 would fail allocating it, or swap), e.g. DQN's million-entry buffer on
    CarRacing's 96x96x3 frames: 55 GB."""
    if algo not in OFF_POLICY:
        return
    size = int(kwargs.get("buffer_size", SB3_BUFFER_SIZE))
    per_obs = int(np.prod(obs_space.shape)) * np.dtype(obs_space.dtype).itemsize
    copies = 1 if kwargs.get("optimize_memory_usage") else 2  # next observations apart
    need = size * per_obs * copies
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise ValueError(f"{env_id}: {algo.upper()}'s replay buffer of {size:,} observations of "
                         f"{per_obs:,} bytes needs {need / 1e9:.1f} GB, more than this "
                         f"machine's {have / 1e9:.1f} GB of memory (buffer_size "
                         f"{size:,} from the hyper-parameters)")


#: SB3 constructor arguments that ``--hyperparams`` cannot set: deltanet sets them itself
#: (``policy_kwargs`` entries go by their own dotted keys, ``policy_kwargs.<name>``)
RESERVED_KWARGS = frozenset({"self", "policy", "env", "seed", "device", "verbose",
                             "policy_kwargs", "tensorboard_log", "_init_setup_model",
                             "action_noise", "replay_buffer_class", "stats_window_size"})
#: policy arguments that ``--hyperparams policy_kwargs.<name>`` cannot set: the exported
#: network's shape and activation (``--net``), and what SB3 passes itself
RESERVED_POLICY = frozenset({"self", "observation_space", "action_space", "lr_schedule",
                             "net_arch", "activation_fn", "features_extractor_class",
                             "features_extractor_kwargs", "optimizer_class"})
#: the run's ``--hyperparams``, kept beside its checkpoints so that a resumed run keeps them
OVERRIDES_FILE = "hyperparams.json"


def parse_hyperparams(items) -> dict:
    """``KEY=VALUE`` strings (``--hyperparams``) -> ``{KEY: value}``, VALUE a Python literal
    (number, string, True/False/None, list, dict); ValueError names the bad one."""
    import ast

    out = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--hyperparams {item!r}: expected KEY=VALUE, e.g. "
                             "learning_rate=5e-5 or policy_kwargs.optimizer_kwargs.eps=3.125e-4")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"--hyperparams {item!r}: {text.strip()!r} is not a Python literal "
                             "(a number, a quoted string, True/False/None, a list or a dict)"
                             ) from None
        if key in out:
            raise ValueError(f"--hyperparams: {key} is given twice")
        out[key] = value
    return out


def _defaults(fn) -> dict:
    import inspect

    return {k: v.default for k, v in inspect.signature(fn).parameters.items()
            if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)}


def _unit(v) -> bool:
    return 0 <= v <= 1


#: what the SB3 arguments that SB3 would take out of range without complaint accept
OVERRIDE_RANGES = {
    "learning_rate": ("a number > 0", lambda v: v > 0),
    "gamma": ("a number in [0, 1]", _unit), "gae_lambda": ("a number in [0, 1]", _unit),
    "tau": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "exploration_fraction": ("a number in [0, 1]", _unit),
    "exploration_initial_eps": ("a number in [0, 1]", _unit),
    "exploration_final_eps": ("a number in [0, 1]", _unit),
    "clip_range": ("a number > 0", lambda v: v > 0),
    "max_grad_norm": ("a number > 0", lambda v: v > 0),
    "ent_coef": ("a number >= 0", lambda v: v >= 0), "vf_coef": ("a number >= 0",
                                                               lambda v: v >= 0),
    "batch_size": ("an integer >= 1", lambda v: v >= 1),
    "buffer_size": ("an integer >= 1", lambda v: v >= 1),
    "n_steps": ("an integer >= 1", lambda v: v >= 1),
    "n_epochs": ("an integer >= 1", lambda v: v >= 1),
    "learning_starts": ("an integer >= 0", lambda v: v >= 0),
    "target_update_interval": ("an integer >= 1", lambda v: v >= 1),
    "train_freq": ("an integer >= 1", lambda v: v >= 1),
    "gradient_steps": ("an integer >= 1, or -1", lambda v: v >= 1 or v == -1),
    "policy_delay": ("an integer >= 1", lambda v: v >= 1),
}


def _check_value(key: str, value, default) -> None:
    """A value of the kind the argument's default has (a number for a number, an integer for
    an integer, a bool for a bool; a ``lin_<x>`` schedule string where rl-zoo3 allows one),
    inside :data:`OVERRIDE_RANGES`."""
    what = None
    name = key.rsplit(".", 1)[-1]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            what = "True or False"
    elif name == "train_freq" and isinstance(value, (list, tuple)):  # SB3's (n, unit)
        if not (len(value) == 2 and isinstance(value[0], int) and value[0] >= 1
                and value[1] in ("step", "episode")):
            what = 'an integer >= 1, or [n, "step"] or [n, "episode"]'
    elif isinstance(default, (int, float)):
        if name in SCHEDULE_KEYS and isinstance(value, str) and value.startswith("lin_"):
            schedule(value, name)  # ValueError if the rate is not a number
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not np.isfinite(value):
            what = "a finite number"
        elif isinstance(default, int) and not isinstance(value, int):
            what = "an integer"
        elif name in OVERRIDE_RANGES and not OVERRIDE_RANGES[name][1](value):
            what = OVERRIDE_RANGES[name][0]
    if what is not None:
        raise ValueError(f"--hyperparams {key}={value!r}: {key} takes {what} (default "
                         f"{default!r})")


def check_overrides(algo: str, overrides: dict, atari: bool = False) -> None:
    """Refuse ``--hyperparams`` keys that are no SB3 constructor argument of ``algo`` (or of its
    policy, ``policy_kwargs.<name>``, or of its Adam, ``policy_kwargs.optimizer_kwargs.<name>``)
    and values of the wrong kind; ValueError naming the key and what is allowed."""
    import torch

    cls = algo_class(algo)
    top = {k: v for k, v in _defaults(cls.__init__).items() if k not in RESERVED_KWARGS}
    policy = cls.policy_aliases["CnnPolicy" if atari else "MlpPolicy"]
    pol = {k: v for k, v in _defaults(policy.__init__).items() if k not in RESERVED_POLICY}
    adam = {k: v for k, v in _defaults(torch.optim.Adam.__init__).items()
            if k not in ("self", "params", "lr")}
    name = algo.upper()
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] != "policy_kwargs":
            if len(parts) > 1 or key not in top:
                raise ValueError(f"--hyperparams {key}: not a {name} argument deltanet lets you "
                                 f"set; {name} takes {', '.join(sorted(top))}, and "
                                 "policy_kwargs.<name>")
            _check_value(key, value, top[key])
        elif len(parts) == 2 and parts[1] in pol and parts[1] != "optimizer_kwargs":
            _check_value(key, value, pol[parts[1]])
        elif len(parts) == 3 and parts[1] == "optimizer_kwargs" and parts[2] in adam:
            _check_value(key, value, adam[parts[2]])
        else:
            raise ValueError(
                f"--hyperparams {key}: not a policy argument deltanet lets you set; "
                f"policy_kwargs.<name> takes {', '.join(sorted(set(pol) - {'optimizer_kwargs'}))}"
                f", and policy_kwargs.optimizer_kwargs.<name> Adam's "
                f"{', '.join(sorted(adam))}")


def apply_overrides(hp: dict, overrides: dict) -> None:
    """Put ``overrides`` (checked by :func:`check_overrides`) into ``hp``: SB3 arguments into
    ``kwargs``, ``policy_kwargs.<a>.<b>`` into the nested ``policy_kwargs``."""
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] != "policy_kwargs":
            # SB3 takes train_freq's (n, unit) as a tuple only (a literal list as rl-zoo3 does)
            hp["kwargs"][key] = tuple(value) if key == "train_freq" and isinstance(
                value, list) else value
            continue
        d = hp["policy_kwargs"]
        for part in parts[1:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = value


def run_overrides(folder: Path, given: dict, resume: bool) -> dict:
    """The ``--hyperparams`` of the run in ``folder``: a fresh run's, or those a resumed run
    started with (kept in ``OVERRIDES_FILE``); a resumed run given other ones is refused."""
    import json

    path = folder / OVERRIDES_FILE
    stored = json.loads(path.read_text())["overrides"] if resume and path.exists() else None
    if stored is not None and given and given != stored:
        raise ValueError(f"--hyperparams: {folder} was trained with --hyperparams "
                         f"{' '.join(f'{k}={v!r}' for k, v in stored.items())}; a resumed run "
                         "keeps them (give the same ones, or none)")
    return stored if stored is not None else dict(given)


def _kwargs(hp: dict) -> dict:
    """The SB3 constructor kwargs of ``hp``: ``lin_X`` schedules as functions."""
    return {k: (schedule(v, k) if k in SCHEDULE_KEYS else v) for k, v in hp["kwargs"].items()}


def action_noise(noise: dict | None, action_space):
    """SB3 action noise for TD3 (rl-zoo's noise_type / noise_std), or None."""
    if noise is None:
        return None
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    n = int(np.prod(action_space.shape))
    cls = NormalActionNoise if noise["type"] == "normal" else OrnsteinUhlenbeckActionNoise
    return cls(mean=np.zeros(n), sigma=noise["std"] * np.ones(n))


def make_vec_env(env_id: str, n_envs: int, seed: int, normalize: dict | None = None,
                 vecnormalize=None):
    """SB3's vectorised env; ``normalize`` (VecNormalize options) wraps it in a new
    VecNormalize, ``vecnormalize`` (a saved one's path) in that one."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from .atari import is_atari, make_train_env

    if is_atari(env_id):
        return make_train_env(env_id, n_envs, seed)
    env = sb3_make_vec_env(lambda: make_env(env_id)(), n_envs=n_envs, seed=seed)
    if vecnormalize is not None:
        return VecNormalize.load(str(vecnormalize), env)
    if normalize is not None:
        return VecNormalize(env, **normalize)
    return env


def vecnormalize_path(out) -> Path:
    """VecNormalize statistics saved beside the artifact ``out`` (with its SB3 model)."""
    out = Path(out)
    return out.with_name(out.stem + ".sb3.vecnormalize.pkl")


def export_policy(model, env_id: str, provenance: dict, vecnormalize=None, log=print):
    """Export an SB3 model trained here; ``vecnormalize`` (its saved statistics) is folded into
    the input affine map with :func:`deltanet.importers.load_vecnormalize` and recorded in
    ``provenance["vecnormalize"]`` (file name relative to the artifact's folder)."""
    from .atari import export_dqn_cnn, is_atari
    from .export import export_sb3

    if is_atari(env_id):
        return export_dqn_cnn(model, env_id, provenance)
    offset = scale = None
    if vecnormalize is not None:
        n = int(np.prod(model.observation_space.shape))
        offset, scale, rec = load_vecnormalize(vecnormalize, n)
        provenance["vecnormalize"] = rec
        if "note" in rec:
            log(f"note: {rec['note']}")
    return export_sb3(model, env_id, provenance, obs_offset=offset, obs_scale=scale)


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


def ckpt_vecnormalize(zip_path) -> Path:
    """The VecNormalize statistics saved with checkpoint ``model_<steps>.zip``."""
    m = _CKPT_RE.match(Path(zip_path).name)
    return Path(zip_path).with_name(f"vecnormalize_{m.group(1) if m else 'x'}.pkl")


def save_sb3_atomic(model, path, replay_path=None, vecnormalize_path=None) -> None:
    """Save the SB3 model (and replay buffer, and its env's VecNormalize statistics if it has
    them) so that a crash never leaves a partial zip (the zip is written last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if replay_path is not None and hasattr(model, "save_replay_buffer"):
        tmp_rb = Path(replay_path).with_name("." + Path(replay_path).name + ".tmp.pkl")
        model.save_replay_buffer(tmp_rb)
        os.replace(tmp_rb, replay_path)
    vn = model.get_vec_normalize_env()
    if vecnormalize_path is not None and vn is not None:
        tmp_vn = Path(vecnormalize_path).with_name("." + Path(vecnormalize_path).name + ".tmp")
        vn.save(str(tmp_vn))
        os.replace(tmp_vn, vecnormalize_path)
    tmp = path.with_name("." + path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)


def constant_q_network(model, n: int = 256) -> bool:
    """True when a DQN's Q-values are exactly the same for ``n`` observations drawn from its
    replay buffer: every unit of some hidden layer is dead (ReLU zero on every input), so the
    network plays one fixed action whatever it sees (what a collapsed agent looks like). False
    for other algorithms and for a buffer with fewer than two observations."""
    import torch

    rb = getattr(model, "replay_buffer", None)
    q_net = getattr(getattr(model, "policy", None), "q_net", None)
    if rb is None or q_net is None or rb.size() < 2:
        return False
    with torch.no_grad():
        q = q_net(rb.sample(min(n, rb.size())).observations)
    return bool((q.max(0).values == q.min(0).values).all())


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
            z = self.folder / f"model_{n}.zip"
            save_sb3_atomic(self.model, z, rb, ckpt_vecnormalize(z))
            eps = [e["r"] for e in getattr(self.model, "ep_info_buffer", None) or []]
            if eps:  # Monitor returns (whole games for Atari: Monitor sits below AtariWrapper)
                print(f"checkpoint {n:,} steps: mean return of the last {len(eps)} episodes "
                      f"{np.mean(eps):.2f}", flush=True)
            if constant_q_network(self.model):
                print(f"checkpoint {n:,} steps: warning: the Q network gives the same values for "
                      "every replayed observation (a hidden layer is dead): the agent plays one "
                      "fixed action; consider training again with another --seed", flush=True)
            olds = sorted((int(_CKPT_RE.match(p.name).group(1)), p)
                          for p in self.folder.iterdir() if _CKPT_RE.match(p.name))
            for s, p in olds[:-keep]:
                p.unlink(missing_ok=True)
                (self.folder / f"replay_{s}.pkl").unlink(missing_ok=True)
                ckpt_vecnormalize(p).unlink(missing_ok=True)

    return Checkpoints()


def make_deadline_callback(seconds: float, log=print):
    """Stops ``learn`` once ``seconds`` of wall-clock time have passed since it started."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Deadline(BaseCallback):
        def _on_training_start(self) -> None:
            self.end = time.monotonic() + seconds

        def _on_step(self) -> bool:
            if time.monotonic() < self.end:
                return True
            log(f"time limit of {seconds:g} s reached at {self.num_timesteps:,} steps: "
                "stopping (resume with --resume)")
            return False

    return Deadline()


def best_paths(folder) -> tuple[Path, Path, Path]:
    """(SB3 zip, its VecNormalize statistics, best.json) of the best policy so far."""
    folder = Path(folder)
    return folder / "best.zip", folder / "best_vecnormalize.pkl", folder / "best.json"


def make_eval_callback(env_id: str, folder, every: int, episodes: int, n_envs: int,
                       normalize, log=print):
    """SB3's ``EvalCallback`` on ``episodes`` validation episodes (seeds ``VALIDATION_SEED``+,
    re-seeded before every evaluation so every checkpoint plays the same episodes); a new best
    is saved atomically with :func:`save_sb3_atomic` into ``best_paths(folder)``."""
    import json

    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

    zpath, vnpath, jpath = best_paths(folder)
    eval_env = make_vec_env(env_id, 1, VALIDATION_SEED,
                            None if normalize is None else {**normalize, "training": False,
                                                            "norm_reward": False})

    class SaveBest(BaseCallback):
        def _on_step(self) -> bool:
            ev = self.parent
            save_sb3_atomic(self.model, zpath, None, vnpath if normalize is not None else None)
            tmp = jpath.with_name(".best.json.tmp")
            tmp.write_text(json.dumps({
                "steps": int(self.num_timesteps), "mean_return": float(ev.last_mean_reward),
                "episodes": episodes,
                "seeds": validation_seeds(episodes)}) + "\n")
            os.replace(tmp, jpath)
            return True

    class SeededEval(EvalCallback):
        def _on_step(self) -> bool:
            due = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
            if due:
                self.eval_env.seed(VALIDATION_SEED)
            best = self.best_mean_reward
            out = super()._on_step()
            if due:
                last = self.last_mean_reward
                log(f"validation {self.num_timesteps:,} steps: mean return over {episodes} "
                    f"episodes {last:.2f} (best {max(best, last):.2f})")
            return out

    cb = SeededEval(eval_env, callback_on_new_best=SaveBest(), n_eval_episodes=episodes,
                    eval_freq=max(1, every // n_envs), deterministic=True, verbose=0, warn=False)
    if jpath.exists():  # a resumed run keeps the best of before
        cb.best_mean_reward = float(json.loads(jpath.read_text())["mean_return"])
    return cb


# ---- training -----------------------------------------------------------------------------
def train(env_id: str, algo: str, steps: int | None, seed: int, out, *, resume: bool = False,
          progress: bool = True, checkpoint_every: int | None = None, net_arch=None,
          overrides: dict | None = None, eval_every: int | None = None,
          eval_episodes: int | None = None, keep: str = "best", device: str = "cpu",
          time_limit: float | None = None, log=print):
    """Train (or resume) and export; returns the exported :class:`pysim.Model`.
    ``eval_every``/``eval_episodes``/``keep``: the best-policy selection (module doc, 4).
    ``device``: torch device of the network; ``time_limit``: seconds of training at most."""
    import torch
    from stable_baselines3.common.utils import set_random_seed
    from torch import nn

    from deltanet.pysim import save_model

    algo = algo.lower()
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda': torch sees no CUDA device here")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    check_env_algo(env_id, algo)
    hp = hyperparams(env_id, algo, log=log)
    from .atari import is_atari

    atari = is_atari(env_id)
    if eval_episodes is None:
        eval_episodes = 0 if atari else EVAL_EPISODES
    if atari and eval_episodes > 0:
        raise ValueError("--eval-episodes: the best-policy selection is not available for Atari "
                         "games (scripts/bench_atari.py plays whole games)")
    if net_arch is not None:
        if atari:
            raise ValueError("--net does not apply to Atari: the network is the Nature DQN")
        if list(net_arch) != hp["net_arch"]:
            log(f"  note: net {list(net_arch)} instead of {hp['net_arch']} (--net)")
        hp["net_arch"] = list(net_arch)
    out = Path(out)
    folder = ckpt_dir(out)
    overrides = run_overrides(folder, overrides or {}, resume)
    check_overrides(algo, overrides, atari)
    apply_overrides(hp, overrides)
    for key, value in overrides.items():
        log(f"  note: {key}={value!r} (--hyperparams)")
    if steps is not None and steps != hp["steps"]:
        log(f"  note: {steps:,} env steps instead of {hp['steps']:,} (--steps)")
    steps = steps or hp["steps"]
    if algo in ON_POLICY_N_STEPS:  # SB3 collects whole rollouts before it checks the budget
        rollout = hp["n_envs"] * int(hp["kwargs"].get("n_steps", ON_POLICY_N_STEPS[algo]))
        if steps % rollout:
            log(f"  note: {algo.upper()} collects whole rollouts of {rollout:,} env steps "
                f"({hp['n_envs']} envs x n_steps {rollout // hp['n_envs']:,}): it trains "
                f"{-(-steps // rollout) * rollout:,} env steps for {steps:,}")
    every = checkpoint_every or max(1000, steps // 10)
    torch.set_num_threads(1)
    cls = algo_class(algo)
    ck = latest_checkpoint(folder) if resume else None
    vn_ck = ckpt_vecnormalize(ck[1]) if ck is not None else None
    if hp["normalize"] is not None and vn_ck is not None and not vn_ck.exists():
        raise ValueError(f"{ck[1]}: its VecNormalize statistics {vn_ck} are missing; "
                         "train from scratch (without --resume)")
    env = make_vec_env(env_id, hp["n_envs"], seed, hp["normalize"],
                       vn_ck if hp["normalize"] is not None and ck is not None else None)
    try:
        check_replay_memory(env_id, algo, hp["kwargs"], env.observation_space)
    except ValueError:
        env.close()
        raise
    t0 = time.time()
    if ck is not None:
        done, zpath, rb = ck
        log(f"resuming {env_id} {algo.upper()} from {zpath} ({done} of {steps} steps)")
        set_random_seed(seed + done)
        # an Atari run started before the fused Adam continues with it (same state)
        model = cls.load(zpath, env=env, device=device,
                         custom_objects={"policy_kwargs": hp["policy_kwargs"]} if atari else None)
        model.set_random_seed(seed + done)
        if rb is not None and hasattr(model, "load_replay_buffer"):
            model.load_replay_buffer(rb)
        elif hasattr(model, "replay_buffer"):
            model.learning_starts = model.num_timesteps + hp["kwargs"].get("learning_starts", 100)
            log(f"  note: {zpath.name} has no replay buffer beside it: refilling one for "
                f"{model.learning_starts - model.num_timesteps:,} steps before learning goes on")
        remaining = steps - model.num_timesteps
        reset = False
    else:
        if resume:
            log(f"no checkpoint in {folder}: starting {env_id} {algo.upper()} from scratch")
        set_random_seed(seed)
        kwargs = _kwargs(hp)
        if atari:  # SB3's NatureCNN with the default 512-unit head = the Nature DQN
            policy, policy_kwargs = "CnnPolicy", hp["policy_kwargs"]
        else:
            policy = "MlpPolicy"
            policy_kwargs = {**hp["policy_kwargs"], "net_arch": hp["net_arch"],
                             "activation_fn": nn.ReLU}
            noise = action_noise(hp["noise"], env.action_space)
            if noise is not None:
                kwargs["action_noise"] = noise
        try:
            model = cls(policy, env, seed=seed, device=device, verbose=0,
                        policy_kwargs=policy_kwargs, **kwargs)
        except (ValueError, TypeError, AssertionError) as e:
            env.close()
            if not overrides:
                raise
            raise ValueError(f"--hyperparams: {algo.upper()} refused them "
                             f"({type(e).__name__}: {e})") from None
        remaining = steps
        reset = True
    log(f"training {env_id} with {algo.upper()} for {steps:,} env steps, net "
        f"{hp['net_arch']}, {hp['n_envs']} envs{', VecNormalize' if hp['normalize'] else ''}, "
        f"seed {seed}; checkpoints every {every:,} steps in {folder}/")
    if not resume:  # a fresh run: a best policy of an earlier run does not count
        for p in best_paths(folder):
            p.unlink(missing_ok=True)
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / OVERRIDES_FILE).write_text(json.dumps({"overrides": overrides}, indent=1) + "\n")
    if remaining > 0:
        from stable_baselines3.common.callbacks import CallbackList

        cb = make_checkpoint_callback(folder, every)
        cbs = [cb]
        if time_limit is not None:
            cbs.append(make_deadline_callback(time_limit, log))
        if eval_episodes > 0:
            cbs.append(make_eval_callback(env_id, folder, eval_every or every, eval_episodes,
                                          hp["n_envs"], hp["normalize"], log))
        model.learn(total_timesteps=remaining, callback=CallbackList(cbs),
                    progress_bar=shown(progress), reset_num_timesteps=reset)
        cb.save()
    trained_steps = int(model.num_timesteps)
    zpath, rbpath = sb3_paths(out)
    vnpath = vecnormalize_path(out) if hp["normalize"] is not None else None
    selected = None
    best_zip, best_vn, best_json = best_paths(folder)
    if keep == "best" and eval_episodes > 0 and best_json.exists() and best_zip.exists():
        selected = json.loads(best_json.read_text())
        if selected["steps"] != trained_steps:
            log(f"keeping the best validated policy: {selected['steps']:,} steps, mean return "
                f"{selected['mean_return']:.2f} over {selected['episodes']} validation episodes")
            rb_keep = model.replay_buffer if hasattr(model, "replay_buffer") else None
            env.close()
            env = make_vec_env(env_id, hp["n_envs"], seed, hp["normalize"],
                               best_vn if hp["normalize"] is not None else None)
            model = cls.load(best_zip, env=env, device=device)
            if rb_keep is not None:  # fine-tuning continues with the experience gathered
                model.replay_buffer = rb_keep
    save_sb3_atomic(model, zpath, rbpath if hasattr(model, "replay_buffer") else None, vnpath)
    provenance = {
        "algo": algo.upper(), "env_id": env_id, "steps": trained_steps,
        "seed": seed, "n_envs": hp["n_envs"], "net_arch": hp["net_arch"],
        "activation": "relu", "hyperparams": hp["kwargs"],
        "hyperparams_source": hp["source"], "hyperparams_notes": hp["notes"],
        "sb3_zip": zpath.name, "train_seconds": round(time.time() - t0, 1),
        "resumed": ck is not None, "versions": versions(),
    }
    if overrides:
        provenance["hyperparams_overrides"] = overrides
    if selected is not None:
        provenance["selected"] = {"policy_steps": selected["steps"],
                                  "validation_mean_return": selected["mean_return"],
                                  "validation_episodes": selected["episodes"],
                                  "validation_seeds": selected["seeds"]}
    if hp["normalize"] is not None:  # {} = VecNormalize with SB3's defaults
        provenance["normalize"] = hp["normalize"]
    for key in ("policy_kwargs", "noise"):
        if hp[key]:
            provenance[key] = hp[key]
    m = export_policy(model, env_id, provenance, vnpath, log)
    save_model(m, out)
    env.close()
    log(f"wrote {out} ({trained_steps:,} steps, {time.time() - t0:.0f} s); "
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

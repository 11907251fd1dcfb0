"""Gymnasium glue: seeded env thunks, space descriptions and the model/env compatibility check."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

_ATARI_REGISTERED = False


def _register_atari():
    global _ATARI_REGISTERED
    if not _ATARI_REGISTERED:
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:  # pragma: no cover - ale-py is a pinned dependency
            pass
        _ATARI_REGISTERED = True


def make_env(env_id: str, seed: int | None = None, **kwargs):
    """A thunk creating ``env_id`` (cleanrl style); the env is seeded on its first reset."""

    def thunk():
        if env_id.endswith("NoFrameskip-v4"):  # the paper's Atari setting: whole games
            from .atari import make_eval_env

            env = make_eval_env(env_id, **kwargs)
            env.action_space.seed(seed)
            return env
        if env_id.startswith("ALE/"):
            _register_atari()
        try:
            env = gym.make(env_id, **kwargs)
        except gym.error.Error as e:
            raise ValueError(f"cannot make gymnasium env {env_id!r}: {e}") from None
        env.action_space.seed(seed)
        return env

    return thunk


def space_to_dict(space) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape),
                "low": [float(v) for v in np.asarray(space.low, dtype=np.float64).ravel()],
                "high": [float(v) for v in np.asarray(space.high, dtype=np.float64).ravel()]}
    raise ValueError(f"unsupported space {space!r}: deltanet handles Box observations and "
                     f"Discrete or Box actions")


def check_supported(env) -> None:
    """Refuse envs whose spaces deltanet cannot run."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box):
        raise ValueError(f"{env.spec.id if env.spec else env}: observation space {obs} is not "
                         f"a Box; deltanet needs a Box observation space")
    if not isinstance(act, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ValueError(f"{env.spec.id if env.spec else env}: action space {act} is neither "
                         f"Discrete nor Box")


def check_model_fits_env(model, env) -> None:
    """Raise ValueError naming the mismatch when ``model`` cannot drive ``env``."""
    check_supported(env)
    name = env.spec.id if env.spec else str(env)
    where = model.meta.get("path", "model")
    cfg = model.config
    obs_dim = int(np.prod(env.observation_space.shape))
    if cfg.n_in != obs_dim:
        raise ValueError(f"{where}: the network takes {cfg.n_in} inputs but {name} observations "
                         f"have {obs_dim} values")
    act = env.action_space
    if isinstance(act, gym.spaces.Discrete):
        if cfg.decoder.kind != "argmax":
            raise ValueError(f"{where}: decoder {cfg.decoder.kind!r} gives continuous actions but "
                             f"{name} has a Discrete action space")
        if cfg.n_out != int(act.n):
            raise ValueError(f"{where}: the network has {cfg.n_out} outputs but {name} has "
                             f"{int(act.n)} actions")
    else:
        if cfg.decoder.kind == "argmax":
            raise ValueError(f"{where}: decoder 'argmax' gives discrete actions but {name} has a "
                             f"Box action space")
        if cfg.n_out != int(np.prod(act.shape)):
            raise ValueError(f"{where}: the network has {cfg.n_out} outputs but {name} actions "
                             f"have {int(np.prod(act.shape))} values")
    want = model.meta.get("env_id")
    if want and env.spec is not None and want != env.spec.id:
        raise ValueError(f"{where}: the model was built for {want!r}, not {env.spec.id!r}")

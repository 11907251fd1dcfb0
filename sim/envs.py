"""Gymnasium glue: seeded env thunks, space checks and the Atari evaluation env.

It lives in ``sim/`` because the closed-loop benches create the envs they run (the hardware
chooses the actions) and ``sim`` imports nothing from ``deltanet`` (layering: pysim <- hw <-
sim <- deltanet); :mod:`deltanet.envs` and :mod:`deltanet.atari` re-export it.

Atari evaluation envs (:func:`make_eval_env`) are SB3's Atari preprocessing (Mnih et al. 2015:
30 no-op starts, max-pool over frame skip 4, 84x84 grey, FIRE on reset) *without* episodic life
and reward clipping, so an episode is a whole game and its return is the game score, capped at
:data:`MAX_EVAL_STEPS` agent steps (108,000 frames). Their observations are the four stacked
frames in CHW order, flattened (``4*84*84`` uint8 values): the input layout of the exported
network (SB3 transposes HWC to CHW the same way).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

__all__ = ["DEFAULT_MAX_EPISODE_STEPS", "FRAME_STACK", "MAX_EVAL_STEPS", "ChwFrameStack",
           "ale_setting_id", "channels_first", "check_atari", "check_model_fits_env",
           "check_supported", "flat_observations", "is_atari", "is_channels_last_image",
           "make_env", "make_eval_env", "register_atari", "space_to_dict", "time_limited"]

#: Agent-step cap of an evaluation game (27,000 steps x frame skip 4 = 108,000 frames).
MAX_EVAL_STEPS = 27_000
#: Step cap of an episode of an env registered without one: gymnasium's most common limit
#: (MuJoCo, LunarLander, CarRacing).
DEFAULT_MAX_EPISODE_STEPS = 1000
FRAME_STACK = 4

_ATARI_REGISTERED = False


def register_atari() -> None:
    """Register ale-py's envs with gymnasium (once)."""
    global _ATARI_REGISTERED
    if not _ATARI_REGISTERED:
        import ale_py

        gym.register_envs(ale_py)
        _ATARI_REGISTERED = True


def is_atari(env_id: str) -> bool:
    return env_id.endswith("NoFrameskip-v4")


def check_atari(env_id: str) -> None:
    if not is_atari(env_id):
        raise ValueError(f"{env_id!r} is not an Atari id: use <Game>NoFrameskip-v4, e.g. "
                         f"BreakoutNoFrameskip-v4")
    register_atari()
    if env_id not in gym.registry:
        raise ValueError(f"unknown Atari game {env_id!r} (ale-py registers <Game>NoFrameskip-v4 "
                         f"for every ROM it bundles, e.g. BreakoutNoFrameskip-v4)")


class ChwFrameStack(gym.Wrapper):
    """Stack the last 4 preprocessed frames, newest last, as a flat CHW uint8 vector."""

    def __init__(self, env, k: int = FRAME_STACK):
        super().__init__(env)
        h, w = env.observation_space.shape[:2]
        self.k, self.h, self.w = k, h, w
        self.frames = np.zeros((k, h, w), dtype=np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (k * h * w,), dtype=np.uint8)

    def _obs(self):
        return self.frames.reshape(-1).copy()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames[:] = 0
        self.frames[-1] = obs.reshape(self.h, self.w)
        return self._obs(), info

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.frames[:-1] = self.frames[1:]
        self.frames[-1] = obs.reshape(self.h, self.w)
        return self._obs(), r, term, trunc, info


def ale_setting_id(env_id: str) -> str | None:
    """For an ale-py id of a game in another setting than the paper's (``ALE/Breakout-v5``,
    ``Breakout-v4``, ``BreakoutNoFrameskip-v0``: raw frames, sticky or random frame skips), the
    ``<Game>NoFrameskip-v4`` id of the same game; else None."""
    if is_atari(env_id):
        return None
    if env_id not in gym.registry:
        register_atari()
    spec = gym.registry.get(env_id)
    if spec is None or not str(spec.entry_point).startswith("ale_py"):
        return None
    game = spec.kwargs.get("game")
    return next((k for k, v in gym.registry.items() if is_atari(k)
                 and str(v.entry_point).startswith("ale_py") and v.kwargs.get("game") == game),
                None)


def make_eval_env(env_id: str, max_steps: int = MAX_EVAL_STEPS):
    """One whole-game evaluation env (unclipped score, all lives), flat CHW observations.

    The frame stack starts from zeros like SB3's VecFrameStack, so the network sees at reset the
    same input it saw in training.
    """
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    check_atari(env_id)
    env = gym.make(env_id)
    env = AtariWrapper(env, terminal_on_life_loss=False, clip_reward=False)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=max_steps)
    return ChwFrameStack(env)


def is_channels_last_image(space) -> bool:
    """An image observation that SB3 transposes before its policies see it (its
    ``VecTransposeImage``): a 3-d uint8 Box of 0..255 whose smallest dimension is not the
    first, e.g. CarRacing's 96 x 96 x 3."""
    return (isinstance(space, gym.spaces.Box) and len(space.shape) == 3
            and space.dtype == np.uint8 and bool(np.all(space.low == 0))
            and bool(np.all(space.high == 255)) and int(np.argmin(space.shape)) != 0)


def channels_first(env):
    """``env`` with image observations channel-first (C x H x W), as SB3 presents them to the
    policies it trains and exports (and as the Atari stack builds them); other envs as they
    are. Every env loop of deltanet makes its envs with :func:`make_env`, so a network trained
    or imported from SB3 sees its observations in the order it was trained on."""
    space = env.observation_space
    if not is_channels_last_image(space):
        return env
    h, w, c = space.shape
    return gym.wrappers.TransformObservation(
        env, lambda o: np.ascontiguousarray(np.transpose(o, (2, 0, 1))),
        gym.spaces.Box(0, 255, (c, h, w), np.uint8))


def flat_observations(env):
    """``env`` with a non-Box observation space that gymnasium can flatten (Discrete,
    MultiDiscrete, MultiBinary, Tuple, Dict, Text) observed as gymnasium's flat Box: a Discrete
    value becomes its one-hot vector, a Tuple or Dict the concatenation of its parts. That is
    the input SB3's policies compute from Discrete, MultiDiscrete and MultiBinary observations
    (one-hot, concatenated one-hot, as floats), so an SB3 agent trained on the raw space runs
    on it unchanged. Box envs, and spaces that do not flatten (Sequence, Graph), are returned
    as they are (:func:`check_supported` refuses the latter)."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) or not space.is_np_flattenable:
        return env
    env = gym.wrappers.FlattenObservation(env)
    flat = env.observation_space
    # one-hot and small-integer vectors as bytes (a replay buffer of Taxi's 500 one-hot inputs
    # would take 8 GB as gymnasium's int64), anything else as float32
    small = (np.issubdtype(flat.dtype, np.integer) and bool(np.all(flat.low >= 0))
             and bool(np.all(flat.high <= 255)))
    return gym.wrappers.DtypeObservation(env, np.uint8 if small else np.float32)


def time_limited(env):
    """``env`` with at most :data:`DEFAULT_MAX_EPISODE_STEPS` steps per episode if its
    registration sets no limit (CliffWalking), so that no episode of a policy that loops (a
    deterministic one walking into a wall) runs forever; envs with a limit keep theirs."""
    if env.spec is not None and env.spec.max_episode_steps is not None:
        return env
    return gym.wrappers.TimeLimit(env, max_episode_steps=DEFAULT_MAX_EPISODE_STEPS)


def make_env(env_id: str, seed: int | None = None, **kwargs):
    """A thunk creating ``env_id`` (cleanrl style); the env is seeded on its first reset.
    Image observations come channel-first (:func:`channels_first`), non-Box observations
    flattened (:func:`flat_observations`), and an env registered without a step limit gets one
    (:func:`time_limited`)."""

    def thunk():
        if is_atari(env_id):  # the paper's Atari setting: whole games
            env = make_eval_env(env_id, **kwargs)
            env.action_space.seed(seed)
            return env
        if env_id not in gym.registry:  # ale-py's ids (ALE/Pong-v5, Pong-v4) register late
            register_atari()
        try:
            env = gym.make(env_id, **kwargs)
        except gym.error.Error as e:
            raise ValueError(f"cannot make gymnasium env {env_id!r}: {e}") from None
        env = flat_observations(channels_first(time_limited(env)))
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
    """Refuse envs whose spaces deltanet cannot run (ValueError: a user error the CLI
    reports)."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box):
        raise ValueError(f"{env.spec.id if env.spec else env}: observation "  # noqa: TRY004
                         f"space {obs} is not a Box and does not flatten into one; supported: "
                         "Box, and Discrete, MultiDiscrete, MultiBinary, Tuple or Dict "
                         "observations (flattened, one-hot for discrete values)")
    if not isinstance(act, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ValueError(f"{env.spec.id if env.spec else env}: action space "  # noqa: TRY004
                         f"{act} is neither Discrete nor Box")


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
    # "module:Name-v0" (gymnasium imports the module that registers the env first) makes an
    # env whose spec id is "Name-v0"
    if want and env.spec is not None and want.rpartition(":")[2] != env.spec.id:
        raise ValueError(f"{where}: the model was built for {want!r}, not {env.spec.id!r}")

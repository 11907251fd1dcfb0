"""SB3-style policy adapter around the reference: ``predict(obs, state, episode_start)``.

The delta network is stateful per episode; ``episode_start`` (a boolean per env, as SB3 passes
it) resets the state of the envs that begin a new episode before the step is taken.
"""

from __future__ import annotations

import numpy as np

from .model import Model
from .network import DeltaNetwork


class DeltaPolicy:
    def __init__(self, model: Model, *, n_envs: int = 1, mode: str = "fixed", delta: bool = True):
        self.net = DeltaNetwork(model, mode=mode, delta=delta, batch=n_envs)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """Returns ``(action, state)``; ``state`` is unused (the state lives in the network)."""
        obs = np.asarray(observation)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.any():
                self.net.reset(starts)
        action = self.net.act(obs)
        return (action[0] if single else action), state

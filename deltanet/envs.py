"""Gymnasium glue: seeded env thunks, space descriptions and the model/env compatibility check.

Defined in :mod:`sim.envs` (the closed-loop benches create their envs, and ``sim`` imports
nothing from ``deltanet``); re-exported here for the RL side, with :func:`check_model_env`.
"""

from __future__ import annotations

from deltanet.sim.envs import (
    ale_setting_id,
    check_model_fits_env,
    check_supported,
    make_env,
    space_to_dict,
)

__all__ = ["ale_setting_id", "check_model_env", "check_model_fits_env", "check_supported",
           "make_env", "space_to_dict", "unsolved_note"]


def unsolved_note(env_id: str | None, mean_return: float, who: str = "the dense policy"
                  ) -> str | None:
    """A warning when ``mean_return`` is below gymnasium's ``reward_threshold`` for
    ``env_id`` (the return at which the task counts as solved), else None (also for a task
    without one, e.g. Atari, or an id gymnasium cannot look up): a reduction judged against a
    policy that fails its task keeps a failing policy."""
    if not env_id:
        return None
    import gymnasium as gym

    try:
        solved = gym.spec(env_id).reward_threshold
    except Exception:  # an id registered only when its module is imported, or none at all
        return None
    if solved is None or mean_return >= solved:
        return None
    return (f"note: {who} returns {mean_return:.2f}, below {env_id}'s reward_threshold "
            f"{solved:g} (gymnasium): it does not solve the task, so the reduction is judged "
            "against a failing policy; train it longer first")


def check_model_env(model) -> None:
    """:func:`check_model_fits_env` on a fresh env of the model's ``env_id`` (none: no check),
    so that a command refuses a model that cannot drive its env before it builds anything."""
    env_id = model.meta.get("env_id")
    if not env_id:
        return
    env = make_env(env_id, 0)()
    try:
        check_model_fits_env(model, env)
    finally:
        env.close()

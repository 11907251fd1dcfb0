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
           "make_env", "space_to_dict"]


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

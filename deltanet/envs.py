"""Gymnasium glue: seeded env thunks, space descriptions and the model/env compatibility check.

Defined in :mod:`sim.envs` (the closed-loop benches create their envs, and ``sim`` imports
nothing from ``deltanet``); re-exported here for the RL side.
"""

from __future__ import annotations

from sim.envs import check_model_fits_env, check_supported, make_env, space_to_dict

__all__ = ["check_model_fits_env", "check_supported", "make_env", "space_to_dict"]

"""Library versions recorded in an artifact's provenance."""

from __future__ import annotations

import platform

import gymnasium as gym
import numpy as np


def versions() -> dict:
    import stable_baselines3
    import torch

    from . import __version__

    return {"deltanet": __version__, "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
            "python": platform.python_version()}

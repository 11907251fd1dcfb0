"""Constructor argument checks shared by the hw blocks (clear errors naming the parameter)."""

from __future__ import annotations

import numbers


def check_int(owner: str, name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` must be an int in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{owner}: {name} must be in {rng}, got {value}")
    return value


def check_choice(owner: str, name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value

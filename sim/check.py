"""The checker every closed-loop engine shares: a hardware step against pysim, field by field.

The cocotb bench (:mod:`sim.bench_core`) and the Amaranth engine report with these functions,
so a mismatch reads the same whatever ran it:

* :func:`compare` lists every difference of one step as ``(step, layer, field, index, hw,
  ref)``, ordered from the earliest place a fault shows: per-layer ``events`` and ``macs`` from
  layer 0 up, then the outputs (``out``) and the action, then the ``cycles`` port and the clock
  edges actually ``elapsed`` (layer ``-1``) against the cycle model;
* :func:`first_mismatch` / :func:`describe` name the first difference of a run;
* :func:`result` is the run's result dict (the keys every engine reports);
* :func:`reference_return` runs the reference alone as the policy: a bit-exact hardware run
  has the same return.
"""

from __future__ import annotations

import numpy as np

from ..pysim import DeltaNetwork
from .envs import make_env

__all__ = ["CLOCK_NS", "compare", "describe", "first_mismatch", "reference_return", "result"]

#: Clock period of the simulations (ns), reported in the results.
CLOCK_NS = 10


def compare(step: int, hw: dict, ref: dict) -> list:
    """Every difference of one step as ``(step, layer, field, index, hw, ref)``; empty when
    bit-exact. ``hw``/``ref``: ``events``, ``macs`` (per layer), ``out`` (raw codes),
    ``action`` (``ref["action"] is None``: not compared, e.g. continuous actions, which follow
    from ``out``), ``cycles``; ``hw`` may add ``elapsed`` (clock edges from the edge that
    samples ``start`` to the one after which ``done`` is high), also checked against the model's
    cycles."""
    diffs = []
    n_layers = len(ref["events"])
    for i in range(n_layers):
        for f in ("events", "macs"):
            if hw[f][i] != ref[f][i]:
                diffs.append((step, i, f, 0, hw[f][i], ref[f][i]))
    for k, (a, b) in enumerate(zip(hw["out"], ref["out"])):
        if a != b:
            diffs.append((step, n_layers - 1, "out", k, int(a), int(b)))
    if ref["action"] is not None and hw["action"] != ref["action"]:
        diffs.append((step, n_layers - 1, "action", 0, hw["action"], ref["action"]))
    for f in ("cycles", "elapsed"):
        if f in hw and hw[f] != ref["cycles"]:
            diffs.append((step, -1, f, 0, hw[f], ref["cycles"]))
    return diffs


def first_mismatch(diffs: list) -> dict | None:
    """The first of ``(episode, step, layer, field, index, hw, ref)`` differences as a dict."""
    if not diffs:
        return None
    ep, step, layer, field, index, a, b = diffs[0]
    return {"episode": ep, "step": step, "layer": layer, "field": field, "index": index,
            "hw": a, "ref": b}


def describe(fm: dict | None) -> str:
    """One line for a :func:`first_mismatch` dict (empty string for None)."""
    if not fm:
        return ""
    where = "cycle count" if fm["layer"] == -1 else f"layer {fm['layer']}"
    return (f"episode {fm['episode']} step {fm['step']} {where} {fm['field']}[{fm['index']}]: "
            f"expected {fm['ref']} (pysim), got {fm['hw']} (hardware)")


def result(all_diffs: list, per_step: list, episodes_out: list, wall: float) -> dict:
    """The run's result dict (the keys every engine reports). ``all_diffs``: differences
    prefixed by the episode; ``episodes_out``: ``{episode, seed, steps, hw_return,
    ref_return}`` per episode; ``wall``: seconds of the closed loop itself."""
    n = max(len(episodes_out), 1)
    return {
        "steps": len(per_step),
        "mismatches": sum(1 for st in per_step if st["mismatch"]),
        "mismatched_values": len(all_diffs),
        "first_mismatch": first_mismatch(all_diffs),
        "hw_return": float(sum(e["hw_return"] for e in episodes_out)) / n,
        "ref_return": float(sum(e["ref_return"] for e in episodes_out)) / n,
        "returns_equal": all(e["hw_return"] == e["ref_return"] for e in episodes_out),
        "episodes": episodes_out,
        "per_step": per_step,
        "wall_s": wall,
        "env_steps_per_s": len(per_step) / wall if wall > 0 else None,
        "clock_ns": CLOCK_NS,
    }


def reference_return(model, env_id: str, seed: int, max_steps: int) -> float:
    """The reference alone as the policy, same seed, at most ``max_steps`` steps (0: whole
    episode): what the hardware's return must equal."""
    env = make_env(env_id, seed)()
    net = DeltaNetwork(model, batch=1)
    obs, _ = env.reset(seed=seed)
    total, t = 0.0, 0
    while True:
        a = net.act(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
        obs, r, term, trunc, _ = env.step(a)
        total += float(r)
        t += 1
        if term or trunc or (max_steps and t >= max_steps):
            break
    env.close()
    return total

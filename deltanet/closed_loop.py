"""Shared by ``deltanet verify``, ``deltanet simulate`` and the demo: design + closed-loop run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pysim import CycleModel, Model, load_model

MUTATIONS = ("weight", "threshold")


def mutate(model: Model, what: str) -> Model:
    """A deliberately corrupted copy: proof that the checker can fail.

    ``weight``: the largest-magnitude weight of the output layer changes sign.
    ``threshold``: layer 0's threshold becomes 4x + 0.25 (in real units).
    """
    if what == "weight":
        i = len(model.params) - 1
        w = model.params[i].weight.copy()
        eff = np.where(model.params[i].mask, np.abs(w), 0)
        r, c = np.unravel_index(int(np.argmax(eff)), w.shape)
        w[r, c] = -w[r, c]
        params = list(model.params)
        params[i] = type(params[i])(w, params[i].bias, params[i].mask)
        return model.replace(params=params)
    if what == "threshold":
        thr = [ly.threshold for ly in model.config.layers]
        thr[0] = thr[0] * 4 + 0.25
        return model.replace(config=model.config.with_thresholds(thr))
    raise ValueError(f"--mutate must be one of {MUTATIONS}, got {what!r}")


def work_dir(model: Model, lanes: int, tag: str, root: Path = Path("build")) -> Path:
    key = hashlib.sha256(f"{model.meta.get('checksum')}:{lanes}:{tag}".encode()).hexdigest()[:12]
    return root / "closed_loop" / f"{model.meta.get('env_id', 'model').replace('/', '_')}-" \
        f"L{lanes}-{tag}-{key}"


def run(model_path, *, lanes: int, sim: str, episodes: int, seed: int, max_steps: int = 0,
        mutation: str | None = None, waves: Path | None = None) -> dict:
    from sim.runner import prepare, run_closed_loop

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    model = load_model(model_path)
    CycleModel(model, lanes)  # validates lanes with a clear message
    design_model = mutate(model, mutation) if mutation else model
    root = work_dir(model, lanes, mutation or "clean")
    design_dir, ref_path = prepare(model, lanes, root, design_model=design_model)
    res = run_closed_loop(design_dir, ref_path, sim=sim, episodes=episodes, seed=seed,
                          max_steps=max_steps, waves=waves, work_dir=root / f"run-{sim}")
    res["model"] = str(model_path)
    res["lanes"] = lanes
    res["seed"] = seed
    res["mutation"] = mutation
    res["design_dir"] = str(design_dir)
    return res


def performance(res: dict, model: Model, lanes: int, clock_mhz: float) -> dict:
    """Cycle statistics of a closed-loop run (cycles measured by the design)."""
    steps = res["per_step"]
    cyc = np.array([s["cycles"] for s in steps], dtype=np.float64)
    macs = np.array([sum(s["macs"]) for s in steps], dtype=np.float64)
    busy = np.array([s["busy"] for s in steps], dtype=np.float64)
    lane_work = np.array([s["lane_work"] for s in steps], dtype=np.float64).sum(axis=0)
    dense = CycleModel(model, lanes).dense_cycles()
    sig_ideal = np.ceil(macs / lanes)
    return {
        "lanes": lanes,
        "clock_mhz": clock_mhz,
        "steps": len(steps),
        "cycles_mean": float(cyc.mean()),
        "cycles_p50": float(np.percentile(cyc, 50)),
        "cycles_p99": float(np.percentile(cyc, 99)),
        "cycles_max": float(cyc.max()),
        "latency_us_mean": float(cyc.mean() / clock_mhz),
        "latency_us_max": float(cyc.max() / clock_mhz),
        "useful_macs_per_step": float(macs.mean()),
        "ideal_cycles_per_step": float(sig_ideal.mean()),
        "mac_utilisation": float(macs.sum() / (lanes * busy.sum())) if busy.sum() else None,
        "balance": float(lane_work.mean() / lane_work.max()) if lane_work.max() else None,
        "dense_schedule_cycles": int(dense),
        "speedup_vs_dense": float(dense / cyc.mean()),
        "dense_mults_per_step": int(sum(ly.n_in * ly.n_out for ly in model.config.layers)),
    }

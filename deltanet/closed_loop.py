"""Shared by ``deltanet verify``, ``deltanet simulate`` and the demo: design + closed-loop run.

Two hardware architectures (``--arch``): ``parallel`` (:class:`hw.top.DeltanetTop`, registers,
dense layers only, :class:`pysim.CycleModel`) and ``seq`` (:class:`hw.seqtop.DeltaSeqTop`,
memories, conv2d and dense layers, discrete actions, :class:`pysim.seqcycles.SeqCycleModel`).
``auto`` picks ``parallel`` for a dense-only model and ``seq`` when any layer is a conv.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pysim import CycleModel, Model, load_model
from pysim.seqcycles import SeqCycleModel

MUTATIONS = ("weight", "threshold")
ARCHS = ("auto", "parallel", "seq")  # as deltanet generate --arch


def resolve_arch(model: Model, arch: str = "auto") -> str:
    """``parallel`` or ``seq`` for ``model`` (:func:`deltanet.cmd_generate.choose_arch`: auto
    picks seq for a model with a conv layer), refusing with a clear message what the chosen
    core cannot run (conv on the parallel core, continuous actions on the seq core)."""
    from .cmd_generate import choose_arch

    arch = choose_arch(model, arch)
    dec = model.config.decoder.kind
    if arch == "seq" and dec != "argmax":
        raise ValueError(f"--arch seq: the sequential core (DeltaSeqTop) is for discrete-action "
                         f"policies (argmax decoder); this model's decoder is {dec!r} (use "
                         f"--arch parallel or auto)")
    return arch


def cycle_model(model: Model, lanes: int, arch: str):
    """The cycle model of ``arch`` (validates ``lanes`` with a clear message)."""
    return SeqCycleModel(model, lanes) if arch == "seq" else CycleModel(model, lanes)


def mutate(model: Model, what: str) -> Model:
    """A deliberately corrupted copy: proof that the checker can fail.

    ``weight``: the largest-magnitude weight of the output layer changes sign.
    ``threshold``: layer 0's threshold becomes 4x + 0.25 (in real units).
    """
    if what == "weight":
        i = len(model.params) - 1
        w = model.params[i].weight.copy()
        eff = np.where(model.params[i].mask, np.abs(w), 0)
        idx = np.unravel_index(int(np.argmax(eff)), w.shape)  # (row, col) or a conv tap
        w[idx] = -w[idx]
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
        mutation: str | None = None, waves: Path | None = None, arch: str = "auto",
        obs_words: int = 8) -> dict:
    """Generate (cached), build (cached) and run the closed loop; the bench's result dict.

    ``arch``: ``auto`` | ``parallel`` | ``seq`` (see :func:`resolve_arch`); ``obs_words`` is
    the seq core's observation-memory word (input codes per write).
    """
    from sim.runner import prepare, run_closed_loop

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    model = load_model(model_path)
    arch = resolve_arch(model, arch)
    cycle_model(model, lanes, arch)  # validates lanes with a clear message
    if arch == "seq" and (isinstance(obs_words, bool) or not isinstance(obs_words, int)
                          or obs_words < 1):
        raise ValueError(f"--obs-words must be an integer >= 1, got {obs_words!r}")
    design_model = mutate(model, mutation) if mutation else model
    tag = mutation or "clean"
    root = work_dir(model, lanes, tag if arch == "parallel" else f"seq{obs_words}-{tag}")
    design_dir, ref_path = prepare(model, lanes, root, design_model=design_model, arch=arch,
                                   obs_words=obs_words)
    res = run_closed_loop(design_dir, ref_path, sim=sim, episodes=episodes, seed=seed,
                          max_steps=max_steps, waves=waves, work_dir=root / f"run-{sim}",
                          arch=arch)
    res["model"] = str(model_path)
    res["lanes"] = lanes
    res["seed"] = seed
    res["mutation"] = mutation
    res["arch"] = arch
    res["design_dir"] = str(design_dir)
    return res


def performance(res: dict, model: Model, lanes: int, clock_mhz: float,
                arch: str = "parallel") -> dict:
    """Cycle statistics of a closed-loop run (cycles measured by the design).

    For ``seq`` the dense schedule is :meth:`SeqCycleModel.dense_cycles` (the same scans, every
    input an event, no pruning) and the cycle figures include the first step's full pass."""
    steps = [s for s in res["per_step"] if s.get("cycles") is not None]  # (a hung step: none)
    if not steps:
        raise ValueError("no completed step to report on (see the first mismatch)")
    cyc = np.array([s["cycles"] for s in steps], dtype=np.float64)
    macs = np.array([sum(s["macs"]) for s in steps], dtype=np.float64)
    busy = np.array([s["busy"] for s in steps], dtype=np.float64)
    lane_work = np.array([s["lane_work"] for s in steps], dtype=np.float64).sum(axis=0)
    dense = cycle_model(model, lanes, arch).dense_cycles()
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
        "dense_mults_per_step": int(sum(ly.dense_mults for ly in model.config.layers)),
    }

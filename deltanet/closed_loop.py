"""Shared by ``deltanet verify``, ``deltanet simulate`` and the demo: design + closed-loop run
on the event-driven core (:class:`hw.core.DeltaCore`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from deltanet.pysim import Model, load_model
from deltanet.pysim.corecycles import CoreCycleModel
from deltanet.pysim.coreplan import MAX_OBS_WORDS

from .cleanup import dense_mults
from .envs import check_model_env
from .progress import status

__all__ = ["MUTATIONS", "check_obs_words", "mutate", "performance",
           "print_performance", "run", "work_dir"]

MUTATIONS = ("weight", "threshold")


def check_obs_words(model: Model, obs_words: int | None) -> int:
    """The observation word (:func:`sim.runner.default_obs_words` when None), validated with a
    clear message."""
    from deltanet.sim.runner import default_obs_words

    if obs_words is not None and (isinstance(obs_words, bool) or not isinstance(obs_words, int)
                                  or not 1 <= obs_words <= MAX_OBS_WORDS):
        raise ValueError(f"--obs-words must be an integer in 1..{MAX_OBS_WORDS}, got "
                         f"{obs_words!r}")
    return default_obs_words(model, obs_words)


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
    # only letters, digits, "._-" from the env id: a "/" (ALE/Pong-v5) would nest folders and
    # a ":" (module:Name-v0) breaks the Makefile dependencies of the simulator build
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(model.meta.get("env_id") or "model"))
    return root / "closed_loop" / f"{name}-L{lanes}-{tag}-{key}"


def run(model_path, *, lanes: int, sim: str, episodes: int, seed: int, max_steps: int = 0,
        mutation: str | None = None, waves: Path | None = None,
        obs_words: int | None = None, obs_writes: str | None = None,
        coverage: bool = False, threshold_writes: int = 0,
        link_divisor: int | None = None) -> dict:
    """Generate (cached), build (cached) and run the closed loop; the bench's result dict.

    ``obs_words``: input codes per observation write (default
    :func:`sim.runner.default_obs_words`); ``obs_writes``: ``changed`` or ``all`` observation
    words per step (default: the bench's, ``changed``); ``coverage``: add the run's functional
    coverage (key ``coverage``, :class:`sim.coverage.Coverage`); ``threshold_writes``: a
    run-time threshold write every that many steps (:meth:`sim.coreloop.CoreBench.run`).
    ``link_divisor``: the core behind its UART host link at that many clock cycles per bit,
    driven through the link's pins (``deltanet run --sim verilator``; the link's STATUS is
    checked, its model id too unless ``mutation``, and the model's thresholds written first
    unless ``mutation``); a link error leaves only ``link_error`` (its message) in the result.
    """
    from deltanet.sim.runner import build, prepare, run_closed_loop, toplevel_of

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {max_steps}")
    model = load_model(model_path)
    obs_words = check_obs_words(model, obs_words)
    CoreCycleModel(model, lanes, obs_words)  # validates lanes with a clear message
    check_model_env(model)  # else the bench fails inside the simulator, with no result
    design_model = mutate(model, mutation) if mutation else model
    tag = mutation or "clean"
    kind = "core" if link_divisor is None else f"link{link_divisor}-"
    root = work_dir(model, lanes, f"{kind}{obs_words}-{tag}")
    toplevel = toplevel_of(link_divisor)
    # the long phases show where they are (on stderr, only on a terminal)
    with status("generating the Verilog (cached after the first run)") as st:
        design_dir, ref_path = prepare(model, lanes, root, design_model=design_model,
                                       obs_words=obs_words, link_divisor=link_divisor)
        st.update(f"building the design for {sim} (cached after the first build; about a "
                  "minute for a control model)")
        build(design_dir, sim, waves=waves is not None, toplevel=toplevel)
        st.update(f"running {episodes} closed-loop episode(s) on {sim}, every step checked "
                  "against pysim")
        res = run_closed_loop(design_dir, ref_path, sim=sim, episodes=episodes, seed=seed,
                              max_steps=max_steps, waves=waves, work_dir=root / f"run-{sim}",
                              obs_writes=obs_writes, coverage=coverage,
                              threshold_writes=threshold_writes, toplevel=toplevel,
                              link_checked=mutation is None)
    res["model"] = str(model_path)
    res["lanes"] = lanes
    res["seed"] = seed
    res["mutation"] = mutation
    res["design_dir"] = str(design_dir)
    return res


def performance(res: dict, model: Model, lanes: int, clock_mhz: float) -> dict:
    """Cycle statistics of a closed-loop run (cycles measured by the design).

    The dense schedule is the cycle model's ``dense_cycles()``; the cycle figures include the
    first step's full pass. ``latency_cycles_mean`` counts a step from its first observation
    write to ``done`` (the host's writes included)."""
    steps = [s for s in res["per_step"] if s.get("cycles") is not None]  # (a hung step: none)
    if not steps:
        raise ValueError("no completed step to report on (see the first mismatch)")
    cyc = np.array([s["cycles"] for s in steps], dtype=np.float64)
    macs = np.array([sum(s["macs"]) for s in steps], dtype=np.float64)
    busy = np.array([s["busy"] for s in steps], dtype=np.float64)
    lane_work = np.array([s["lane_work"] for s in steps], dtype=np.float64).sum(axis=0)
    dense = CoreCycleModel(model, lanes, res.get("obs_words")).dense_cycles()
    sig_ideal = np.ceil(macs / lanes)
    lat = [s["latency"] for s in steps if s.get("latency") is not None]
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
        "latency_cycles_mean": float(np.mean(lat)) if lat else None,
        "useful_macs_per_step": float(macs.mean()),
        "ideal_cycles_per_step": float(sig_ideal.mean()),
        "mac_utilisation": float(macs.sum() / (lanes * busy.sum())) if busy.sum() else None,
        "balance": float(lane_work.mean() / lane_work.max()) if lane_work.max() else None,
        "dense_schedule_cycles": int(dense),
        "speedup_vs_dense": float(dense / cyc.mean()),
        # the network as trained (before a structural clean-up), as `deltanet eval` counts it
        "dense_mults_per_step": int(dense_mults(model).sum()),
    }


def print_performance(perf: dict, res: dict, console=None):
    """The performance table of a closed-loop run (:func:`performance`)."""
    con = console or Console()
    t = Table(title=f"closed loop on {res['simulator']}, event-driven core, "
                    f"{perf['lanes']} lanes, {perf['clock_mhz']:g} MHz")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("env steps", f"{perf['steps']}"),
        ("return (hardware / reference)", f"{res['hw_return']:.2f} / "
         + ("-" if res["ref_return"] is None else f"{res['ref_return']:.2f}")),
        ("mismatching steps", f"{res['mismatches']}"),
        ("cycles/step mean, p50, p99, max",
         (f"{perf['cycles_mean']:.1f}, {perf['cycles_p50']:.0f}, {perf['cycles_p99']:.0f}, "
         f"{perf['cycles_max']:.0f}")),
        ("latency mean / max", (f"{perf['latency_us_mean']:.3f} us / "
                               f"{perf['latency_us_max']:.3f} us")),
        ("cycles/step with the observation writes", "-" if perf["latency_cycles_mean"] is None
         else f"{perf['latency_cycles_mean']:.1f}"),
        ("useful MACs/step (dense mults)", (f"{perf['useful_macs_per_step']:.1f} "
                                           f"({perf['dense_mults_per_step']})")),
        ("MAC-lane utilisation", f"{perf['mac_utilisation']:.1%}"
         if perf["mac_utilisation"] is not None else "-"),
        ("lane balance (mean/worst)", f"{perf['balance']:.3f}" if perf["balance"] else "-"),
        ("dense schedule cycles/step", f"{perf['dense_schedule_cycles']}"),
        ("speed-up vs dense schedule", f"{perf['speedup_vs_dense']:.1f}x"),
        ("simulation speed", f"{res['env_steps_per_s']:.1f} env steps/s"
         + (f", {res['sim_cycles_per_s']:,.0f} cycles/s"
            if res.get("sim_cycles_per_s") else "")),
    ]
    for a, b in rows:
        t.add_row(a, b)
    con.print(t)

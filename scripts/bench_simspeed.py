#!/usr/bin/env python
"""Benchmark: closed-loop simulation speed of pysim, Amaranth's simulator, Icarus and Verilator.

All engines run the same closed-loop episodes (bundled CartPole, the same lanes and seed, cut at
``--max-steps`` so the Amaranth simulator finishes in seconds), side by side in one run; each
figure is the median of ``--repeats`` runs. Rows:

* pysim: the reference alone as the policy (env step + observation quantization + fixed-point
  delta step at B = 1 + cycle model); no hardware.
* Amaranth: ``deltanet simulate --engine amaranth`` (the core in ``amaranth.sim``).
* Icarus / Verilator: ``deltanet simulate --engine icarus|verilator`` (the generated Verilog under
  the core's cocotb bench).

The design is the event-driven ``deltanet_core``.

The hardware rows include the whole bench: env, driver, monitor and the pysim reference checker
at every step. Their loop time is the bench's own ``wall_s`` (from after reset to the end of the
last episode): building (Verilog generation, the Verilator/Icarus compile, Amaranth's
elaboration) and simulator start-up are excluded; the end-to-end seconds of one call are listed
beside it. Cycles per second are design cycles (the sum of the per-step ``cycles``) per second
of loop time. Every hardware run must be bit-exact (no mismatching step) and all engines must
see the same per-step cycles. Writes benchmarks/results/simspeed.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import DeltaNetwork, load_model
from deltanet.pysim.corecycles import CoreCycleModel
from deltanet.sim.tools import have

from deltanet import MODELS_DIR
from deltanet.amaranth_engine import run_amaranth
from deltanet.closed_loop import check_obs_words, run
from deltanet.envs import make_env

TARGET = 200.0  # env steps/s, CartPole closed loop on Verilator including the bench


def pysim_loop(model_path, *, lanes, episodes, seed, max_steps) -> dict:
    """The reference as the policy: per-step cycles (the core's cycle model) and the loop's
    wall time."""
    model = load_model(model_path)
    net = DeltaNetwork(model, batch=1)
    cm = CoreCycleModel(model, lanes, check_obs_words(model, None))
    envs = [make_env(model.meta["env_id"], seed + ep)() for ep in range(episodes)]
    cycles = []
    t0 = time.perf_counter()
    for ep, env in enumerate(envs):
        obs, _ = env.reset(seed=seed + ep)
        net.reset()
        t = 0
        while True:
            x = net.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))
            y = net.step(x)
            cycles.append(int(cm.step_cycles(net.last_events, [t == 0])[0]))
            obs, _, term, trunc, _ = env.step(net.decode(y)[0])
            t += 1
            if term or trunc or (max_steps and t >= max_steps):
                break
    wall = time.perf_counter() - t0
    for env in envs:
        env.close()
    return {"steps": len(cycles), "cycles": cycles, "wall_s": wall, "mismatches": 0}


def hw_loop(engine, model_path, *, lanes, episodes, seed, max_steps) -> dict:
    t0 = time.perf_counter()
    if engine == "amaranth":
        r = run_amaranth(model_path, lanes=lanes, episodes=episodes, seed=seed,
                         max_steps=max_steps)
    else:
        r = run(model_path, lanes=lanes, sim=engine, episodes=episodes, seed=seed,
                max_steps=max_steps)
    call = time.perf_counter() - t0
    return {"steps": r["steps"], "cycles": [s["cycles"] for s in r["per_step"]],
            "wall_s": r["wall_s"], "call_s": call, "mismatches": r["mismatches"],
            "first_mismatch": r["first_mismatch"]}


def measure(name, fn, repeats, **kw) -> dict:
    runs = [fn(**kw) for _ in range(repeats)]
    for r in runs:
        if r["mismatches"]:
            raise SystemExit(f"{name}: {r['mismatches']} mismatching steps, first "
                             f"{r.get('first_mismatch')}")
        if r["cycles"] != runs[0]["cycles"]:
            raise SystemExit(f"{name}: per-step cycles differ between repeats")
    steps, total = runs[0]["steps"], int(sum(runs[0]["cycles"]))
    walls = [r["wall_s"] for r in runs]
    row = {"engine": name, "steps": steps, "episodes": kw["episodes"],
           "max_steps": kw["max_steps"], "design_cycles": total, "repeats": repeats,
           "wall_s": walls, "wall_s_median": statistics.median(walls),
           "env_steps_per_s": statistics.median(steps / w for w in walls),
           "cycles_per_s": statistics.median(total / w for w in walls),
           "cycles": runs[0]["cycles"]}
    if "call_s" in runs[0]:
        row["call_s_median"] = statistics.median(r["call_s"] for r in runs)
    print(f"{name:>28}: {steps} steps, {row['env_steps_per_s']:10,.1f} env steps/s, "
          f"{row['cycles_per_s']:12,.0f} cycles/s (loop {row['wall_s_median']:.3f} s)")
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODELS_DIR / "cartpole.npz")
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=100,
                    help="cut every episode here (keeps the Amaranth row to seconds)")
    ap.add_argument("--full-steps", type=int, default=500,
                    help="also run pysim and Verilator on the same episodes cut here instead "
                         "(0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    model = load_model(args.model)
    common = {"model_path": args.model, "lanes": args.lanes, "episodes": args.episodes,
              "seed": args.seed}
    short = {**common, "max_steps": args.max_steps}
    rows, missing = [], []
    # warm-up, not timed: the Verilator build (cached afterwards) and Amaranth's first
    # elaboration; the pysim row gets the same chance to warm up
    if have("verilator"):
        hw_loop("verilator", **{**short, "max_steps": 2})
    hw_loop("amaranth", **{**short, "max_steps": 2})
    pysim_loop(**short)

    rows.append(measure("pysim (fixed delta, B=1)", pysim_loop, args.repeats, **short))
    rows.append(measure("Amaranth simulator", lambda **kw: hw_loop("amaranth", **kw),
                        args.repeats, **short))
    for sim_name, label in (("icarus", "Icarus (cocotb)"), ("verilator", "Verilator (cocotb)")):
        if have(sim_name):
            rows.append(measure(label, lambda s=sim_name, **kw: hw_loop(s, **kw),
                                args.repeats, **short))
        else:
            missing.append(label)
            print(f"{label:>28}: not installed")
    if args.full_steps and have("verilator"):
        full = {**common, "max_steps": args.full_steps}
        rows.append(measure("pysim (fixed delta, B=1)", pysim_loop, args.repeats, **full))
        rows.append(measure("Verilator (cocotb)", lambda **kw: hw_loop("verilator", **kw),
                            args.repeats, **full))
    # the same episodes: every engine saw the same per-step cycles
    for r in rows:
        ref = next(q for q in rows if q["max_steps"] == r["max_steps"])
        if r["cycles"] != ref["cycles"]:
            raise SystemExit(f"{r['engine']}: per-step cycles differ from {ref['engine']}")

    ver = [r for r in rows if r["engine"].startswith("Verilator")]
    best = max(ver, key=lambda r: r["steps"]) if ver else None
    meta = {"model": str(Path(args.model).resolve().relative_to(ROOT))
            if Path(args.model).resolve().is_relative_to(ROOT) else str(args.model),
            "model_checksum": model.meta.get("checksum"), "env_id": model.meta["env_id"],
            "lanes": args.lanes, "seed": args.seed, "episodes": args.episodes,
            "max_steps": args.max_steps, "full_steps": args.full_steps,
            "repeats": args.repeats, "not_installed": missing,
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "target_env_steps_per_s": TARGET,
            "target_met": bool(best and best["env_steps_per_s"] >= TARGET)}

    lines = ["# Closed-loop simulation speed: pysim, Amaranth, Icarus, Verilator", "",
             f"Bundled {meta['env_id']} model (`{meta['model']}`, checksum "
             f"`{meta['model_checksum']}`), event-driven core, {args.lanes} MAC lanes, "
             f"seed {args.seed}, "
             f"{args.episodes} episode(s) cut at {args.max_steps} steps (the Amaranth "
             f"simulator is too slow for whole episodes in a benchmark run)"
             + (f"; pysim and Verilator also on the same episode cut at {args.full_steps} "
                "steps" if args.full_steps and ver else "")
             + f". Median of {args.repeats} repeats, all measured side by side in one run "
             f"(`scripts/bench_simspeed.py`) on {meta['machine']}, Python {meta['python']}.", "",
             "| engine | env steps | design cycles | env steps/s | cycles/s | loop s | call s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        call = f"{r['call_s_median']:.2f}" if "call_s_median" in r else "-"
        lines.append(f"| {r['engine']} | {r['steps']} | {r['design_cycles']:,} | "
                     f"{r['env_steps_per_s']:,.1f} | {r['cycles_per_s']:,.0f} | "
                     f"{r['wall_s_median']:.3f} | {call} |")
    for label in missing:
        lines.append(f"| {label} | not installed | | | | | |")
    notes = [
        ("pysim: the reference alone as the policy (env step, observation quantization, "
         "fixed-point delta step at B = 1, cycle model); its cycles/s are the cycles the "
         "hardware would take, predicted, not simulated."),
        ("Amaranth / Icarus / Verilator: the design chooses the actions and every step is "
         "checked bit for bit against pysim (outputs, action, events/MACs per layer, cycles "
         "port and elapsed clock edges); every run here had 0 mismatching steps and all "
         "engines saw the same per-step cycles."),
        ("loop s: the bench's own timer, from after reset to the end of the last episode "
         "(env, driver, monitor, reference checker). **Build time is excluded** (Verilog "
         "generation, the Verilator compile - cached after the warm-up run - and Amaranth's "
         "elaboration), as is simulator start-up; call s is one whole `deltanet "
         "simulate`-style call end to end, for scale."),
        ("cycles/s counts design cycles (sum of per-step `cycles`), not the idle edges the "
         "benches spend between steps."),
    ]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    if best:
        lines.append(f"Target: CartPole closed loop >= {TARGET:.0f} env steps/s on Verilator "
                     f"including the bench. Measured {best['env_steps_per_s']:,.0f} env steps/s "
                     f"over {best['steps']} steps: "
                     f"{'met' if meta['target_met'] else 'NOT met'}.")
    else:
        lines.append("Target: CartPole closed loop >= 200 env steps/s on Verilator: Verilator "
                     "is not installed, not measured.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simspeed.md").write_text("\n".join(lines) + "\n")
    (args.out / "simspeed.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                       indent=2) + "\n")
    print(f"wrote {args.out / 'simspeed.md'}")


if __name__ == "__main__":
    main()

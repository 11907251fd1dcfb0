#!/usr/bin/env python
"""Soak benchmark: many closed-loop steps over many random configurations, zero mismatches.

Each configuration is a model, a lane count (odd ones included), an observation word size and a
seed range: the four bundled control models, and seeded random networks for real gymnasium tasks
(random depth and widths, input/weight/activation formats with every rounding and overflow mode,
thresholds, sparsity; Discrete tasks decode by argmax, Box tasks by clip). Every configuration
runs closed-loop episodes on the generated Verilog in Verilator, the hardware choosing the
actions, each step checked bit for bit against pysim (outputs, per-layer events and MACs, the
cycles port), through ``deltanet.closed_loop.run`` exactly as ``deltanet verify`` does.

Resumable: the progress of every configuration is kept in ``benchmarks/results/soak.json``
(written atomically after every chunk of episodes); a re-run continues where it stopped, with
the next unused seeds. The configurations are regenerated from ``--seed``, so they are the same
on every run. Writes benchmarks/results/soak.{json,md}.

    python scripts/bench_soak.py                         # up to 1,000,000 steps, 54 configs
    python scripts/bench_soak.py --minutes 30            # stop after about 30 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import Decoder, LayerParams, Model, load_model, mlp_config, save_model
from deltanet.pysim.atomic import write_text_atomic

from deltanet import MODELS_DIR
from deltanet.closed_loop import run

#: tasks of the random models: observation size, action count (Discrete) or size (Box)
TASKS = {"CartPole-v1": (4, 2, None), "Acrobot-v1": (6, 3, None),
         "MountainCar-v0": (2, 3, None), "Pendulum-v1": (3, 1, (-2.0, 2.0)),
         "LunarLander-v3": (8, 4, None)}
BUNDLED = ("cartpole", "lunarlander", "mountaincar", "pendulum")
ROUNDING = ("trunc", "half_up", "half_even")
OVERFLOW = ("sat", "wrap")
#: least episodes per chunk, and step cap per episode
CHUNK_EPISODES = 4
MAX_STEPS = 500


def random_task_model(env_id: str, seed: int) -> Model:
    """A seeded random ReLU MLP for ``env_id`` with random formats, thresholds and pruning."""
    rng = np.random.default_rng(seed)
    n_in, n_out, box = TASKS[env_id]
    hidden = [int(v) for v in rng.integers(3, 49, size=int(rng.integers(1, 3)))]
    rounding, overflow = rng.choice(ROUNDING), rng.choice(OVERFLOW)
    act = f"SQ{int(rng.integers(4, 9))}.{int(rng.integers(6, 11))}:{rounding}:{overflow}"
    dec = Decoder() if box is None else Decoder("clip", (box[0],) * n_out, (box[1],) * n_out)
    thresholds = [float(rng.choice([0.0, 0.0, 0.01, 0.05, 0.2])) for _ in range(len(hidden) + 1)]
    cfg = mlp_config([n_in, *hidden, n_out],
                     input_fmt=f"SQ{int(rng.integers(3, 9))}.{int(rng.integers(6, 13))}",
                     weight_fmt=f"SQ2.{int(rng.integers(4, 9))}", act_fmt=act,
                     thresholds=thresholds, decoder=dec)
    sparsity = float(rng.choice([0.0, 0.5, 0.8, 0.9]))
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=(ly.n_out, ly.n_in)) / np.sqrt(ly.n_in)).astype(np.float32)
        b = (rng.normal(size=ly.n_out) * 0.2).astype(np.float32)
        params.append(LayerParams(w, b, rng.random((ly.n_out, ly.n_in)) >= sparsity))
    return Model(cfg, tuple(params), {"env_id": env_id})


def configurations(n: int, seed: int, steps_each: int) -> list:
    """``n`` configurations: the bundled control models first, then random task models."""
    rng = np.random.default_rng(seed)
    rng_thr = np.random.default_rng(seed + 1)  # its own stream: the other draws stay the same
    out = []
    for i in range(n):
        if i < len(BUNDLED):
            name = BUNDLED[i]
            spec = {"kind": "bundled", "model": name}
            n_in = load_model(MODELS_DIR / f"{name}.npz").config.n_in
        else:
            env_id = list(TASKS)[i % len(TASKS)]
            spec = {"kind": "random", "env_id": env_id, "model_seed": int(seed * 1000 + i)}
            n_in = TASKS[env_id][0]
        spec.update({"id": i, "lanes": int(rng.integers(1, 9)),
                     "obs_words": int(rng.integers(1, n_in + 1)),
                     "episode_seed": int(rng.integers(0, 10**6)), "steps_target": steps_each,
                     # a run-time threshold write every that many steps (0: none)
                     "threshold_writes": int(rng_thr.choice([0, 0, 5, 13]))})
        out.append(spec)
    return out


def model_path(spec: dict, folder: Path) -> Path:
    if spec["kind"] == "bundled":
        return MODELS_DIR / f"{spec['model']}.npz"
    p = folder / f"random-{spec['id']}.npz"
    if not p.exists():
        save_model(random_task_model(spec["env_id"], spec["model_seed"]), p)
    return p


def describe(spec: dict, model: Model) -> str:
    cfg = model.config
    sizes = "-".join(str(v) for v in [cfg.n_in] + [ly.n_out for ly in cfg.layers])
    fmts = f"{cfg.input_fmt} / {cfg.layers[0].weight_fmt} / {cfg.layers[0].out_fmt}"
    name = spec.get("model") or spec["env_id"]
    return f"{spec['kind']} {name} {sizes} ({fmts})"


def write_report(state: dict, out: Path) -> None:
    rows = state["configs"]
    steps = sum(r["steps"] for r in rows)
    bad = sum(r["mismatches"] for r in rows)
    done = sum(r["steps"] >= r["steps_target"] for r in rows)
    lines = ["# Soak: closed-loop steps on Verilator across random configurations", "",
             (f"`scripts/bench_soak.py` (resumable): {steps:,} closed-loop env steps over "
              f"{len(rows)} configurations ({done} complete, target {state['steps_target']:,} "
              f"steps in all), every step checked bit for bit against pysim (outputs, "
              f"per-layer events and MACs, cycles): **{bad} mismatching steps**. Models: the "
              "bundled control models and seeded random networks for real tasks (random "
              "widths, formats with every rounding and overflow mode, thresholds, sparsity); "
              "lanes 1-8, random observation word sizes; in some configurations a threshold "
              "register is written at run time every few steps (design and reference alike)."),
             "",
             ("| # | model | lanes | obs words | threshold write every | steps | episodes | "
              "mismatches | env steps/s |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = r["steps"] / r["sim_s"] if r["sim_s"] else 0.0
        tw = r.get("threshold_writes") or "-"
        lines.append(f"| {r['id']} | {r['desc']} | {r['lanes']} | {r['obs_words']} | {tw} | "
                     f"{r['steps']:,} | {r['episodes']} | {r['mismatches']} | {rate:,.0f} |")
    write_text_atomic(out / "soak.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "soak.json", json.dumps(state, indent=1) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-steps", type=int, default=1_000_000)
    ap.add_argument("--configs", type=int, default=54)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: never)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    folder = ROOT / "build" / "soak"
    folder.mkdir(parents=True, exist_ok=True)
    specs = configurations(args.configs, args.seed, -(-args.total_steps // args.configs))
    path = args.out / "soak.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    if state.get("seed") != args.seed or len(state.get("configs", [])) != len(specs) \
            or state.get("steps_target") != args.total_steps:
        state = {"seed": args.seed, "steps_target": args.total_steps,
                 "configs": [{**s, "steps": 0, "episodes": 0, "mismatches": 0, "sim_s": 0.0,
                              "first_mismatch": None, "desc": ""} for s in specs]}
    for r, spec in zip(state["configs"], specs):  # state from before threshold writes existed
        r.setdefault("threshold_writes", spec["threshold_writes"])
    t_end = time.time() + args.minutes * 60 if args.minutes else float("inf")
    total = sum(r["steps_target"] for r in state["configs"])
    bar = tqdm(total=total, initial=sum(min(r["steps"], r["steps_target"])
                                        for r in state["configs"]), unit="step", desc="soak")
    for r in state["configs"]:
        p = model_path(r, folder)
        r["desc"] = describe(r, load_model(p))
        while r["steps"] < r["steps_target"] and time.time() < t_end:
            # about 2,000 steps a chunk: short episodes (a random policy) come in larger chunks
            mean_len = r["steps"] / r["episodes"] if r["episodes"] else MAX_STEPS
            chunk = int(min(200, max(CHUNK_EPISODES, 2000 // max(mean_len, 1))))
            res = run(p, lanes=r["lanes"], sim="verilator", episodes=chunk,
                      seed=r["episode_seed"] + r["episodes"], max_steps=MAX_STEPS,
                      obs_words=r["obs_words"], threshold_writes=r.get("threshold_writes", 0))
            r["steps"] += res["steps"]
            r["episodes"] += chunk
            r["mismatches"] += res["mismatches"]
            r["sim_s"] += res.get("wall_s") or 0.0
            if res["first_mismatch"] and r["first_mismatch"] is None:
                r["first_mismatch"] = res["first_mismatch"]
            bar.update(min(res["steps"], r["steps_target"] - (r["steps"] - res["steps"])))
            write_report(state, args.out)
            if res["mismatches"]:
                print(f"config {r['id']}: {res['mismatches']} mismatching steps: "
                      f"{res['first_mismatch']}", flush=True)
                break
        if time.time() >= t_end:
            break
    bar.close()
    write_report(state, args.out)
    steps = sum(r["steps"] for r in state["configs"])
    bad = sum(r["mismatches"] for r in state["configs"])
    print(f"{steps:,} steps over {len(state['configs'])} configurations, {bad} mismatching")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compression as a new user runs it: ``deltanet train`` then ``deltanet compress``, defaults.

    python scripts/bench_compress.py [TASK ...] [--seed 0]      # runs what is missing
    python scripts/bench_compress.py --report                   # only collects the results

Per task (the bundled tasks and gymnasium tasks that are not bundled), in
``runs/compress/<task>/`` (git-ignored; every step resumes or is skipped when its output
exists):

1. ``deltanet train --env ENV --algo ALGO --seed S --out dense.npz --resume``: rl-zoo3's tuned
   hyper-parameters, the best validated policy kept;
2. ``deltanet eval --model dense.npz --mode float --dense --episodes 20 --seed 900000``: the
   dense agent on 20 episodes no step of training, validation or compression uses, against the
   task's reference level (issue 12: rl-zoo3's benchmark level; for the tasks that are not
   bundled, gymnasium's ``reward_threshold``);
3. ``deltanet compress --model dense.npz --out comp.npz --json comp.json`` with default options.

The results (and the commands that made them) go to ``benchmarks/results/compress.json``;
``scripts/bench_reduction.py`` puts them at the top of reduction.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.io import write_json_atomic

RUNS = ROOT / "runs" / "compress"
OUT = ROOT / "benchmarks" / "results" / "compress.json"
#: held-out episodes of the dense agents (seeds EVAL_SEED+, used nowhere else)
EVAL_EPISODES = 20
EVAL_SEED = 900_000
#: task -> env, algorithm, bundled, reference level (None: gymnasium's reward_threshold),
#: training seed
TASKS = {
    "cartpole": ("CartPole-v1", "ppo", True, 475.0, 0),
    "lunarlander": ("LunarLander-v3", "ppo", True, 200.0, 0),
    "mountaincar": ("MountainCar-v0", "dqn", True, -110.0, 0),
    "pendulum": ("Pendulum-v1", "sac", True, -200.0, 0),
    "acrobot": ("Acrobot-v1", "dqn", False, None, 0),
    "mountaincarcontinuous": ("MountainCarContinuous-v0", "sac", False, None, 0),
}
#: the compression target of issue 12 (CartPole: 150x)
TARGET_REDUCTION = {"cartpole": 150.0}
DEFAULT_TARGET = 20.0


def deltanet(*args, log: Path) -> float:
    """Run a ``deltanet`` command (appending its output to ``log``); its wall time."""
    cmd = [sys.executable, "-m", "deltanet", *map(str, args)]
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ deltanet {' '.join(map(str, args))}\n")
        f.flush()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False, cwd=ROOT)
    if p.returncode not in (0, 1):
        raise SystemExit(f"deltanet {' '.join(map(str, args))} failed ({p.returncode}); "
                         f"see {log}")
    return time.time() - t0


def reference(env_id: str, level):
    if level is not None:
        return float(level), "issue 12 (rl-zoo3 benchmark level)"
    import gymnasium as gym

    thr = gym.spec(env_id).reward_threshold
    return (float(thr) if thr is not None else None), "gymnasium reward_threshold"


def run_task(name: str, seed: int | None) -> None:
    env_id, algo, _bundled, _level, default_seed = TASKS[name]
    seed = default_seed if seed is None else seed
    d = RUNS / name
    d.mkdir(parents=True, exist_ok=True)
    log = d / "log.txt"
    times = json.loads((d / "times.json").read_text()) if (d / "times.json").exists() else {}
    if not (d / "dense.npz").exists():
        times["train"] = deltanet("--quiet", "train", "--env", env_id, "--algo", algo, "--seed",
                                  seed, "--out", d / "dense.npz", "--resume", log=log)
    if not (d / "dense_eval.json").exists():
        deltanet("--quiet", "eval", "--model", d / "dense.npz", "--mode", "float", "--dense",
                 "--episodes", EVAL_EPISODES, "--seed", EVAL_SEED, "--json",
                 d / "dense_eval.json", log=log)
    if not (d / "comp.json").exists():
        times["compress"] = deltanet("--quiet", "compress", "--model", d / "dense.npz",
                                     "--out", d / "comp.npz", "--json", d / "comp.json",
                                     log=log)
    write_json_atomic(d / "times.json", times)


def _one_run(log: str) -> bool:
    """Whether the compress run logged in ``log`` started from nothing."""
    return "trials to run, 0 in" in log and "read from" not in log


def collect() -> list:
    from deltanet.pysim import load_model

    rows = []
    for name, (env_id, algo, bundled, level, _seed) in TASKS.items():
        d = RUNS / name
        if not (d / "comp.json").exists() or not (d / "dense_eval.json").exists():
            continue
        prov = load_model(d / "dense.npz").meta["provenance"]
        ev = json.loads((d / "dense_eval.json").read_text())
        comp = json.loads((d / "comp.json").read_text())
        times = json.loads((d / "times.json").read_text()) if (d / "times.json").exists() else {}
        ref, ref_src = reference(env_id, level)
        a = comp.get("accepted")
        target = TARGET_REDUCTION.get(name, DEFAULT_TARGET)
        rows.append({
            "task": name, "env_id": env_id, "algo": algo.upper(), "bundled": bundled,
            "seed": prov.get("seed"), "train_steps": prov.get("steps"),
            "net": prov.get("net_arch"), "hyperparams": prov.get("hyperparams_source"),
            "selected": prov.get("selected"), "train_seconds": prov.get("train_seconds"),
            "dense_return": ev["mean_return"], "dense_std": ev["std_return"],
            "dense_episodes": EVAL_EPISODES, "dense_seed": EVAL_SEED,
            "reference": ref, "reference_source": ref_src,
            "competent": ref is None or ev["mean_return"] >= ref,
            "compress_seconds": comp.get("seconds"),
            "compress_wall_seconds": times.get("compress"),
            "finetune_steps": comp["settings"]["finetune_steps"],
            "trials": len(comp["trials"]),
            # a run that resumed a journal or read back a ladder did not take all the time
            "one_run": _one_run((d / "log.txt").read_text().split("$ deltanet")[-1]),
            "accepted": None if a is None else {
                "reduction": a["reduction"], "mults": a["mults"],
                "dense_mults": comp["dense_mults_per_step"],
                "holdout_return": a["holdout"]["return"],
                "holdout_dense_return": a["holdout"]["dense_return"],
                "holdout_episodes": a["holdout"]["n"], "lower": a["holdout"]["lower"],
                "allowed_loss": a["holdout"]["allowed_loss"], "level": a.get("level"),
                "thresholds_lsb": a["thresholds_lsb"], "weight_bits": a["weight_bits"],
                "weight_memory": a["weight_memory"]},
            "target_reduction": target,
            "meets": a is not None and a["reduction"] >= target,
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", default=[], help=f"some of {', '.join(TASKS)}")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the task's)")
    ap.add_argument("--report", action="store_true", help="only collect the results")
    args = ap.parse_args(argv)
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; choose from {list(TASKS)}")
    if not args.report:
        for name in args.tasks or list(TASKS):
            print(f"== {name}", flush=True)
            run_task(name, args.seed)
    rows = collect()
    write_json_atomic(OUT, {"tasks": rows, "eval_episodes": EVAL_EPISODES,
                            "eval_seed": EVAL_SEED})
    for r in rows:
        a = r["accepted"]
        print(f"{r['task']}: dense {r['dense_return']:.1f} (reference {r['reference']}), "
              + (f"compressed {a['reduction']:.1f}x, held-out {a['holdout_return']:.1f} vs "
                 f"{a['holdout_dense_return']:.1f}" if a else "nothing accepted"))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

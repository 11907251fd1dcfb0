"""Build the bundled models as a user would: ``deltanet train``, then ``deltanet compress``.

    python scripts/build_models.py                 # every bundled task
    python scripts/build_models.py cartpole        # some tasks (also tasks that are not bundled)
    python scripts/build_models.py --force cartpole  # rebuild from scratch

Per task, in ``runs/compress/<task>/`` (git-ignored; a step is skipped when its output exists,
and training and compression resume from their checkpoints, ladder and journal):

1. ``deltanet train --env ENV --algo ALGO --seed S --out dense.npz --resume``: rl-zoo3's tuned
   hyper-parameters (network, steps, everything), the best validated policy kept;
2. ``deltanet eval --model dense.npz --mode float --dense --episodes 20 --seed 900000``: the
   dense agent on 20 episodes that no step of training, validation or compression uses (issue
   12's competence check: rl-zoo3's benchmark level for the bundled tasks, gymnasium's
   ``reward_threshold`` for the others);
3. ``deltanet compress --model dense.npz --out comp.npz --json comp.json``, every option at its
   default (4 lanes; the pruning ladder with RL fine-tuning, the Optuna search and the held-out
   acceptance rule of :mod:`deltanet.compress`).

A bundled task's results are then copied to ``deltanet/models/<task>_dense.npz`` (``dense.npz``)
and ``deltanet/models/<task>.npz`` (``comp.npz``), only when compress accepted a model.
``scripts/bench_compress.py`` collects the same runs into ``benchmarks/results/compress.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet import MODELS_DIR
from deltanet.io import write_bytes_atomic, write_json_atomic

RUNS = ROOT / "runs" / "compress"
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
    "lunarlandercontinuous": ("LunarLanderContinuous-v3", "ppo", False, None, 0),
}
BUNDLED = [name for name, t in TASKS.items() if t[2]]


def deltanet(*args, log: Path) -> float:
    """Run a ``deltanet`` command (appending its output to ``log``); its wall time."""
    cmd = [sys.executable, "-m", "deltanet", *map(str, args)]
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ deltanet {' '.join(map(str, args))}\n")
        f.flush()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False, cwd=ROOT)
    if p.returncode not in (0, 1):  # compress exits 1 when it accepted nothing
        raise SystemExit(f"deltanet {' '.join(map(str, args))} failed ({p.returncode}); "
                         f"see {log}")
    return time.time() - t0


def run_task(name: str, seed: int | None = None, runs: Path = RUNS) -> Path:
    """Train, evaluate and compress task ``name`` in ``runs/<name>`` (what is missing); the
    folder."""
    env_id, algo, _bundled, _level, default_seed = TASKS[name]
    seed = default_seed if seed is None else seed
    d = runs / name
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
        t = deltanet("--quiet", "compress", "--model", d / "dense.npz", "--out", d / "comp.npz",
                     "--json", d / "comp.json", log=log)
        times["compress_last"] = t
        if whole_run(log.read_text().split("$ deltanet")[-1]):
            times["compress_whole"] = t  # the time a compress from nothing took
    write_json_atomic(d / "times.json", times)
    return d


def whole_run(log: str) -> bool:
    """Whether the compress run logged in ``log`` started from nothing (no journal trials, no
    ladder read back)."""
    return "trials to run, 0 in" in log and "read from" not in log


def bundle(name: str, d: Path) -> bool:
    """Copy task ``name``'s dense and compressed models into ``deltanet/models/``; False (and
    nothing copied) when compress accepted no model."""
    comp = json.loads((d / "comp.json").read_text())
    if comp.get("accepted") is None or not (d / "comp.npz").exists():
        print(f"{name}: compress accepted no model (see {d / 'comp.md'}); bundled models kept")
        return False
    for src, dst in ((d / "dense.npz", MODELS_DIR / f"{name}_dense.npz"),
                     (d / "comp.npz", MODELS_DIR / f"{name}.npz")):
        write_bytes_atomic(dst, src.read_bytes())
        print(f"bundled {dst} ({dst.stat().st_size / 1024:.0f} kB)")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", help=f"tasks (default the bundled ones: {BUNDLED}; "
                                             f"known: {list(TASKS)})")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the task's)")
    ap.add_argument("--work", type=Path, default=RUNS, help="folder of the runs")
    ap.add_argument("--force", action="store_true", help="delete a task's runs first")
    ap.add_argument("--no-bundle", action="store_true",
                    help="leave deltanet/models/ alone (experiments)")
    args = ap.parse_args(argv)
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; choose from {list(TASKS)}")
    for name in args.tasks or BUNDLED:
        t0 = time.time()
        print(f"== {name}", flush=True)
        if args.force:
            shutil.rmtree(args.work / name, ignore_errors=True)
        d = run_task(name, args.seed, args.work)
        if TASKS[name][2] and not args.no_bundle:
            bundle(name, d)
        print(f"== {name} finished in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

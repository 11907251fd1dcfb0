"""Build the bundled models: train -> prune -> quantize -> calibrate, per task, resumable.

    python scripts/build_models.py                 # every task
    python scripts/build_models.py cartpole        # some tasks
    python scripts/build_models.py --force cartpole  # rebuild from scratch

Intermediate files live in ``runs/build_models/<task>/`` (git-ignored): ``dense.npz`` (+ SB3
model, checkpoints), ``pruned.npz``, ``quant.npz``, ``final.npz``. A stage whose output exists is
skipped; an interrupted training resumes from its newest checkpoint. The results are copied to
``deltanet/models/<task>_dense.npz`` (dense float) and ``deltanet/models/<task>.npz`` (pruned,
quantized, calibrated). Every stage is seeded; one torch thread.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet import MODELS_DIR  # noqa: E402
from deltanet.io import write_bytes_atomic  # noqa: E402

#: Per task: env, algorithm, training budget (env steps), hidden sizes, target sparsity,
#: fine-tuning budget and quantization options (default 16-bit activations, 8-bit weights).
#: Training budgets keep each task to <= ~10 minutes on 2 CPU cores. Hidden sizes are smaller
#: than rl-zoo's 256-256 where that still reaches the reward (the hardware keeps activations in
#: registers, and a dense 256-256 artifact exceeds 200 kB).
TASKS = {
    "cartpole": {"env": "CartPole-v1", "algo": "ppo", "steps": 100_000, "net": [64, 64],
                 "sparsity": 0.9, "finetune": 50_000},
    "lunarlander": {"env": "LunarLander-v3", "algo": "dqn", "steps": 100_000, "net": [128, 128],
                    "sparsity": 0.5, "finetune": 30_000,
                    # this DQN's Q-values lie close together: 8-bit weights flip 40% of the
                    # greedy actions (fixed-point return 39 vs 126 float); 12 bits keep 96%.
                    "quant": {"weight_bits": 12},
                    # returns spread widely (std ~120): more episodes per calibration point
                    "cal_episodes": 100},
    "mountaincar": {"env": "MountainCar-v0", "algo": "dqn", "steps": 120_000, "net": [128, 128],
                    "sparsity": 0.8, "finetune": 40_000},
    "pendulum": {"env": "Pendulum-v1", "algo": "sac", "steps": 20_000, "net": [64, 64],
                 "sparsity": 0.8, "finetune": 10_000},
}
SEED = 0
#: Calibration keeps 97% of the dense float return on its own seeds: a 2-point margin so that
#: the benchmark's target (95% on other seeds, scripts/bench_reduction.py) survives seed noise.
FRACTION = 0.97
CAL_EPISODES = 30


def build(name: str, task: dict, work: Path, progress: bool) -> None:
    from pysim import load_model, save_model

    from deltanet.calibrate import calibrate
    from deltanet.cmd_quantize import print_report
    from deltanet.prune import prune_finetune
    from deltanet.quantize import quantize_model
    from deltanet.train import train

    work.mkdir(parents=True, exist_ok=True)
    dense, pruned = work / "dense.npz", work / "pruned.npz"
    quant, final = work / "quant.npz", work / "final.npz"
    print(f"== {name}: {task['env']} {task['algo'].upper()} net {task['net']}, train "
          f"{task['steps']:,} steps, prune to {task['sparsity']} with {task['finetune']:,} "
          f"fine-tuning steps, calibrate at {FRACTION:.0%} over "
          f"{task.get('cal_episodes', CAL_EPISODES)} episodes")
    stages = [
        ("train", dense, lambda: train(task["env"], task["algo"], task["steps"], SEED, dense,
                                       resume=True, progress=progress, net_arch=task["net"])),
        ("prune", pruned, lambda: prune_finetune(dense, task["sparsity"], pruned,
                                                 finetune_steps=task["finetune"],
                                                 progress=progress)),
        ("quantize", quant, lambda: _quantize(pruned, quant, quantize_model, print_report,
                                              save_model, load_model, task.get("quant", {}))),
        ("calibrate", final, lambda: save_model(calibrate(
            load_model(quant), fraction=FRACTION, episodes=task.get("cal_episodes", CAL_EPISODES),
            reference=load_model(dense))[0], final)),
    ]
    for stage, out, fn in stages:
        if out.exists():
            print(f"-- {stage}: {out} exists, skipped")
            continue
        t0 = time.time()
        print(f"-- {stage} ...")
        fn()
        print(f"-- {stage} done in {time.time() - t0:.0f} s")
    for src, dst in ((dense, MODELS_DIR / f"{name}_dense.npz"),
                     (final, MODELS_DIR / f"{name}.npz")):
        write_bytes_atomic(dst, src.read_bytes())
        print(f"bundled {dst} ({dst.stat().st_size / 1024:.0f} kB)")


def _quantize(src, dst, quantize_model, print_report, save_model, load_model, kwargs):
    q, rep = quantize_model(load_model(src), **kwargs)
    print_report(rep)
    save_model(q, dst)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tasks", nargs="*", help=f"tasks to build (default all: {list(TASKS)})")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "build_models",
                    help="folder for intermediate files")
    ap.add_argument("--force", action="store_true", help="delete a task's intermediate files first")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    names = args.tasks or list(TASKS)
    for n in names:
        if n not in TASKS:
            ap.error(f"unknown task {n!r}; known: {list(TASKS)}")
    for n in names:
        t0 = time.time()
        if args.force and (args.work / n).exists():
            shutil.rmtree(args.work / n)
        build(n, TASKS[n], args.work / n, not args.no_progress)
        print(f"== {n} finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

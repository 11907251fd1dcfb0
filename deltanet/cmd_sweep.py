"""``deltanet sweep``: thresholds x sparsities (x seeds x models) on Dask, with a Pareto plot."""

from __future__ import annotations

from pathlib import Path


def register(sub):
    p = sub.add_parser(
        "sweep", help="grid of thresholds x sparsities on Dask; results + Pareto plot",
        description="For every model, sparsity, threshold and seed: one-shot magnitude pruning "
                    "(no fine-tuning, to stay cheap), the same delta threshold on every layer, "
                    "bit-accurate delta episodes. Runs on a Dask LocalCluster (or --scheduler), "
                    "appends results to OUT/results.jsonl as they arrive, rewrites "
                    "OUT/results.csv, skips points already in OUT/results.jsonl, and draws "
                    "OUT/pareto.png (return vs reduction).")
    p.add_argument("--model", required=True, type=Path, nargs="+", help="model artifact(s)")
    p.add_argument("--thresholds", required=True, type=float, nargs="+",
                   help="delta thresholds (real units, same for every layer)")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.0],
                   help="one-shot sparsities in [0, 1) (default 0 = the model's own masks)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="episode seed groups")
    p.add_argument("--episodes", type=int, default=10, help="episodes per point (10)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (2)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from .sweep import pareto_front, sweep

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    rows = sweep(args.model, args.thresholds, args.sparsities, args.seeds, args.out,
                 episodes=args.episodes, scheduler=args.scheduler, workers=args.workers,
                 progress=not args.no_progress)
    for model in sorted({r["model"] for r in rows}):
        front = pareto_front([(r["reduction"], r["mean_return"]) for r in rows
                              if r["model"] == model and r["reduction"] != float("inf")])
        print(f"{model}: Pareto front " + ", ".join(f"{red:.1f}x@{ret:.1f}"
                                                    for red, ret in front))
    print(f"wrote {args.out}/results.csv, results.jsonl, pareto.png")
    return 0

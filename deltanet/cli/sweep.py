"""``deltanet sweep``: thresholds x sparsities (x seeds x models) on Dask, with a Pareto plot."""

from __future__ import annotations

from deltanet.pysim import load_model

from ..options import (
    SEED_MAX,
    add_episodes,
    add_model,
    check_output_dir,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..sweep import pareto_front, sweep

#: largest delta threshold (real units) and LocalCluster size a sweep may ask for
MAX_THRESHOLD = 1e9
MAX_WORKERS = 1024
#: the files a sweep writes into its folder
OUTPUTS = ("results.jsonl", "results.csv", "pareto.png")


def register(sub):
    p = sub.add_parser(
        "sweep", help="grid of thresholds x sparsities on Dask; results + Pareto plot",
        description="For every model, sparsity, threshold and seed: one-shot magnitude pruning "
                    "(no fine-tuning, to stay cheap), the same delta threshold on every layer, "
                    "bit-accurate delta episodes. Runs on a Dask LocalCluster (or --scheduler), "
                    "appends results to OUT/results.jsonl as they arrive, rewrites "
                    "OUT/results.csv, skips points already in OUT/results.jsonl, and draws "
                    "OUT/pareto.png (return vs reduction).")
    add_model(p, help="model artifact(s)", nargs="+")
    p.add_argument("--thresholds", required=True, type=float_in(0, MAX_THRESHOLD), nargs="+",
                   help="delta thresholds (real units, same for every layer)")
    p.add_argument("--sparsities", type=float_in(0, 1, hi_open=True), nargs="+", default=[0.0],
                   help="one-shot sparsities (0 = the model's own masks)")
    p.add_argument("--seeds", type=int_in(0, SEED_MAX), nargs="+", default=[0],
                   help="episode seed groups")
    add_episodes(p, default=10, help="episodes per point")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=2,
                   help="LocalCluster worker processes")
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_dir(args.out, "--out")
    for name in OUTPUTS:
        check_output_file(args.out / name, "--out")
    for m in args.model:  # a bad model file fails here, not on a worker
        load_model(m)
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

"""``deltanet eval``: episodes with the reference as the policy; returns and multiplications."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from deltanet.pysim import load_model

from ..io import write_json_atomic
from ..options import (
    add_episodes,
    add_json,
    add_model,
    add_seed,
    check_output_file,
    float_in,
)
from ..rollout import run_episodes
from ..weight_memory import kbits, summary_line, weight_memory


def register(sub):
    p = sub.add_parser("eval", help="evaluate a model with the reference (float or fixed point)",
                       description="Run gymnasium episodes with the pysim reference as the "
                                   "policy; print returns, multiplication counts and the "
                                   "weight memory (dense float32 vs non-zero fixed-point "
                                   "weights, raw and in the 4-lane core's column words).")
    add_model(p)
    add_episodes(p, default=10, help="number of episodes")
    add_seed(p, help="episode i is reset with seed+i")
    p.add_argument("--mode", choices=["float", "fixed"], default="fixed",
                   help="float32 twin or bit-accurate fixed point (default)")
    p.add_argument("--dense", action="store_true", help="dense network instead of delta updates")
    p.add_argument("--epsilon", type=float_in(0, 1), default=0.0,
                   help="epsilon-greedy evaluation: with this probability a step takes a "
                        "seeded uniform random action (the Nature DQN protocol: 0.05)")
    add_json(p, help="write the results as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def print_summary(title: str, s: dict, console=None):
    console = console or Console(width=max(Console().width, 110))
    t = Table(title=title)
    mem = s.get("weight_memory")
    cols = ["layer", "dense/step", "significant/step", "events/step", "reduction"]
    if mem:
        cols += ["non-zero weights", "weight memory (core)"]
    for col in cols:
        t.add_column(col, justify="right")
    for row in s["per_layer"]:
        sig = row["significant_mults_per_step"]
        cells = [str(row["layer"]), f"{row['dense_mults_per_step']:,}", f"{sig:,.1f}",
                 f"{row['events_per_step']:.1f}",
                 f"{row['dense_mults_per_step'] / sig:,.1f}x" if sig else "inf"]
        if mem:
            m = mem["per_layer"][row["layer"]]
            cells += [f"{m['nonzero']:,}", kbits(m["hw_bits"])]
        t.add_row(*cells)
    cells = ["all", f"{s['dense_mults_per_step']:,.0f}", f"{s['significant_mults_per_step']:,.1f}",
             "", f"{s['reduction']:,.1f}x"]
    if mem:
        cells += [f"{mem['nonzero']:,}", kbits(mem["hw_bits"])]
    t.add_row(*cells, style="bold")
    console.print(t)
    console.print(f"return {s['mean_return']:.2f} +/- {s['std_return']:.2f} over "
                  f"{s['episodes']} episodes ({s['steps']} steps)")
    if mem:
        console.print(summary_line(mem))


def run(args) -> int:
    check_output_file(args.json, "--json")
    model = load_model(args.model)
    res = run_episodes(model, args.episodes, args.seed, mode=args.mode, delta=not args.dense,
                       progress=not args.no_progress, epsilon=args.epsilon)
    s = res.summary()
    s.update({"model": str(args.model), "env_id": model.meta["env_id"], "mode": args.mode,
              "delta": not args.dense, "seed": args.seed, "epsilon": args.epsilon,
              "weight_memory": weight_memory(model)})
    print_summary(f"{model.meta['env_id']} - {args.mode}{' dense' if args.dense else ' delta'}",
                  s)
    if args.json:
        write_json_atomic(args.json, s)
        print(f"wrote {args.json}")
    return 0

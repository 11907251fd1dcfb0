"""Reduction of significant multiplications per bundled task -> benchmarks/results/reduction.md.

    python scripts/bench_reduction.py [TASK ...] [--episodes 30]

For every task with ``deltanet/models/<task>_dense.npz`` and ``<task>.npz``, over the same
``episodes`` seeded episodes (seeds 0..N-1; calibration used 100000+ and 200000+):

* **float dense**          - the dense float model, dense updates;
* **pruned only**          - the final model's weights and masks, float, dense updates;
* **delta only**           - the *dense* model quantized and calibrated on its own (same rule as
                             ``deltanet calibrate``, cached in ``runs/bench_reduction/``), float,
                             delta updates;
* **pruned + delta float** - the final model, float, delta updates;
* **pruned + delta fixed** - the final model, bit-accurate fixed point, delta updates (what the
                             hardware runs).

Significant multiplications count products whose two operands are non-zero, so even the
"float dense" row is below the dense count (ReLU zeros). Reduction factors are relative to the
dense count ``sum(n_in * n_out)``. Targets: combined >= 20x at >= 95% of the float dense return
(``ret >= ref - 0.05 |ref|``), fixed point within 2% of float pruned + delta.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import load_model

from deltanet import MODELS_DIR
from deltanet.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from deltanet.rollout import run_episodes

TASKS = ["cartpole", "lunarlander", "mountaincar", "pendulum"]
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "bench_reduction"
ROWS = ["float dense", "pruned only", "delta only", "pruned + delta float",
        "pruned + delta fixed"]


def compress_kind(row: dict) -> str:
    """Which defaults of ``deltanet compress`` made a row of compress.json."""
    if "distilled" in (row.get("ladder") or ""):
        return "distilled"
    return "sequential" if "sequential" in row.get("search_rule", "") else "fixed"


def delta_only_model(name: str, dense):
    """The dense model quantized and calibrated on its own (cached in runs/bench_reduction/)."""
    from deltanet.pysim import save_model

    from deltanet.calibrate import calibrate
    from deltanet.quantize import quantize_model

    cache = CACHE / f"{name}_dense_calibrated.npz"
    if cache.exists():
        m = load_model(cache)
        if m.meta["provenance"].get("bench_source") == dense.meta["checksum"]:
            return m
    t0 = time.time()
    q, _ = quantize_model(dense)
    m, _ = calibrate(q, fraction=0.95, episodes=30, reference=dense, log=lambda *a: None)
    meta = dict(m.meta)
    meta["provenance"] = {**meta["provenance"], "bench_source": dense.meta["checksum"]}
    m = m.replace(meta=meta)
    save_model(m, cache)
    print(f"  {name:12s} calibrated the dense model for 'delta only' ({time.time() - t0:.0f} s)")
    return m


def bench_task(name: str, episodes: int) -> dict:
    dense = load_model(MODELS_DIR / f"{name}_dense.npz")
    final = load_model(MODELS_DIR / f"{name}.npz")
    n = len(final.config.layers)
    runs = {
        "float dense": (dense.replace(config=dense.config.with_thresholds([0] * n)), "float",
                        False),
        "pruned only": (final, "float", False),
        "delta only": (delta_only_model(name, dense), "float", True),
        "pruned + delta float": (final, "float", True),
        "pruned + delta fixed": (final, "fixed", True),
    }
    res = {}
    for row, (m, mode, delta) in runs.items():
        t0 = time.time()
        s = run_episodes(m, episodes, 0, mode=mode, delta=delta, progress=False).summary()
        res[row] = {k: s[k] for k in ("mean_return", "std_return", "dense_mults_per_step",
                                      "significant_mults_per_step", "reduction", "steps")}
        res[row]["per_layer_significant"] = [r["significant_mults_per_step"]
                                             for r in s["per_layer"]]
        print(f"  {name:12s} {row:22s} return {s['mean_return']:9.2f} +/- "
              f"{s['std_return']:7.2f}  {s['significant_mults_per_step']:10.1f} mults/step "
              f"{s['reduction']:7.1f}x  ({time.time() - t0:.0f} s)")
    ref = res["float dense"]["mean_return"]
    fx = res["pruned + delta fixed"]["mean_return"]
    fl = res["pruned + delta float"]["mean_return"]
    prov = final.meta["provenance"]
    return {
        "task": name, "env_id": final.meta["env_id"], "episodes": episodes,
        "algo": prov.get("algo"), "train_steps": dense.meta["provenance"].get("steps"),
        "net": [ly.n_out for ly in final.config.layers[:-1]],
        "sparsity": final.sparsity("fixed"),
        "thresholds": [ly.threshold for ly in final.config.layers],
        "formats": {"input": str(final.config.input_fmt),
                    "weights": [str(ly.weight_fmt) for ly in final.config.layers],
                    "activations": [str(ly.out_fmt) for ly in final.config.layers]},
        "rows": res,
        "dense_mults_per_step": res["float dense"]["dense_mults_per_step"],
        "factor_pruning": res["pruned only"]["reduction"],
        "factor_delta": res["delta only"]["reduction"],
        "factor_both": res["pruned + delta fixed"]["reduction"],
        "return_ratio": fx / ref if ref else float("nan"),
        "meets_return": fx >= ref - 0.05 * abs(ref),
        "meets_20x": res["pruned + delta fixed"]["reduction"] >= 20,
        "fixed_vs_float": (fx - fl) / abs(fl) if fl else 0.0,
        "meets_fixed_2pct": abs(fx - fl) <= 0.02 * abs(fl),
    }


#: arXiv 2405.07748 (the seed paper's authors, later): up to 400x network-size reduction from
#: pruning + quantization
PAPER_SIZE_REDUCTION = 400


def compress_section(path: Path) -> list:
    """The `deltanet compress` table from ``scripts/bench_compress.py``'s results."""
    if not path.exists():
        return ["## `deltanet compress` with default options", "",
                f"(no results yet: run `python scripts/bench_compress.py`, {path} is missing)",
                ""]
    data = json.loads(path.read_text())
    rows = data["tasks"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        "## `deltanet compress` with default options (the command a new user runs)",
        "",
        "Generated from `benchmarks/results/compress.json` (`scripts/bench_compress.py`): per "
        "task `deltanet train --env ENV --algo ALGO` (rl-zoo3's hyper-parameters, the best "
        "validated policy kept), then `deltanet compress --model dense.npz --out comp.npz` "
        "with every option at its default (budget 0.95, 4 lanes, 1000 trials). Compress: "
        "*distilled* = the current defaults (each level of the pruning ladder distilled from "
        "the dense policy on the states the pruned one visits, then RL-fine-tuned only if its "
        "return is not back within the budget; otherwise as *sequential*); "
        "*sequential* = the defaults before (a pruning ladder whose levels fine-tune until "
        "their return is back within the budget, up to the training steps of an off-policy "
        "agent and half of a PPO's; a trial's episodes doubled, up to 120, while it could "
        "become the best; the searched trim to lane balance; held-out episodes sized from "
        "the candidate's search spread, 100 to 800); *fixed* = the earlier defaults (the ladder "
        "split evenly over half the training steps, 30 search episodes, 100 held-out "
        f"episodes). Dense return: the float agent on {data['eval_episodes']} episodes (seeds "
        f"{data['eval_seed']}+) that no step of training, validation or compression uses, "
        "against the reference level. Reduction: significant multiplications per step of the "
        "accepted fixed-point delta model (held-out episodes) against the dense count. Weight "
        "memory: non-zero weights x bits + index overhead of the core's words, against the "
        f"dense float32 weights (arXiv 2405.07748 reports up to {PAPER_SIZE_REDUCTION}x "
        "network-size reduction from pruning + quantization).",
        "",
        "| task | bundled | agent | dense return (reference) | competent | compressed: held-out "
        "return vs dense | significant mults/step | reduction (target) | weight memory, raw "
        "(core words) | compress | train / compress time |",
        "|---|:-:|---|---:|:-:|---:|---:|---:|---:|:-:|---:|",
    ]
    for r in rows:
        a = r["accepted"]
        ref = "-" if r["reference"] is None else f"{r['reference']:g}"
        agent = f"{r['algo']} {r['train_steps']:,} steps, net {r['net']}, seed {r['seed']}"
        comp_min = (f"{(r['compress_wall_seconds'] or r['compress_seconds'] or 0) / 60:.1f}"
                    if r.get("one_run") else "- (resumed run)")
        times = f"{(r['train_seconds'] or 0) / 60:.1f} / {comp_min} min"
        if a is None:
            comp = "nothing accepted | - | - | -"
        else:
            wm = a["weight_memory"]
            comp = (f"{a['holdout_return']:.1f} vs {a['holdout_dense_return']:.1f} | "
                    f"{a['mults']:.1f} of {a['dense_mults']:,.0f} | "
                    f"**{a['reduction']:.1f}x** ({r['target_reduction']:g}x: "
                    f"{yes[r['meets']]}) | {wm['raw_bits']:,} bits {wm['raw_reduction']:.0f}x "
                    f"({wm['hw_bits']:,} bits {wm['hw_reduction']:.0f}x)")
        lines.append(f"| {r['task']} | {'yes' if r['bundled'] else 'no'} | {agent} | "
                     f"{r['dense_return']:.1f} +/- {r['dense_std']:.1f} ({ref}) | "
                     f"{yes[bool(r['competent'])]} | {comp} | "
                     f"{compress_kind(r)} | {times} |")
    lines.append("")
    return lines


def markdown(results: list, episodes: int, compress_json: Path) -> str:
    lines = [
        "# Reduction of significant multiplications",
        "",
        *compress_section(compress_json),
        "## The bundled models, configuration by configuration",
        "",
        f"Generated by `scripts/bench_reduction.py`: {episodes} seeded episodes per row (seeds "
        f"0..{episodes - 1}, apart from the calibration seeds). Significant multiplications = "
        "products with both operands non-zero (ReLU zeros count too, so even `float dense` is "
        "below the dense count). Reductions are relative to the dense count sum(n_in*n_out). "
        "`delta only` = the dense model quantized and calibrated on its own (same rule as "
        "`deltanet calibrate`), run in float. Paper: pruning 2-8x, delta 10-50x, combined 20-150x.",
        "",
    ]
    for r in results:
        lines += [
            f"### {r['task']} ({r['env_id']}, {r['algo']} {r['train_steps']:,} steps, net "
            f"{r['net']}, sparsity {r['sparsity']:.2f})",
            "",
            f"thresholds {[round(t, 5) for t in r['thresholds']]}; formats input "
            f"{r['formats']['input']}, weights {r['formats']['weights']}, activations "
            f"{r['formats']['activations']}",
            "",
            "| configuration | return (mean +/- std) | significant mults/step | reduction |",
            "|---|---:|---:|---:|",
        ]
        for row in ROWS:
            x = r["rows"][row]
            lines.append(f"| {row} | {x['mean_return']:.2f} +/- {x['std_return']:.2f} | "
                         f"{x['significant_mults_per_step']:,.1f} | {x['reduction']:.1f}x |")
        lines += [f"| dense count | | {r['dense_mults_per_step']:,.0f} | 1.0x |", ""]
    lines += [
        "### Summary",
        "",
        "| task | dense mults/step | pruning alone | delta alone | both (fixed) | return vs "
        "float dense | >= 20x | >= 95% return | fixed within 2% of float |",
        "|---|---:|---:|---:|---:|---:|:-:|:-:|:-:|",
    ]
    for r in results:
        yes = {True: "yes", False: "**no**"}
        lines.append(
            f"| {r['task']} | {r['dense_mults_per_step']:,.0f} | {r['factor_pruning']:.1f}x | "
            f"{r['factor_delta']:.1f}x | {r['factor_both']:.1f}x | {r['return_ratio']:.1%} | "
            f"{yes[r['meets_20x']]} | {yes[r['meets_return']]} | "
            f"{yes[r['meets_fixed_2pct']]} ({r['fixed_vs_float']:+.1%}) |")
    lines.append("")
    lines.append("For negative returns the return ratio reads inversely (e.g. 105% = 5% worse); "
                 "the pass/fail columns use `ret >= ref - 0.05|ref|` in both cases.")
    return "\n".join(lines) + "\n"


def plot(results: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["task"] for r in results]
    x = np.arange(len(names))
    w = 0.26
    for k, (key, label) in enumerate([("factor_pruning", "pruning alone"),
                                      ("factor_delta", "delta alone"),
                                      ("factor_both", "pruning + delta (fixed)")]):
        axes[0].bar(x + (k - 1) * w, [r[key] for r in results], w, label=label)
    axes[0].axhline(20, color="k", ls=":", lw=1)
    axes[0].set_yscale("log")
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("reduction of significant mults (x)")
    axes[0].legend(fontsize=8)
    for k, row in enumerate(ROWS):
        vals = []
        for r in results:
            ref = r["rows"]["float dense"]["mean_return"]
            v = r["rows"][row]["mean_return"]
            vals.append(1 + (v - ref) / abs(ref) if ref else 0)
        axes[1].bar(x + (k - 2) * 0.16, vals, 0.16, label=row)
    axes[1].axhline(0.95, color="k", ls=":", lw=1)
    axes[1].set_xticks(x, names)
    axes[1].set_ylabel("return relative to float dense (1 + (R - R0)/|R0|)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tasks", nargs="*", default=None)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.episodes < 30:
        print("note: fewer than 30 episodes per row", file=sys.stderr)
    names = args.tasks or [t for t in TASKS if (MODELS_DIR / f"{t}.npz").exists()
                           and (MODELS_DIR / f"{t}_dense.npz").exists()]
    results = [bench_task(n, args.episodes) for n in names]
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "reduction.md",
                      markdown(results, args.episodes, args.out / "compress.json"))
    write_json_atomic(args.out / "reduction.json", results)
    plot(results, args.out / "reduction.png")
    print(f"wrote {args.out / 'reduction.md'}, reduction.json, reduction.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

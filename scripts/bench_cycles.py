#!/usr/bin/env python
"""Benchmark: cycle efficiency of the hardware for every bundled model at L = 1, 2, 4, 8, 16.

Cycles per step come from pysim's cycle model on closed-loop reference episodes; the hardware
equals that model cycle for cycle (tests/test_hw_* check it in the Amaranth simulator, and the
Verilator closed-loop benches check ``cycles`` at every step), and ``--check-lanes`` re-runs a
closed-loop Verilator episode for those lane counts and asserts that equality again here.

Per model and L: mean cycles/step, the ideal ceil(significant / L), MAC utilisation (useful MACs
/ (L x issue cycles)), balance (mean / busiest lane work), a dense schedule on the same lanes
(no pruning, threshold 0: every column, ceil(n_out / L) cycles each) and the speed-up against
it next to the significant-multiplication reduction. Writes benchmarks/results/cycles.md + PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet import MODELS_DIR
from deltanet.rollout import run_episodes
from pysim import CycleModel, load_model

LANES = (1, 2, 4, 8, 16)


def measure(model, lanes_list, episodes, seed):
    events = []

    def on_step(net, active):
        for b in np.flatnonzero(active):
            events.append([ev[b:b + 1].copy() for ev in net.last_events])

    res = run_episodes(model, episodes, seed, progress=False, on_step=on_step)
    s = res.summary()
    rows = []
    for L in lanes_list:
        cm = CycleModel(model, L)
        cyc = np.array([cm.step_cycles(e)[0] for e in events], dtype=np.float64)
        busy = np.array([cm.busy_cycles(e)[0] for e in events], dtype=np.float64)
        work = np.sum([cm.lane_work(e)[0] for e in events], axis=0).astype(np.float64)
        nnz = [model.column_nnz(i) for i in range(len(model.params))]
        sig = np.array([[int(ev[0].astype(np.int64) @ nnz[i]) for i, ev in enumerate(e)]
                        for e in events])
        ideal = np.ceil(sig / L).sum(axis=1)
        dense = cm.dense_cycles()
        rows.append({
            "lanes": L,
            "cycles_mean": float(cyc.mean()),
            "ideal_mean": float(ideal.mean()),
            "cycles_over_ideal": float(cyc.mean() / ideal.mean()) if ideal.mean() else None,
            "utilisation": float(sig.sum() / (L * busy.sum())) if busy.sum() else None,
            "balance": float(work.mean() / work.max()) if work.max() else None,
            "dense_cycles": int(dense),
            "speedup": float(dense / cyc.mean()),
            "reduction": float(s["reduction"]),
            "speedup_over_reduction": float(dense / cyc.mean() / s["reduction"]),
        })
    return s, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--check-lanes", type=int, nargs="*", default=[],
                    help="also run a Verilator closed-loop episode at these lane counts and "
                         "check the hardware's cycles against the model")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    models = [p for p in sorted(MODELS_DIR.glob("*.npz")) if not p.stem.endswith("_dense")]
    table = {}
    for p in models:
        m = load_model(p)
        s, rows = measure(m, LANES, args.episodes, args.seed)
        table[p.stem] = {"env_id": m.meta["env_id"], "return": s["mean_return"],
                         "sparsity": m.sparsity(), "rows": rows}
        for r in rows:
            print(f"{p.stem:>12} L={r['lanes']:<2} cycles {r['cycles_mean']:8.1f} ideal "
                  f"{r['ideal_mean']:8.1f} util {r['utilisation']:.2f} bal {r['balance']:.2f} "
                  f"speed-up {r['speedup']:6.1f}x (reduction {r['reduction']:.1f}x)")
        for L in args.check_lanes:
            from deltanet.closed_loop import run

            res = run(p, lanes=L, sim="verilator", episodes=1, seed=args.seed)
            assert res["mismatches"] == 0, res["first_mismatch"]
            print(f"{p.stem:>12} L={L}: Verilator closed loop, {res['steps']} steps, cycles "
                  f"equal the model at every step")
            table[p.stem].setdefault("verilator_checked_lanes", []).append(L)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cycles.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = ["# Cycle efficiency of the delta hardware", "",
             f"Bundled models, {args.episodes} closed-loop reference episodes each (seeds "
             f"{args.seed}..), cycles from pysim's cycle model, which the hardware matches "
             "exactly (`scripts/bench_cycles.py`). Dense schedule: every column of the unpruned "
             "network every step on the same lanes. Targets: utilisation >= 85% at L = 4; "
             "speed-up >= 0.8 x the significant-multiplication reduction.", "",
             "| model | L | cycles/step | ideal ceil(sig/L) | cycles/ideal | MAC utilisation | "
             "balance | dense schedule | speed-up | mult. reduction | speed-up/reduction |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, t in table.items():
        for r in t["rows"]:
            lines.append(f"| {name} | {r['lanes']} | {r['cycles_mean']:.1f} | "
                         f"{r['ideal_mean']:.1f} | {r['cycles_over_ideal']:.2f} | "
                         f"{r['utilisation']:.1%} | {r['balance']:.3f} | {r['dense_cycles']} | "
                         f"{r['speedup']:.1f}x | {r['reduction']:.1f}x | "
                         f"{r['speedup_over_reduction']:.2f} |")
    (args.out / "cycles.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for name, t in table.items():
            L = [r["lanes"] for r in t["rows"]]
            ax[0].plot(L, [r["cycles_mean"] for r in t["rows"]], "o-", label=name)
            ax[0].plot(L, [r["ideal_mean"] for r in t["rows"]], ":", color="gray")
            ax[1].plot(L, [r["utilisation"] for r in t["rows"]], "o-", label=name)
        ax[0].set(xscale="log", yscale="log", xlabel="lanes", ylabel="cycles/step",
                  title="cycles (dotted: ideal)")
        ax[1].set(xscale="log", xlabel="lanes", ylabel="MAC utilisation", ylim=(0, 1.05))
        ax[1].axhline(0.85, color="gray", ls="--")
        ax[0].legend()
        fig.tight_layout()
        fig.savefig(args.out / "cycles.png", dpi=110)
    except ImportError:
        pass
    print(f"wrote {args.out / 'cycles.md'}")


if __name__ == "__main__":
    main()

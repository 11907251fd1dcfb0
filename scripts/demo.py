#!/usr/bin/env python
"""The main job (`make demo`): the bundled CartPole model from reference to verified hardware.

1. reference evaluation, float32 and bit-accurate fixed point, dense and delta;
2. Verilog generation (Amaranth);
3. closed-loop cycle-accurate episodes in Verilator in which the hardware chooses the actions,
   checked bit for bit against pysim at every step;
4. a summary table and build/demo/report.md with a plot of significant multiplications and
   cycles per step over an episode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from deltanet.pysim import load_model
from deltanet.sim.runner import TOPLEVEL
from rich.console import Console
from rich.table import Table

from deltanet import bundled_model
from deltanet.closed_loop import performance, print_performance, run
from deltanet.io import write_text_atomic
from deltanet.rollout import run_episodes
from deltanet.synth import SynthError, synth_model

#: the part whose reached clock the demo's latency figures use
DEMO_TARGET = "ecp5-25k"


def plot(per_step, path: Path, lanes: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep0 = [s for s in per_step if s["episode"] == 0]
    t = np.arange(len(ep0))
    macs = [sum(s["macs"]) for s in ep0]
    cyc = [s["cycles"] for s in ep0]
    fig, ax = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    ax[0].plot(t, macs, lw=0.8)
    ax[0].set_ylabel("significant mults")
    ax[0].set_yscale("symlog")
    ax[0].set_title("CartPole-v1 closed loop on the generated hardware (episode 0)")
    ax[1].plot(t, cyc, lw=0.8, color="C1")
    ax[1].set_ylabel(f"cycles ({lanes} lanes)")
    ax[1].set_xlabel("env step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: bundled cartpole")
    ap.add_argument("--episodes", type=int, default=3, help="closed-loop hardware episodes")
    ap.add_argument("--eval-episodes", type=int, default=20, help="reference episodes")
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="clock for the latency figures (default: the fmax the design reaches "
                         f"on {DEMO_TARGET}, from `deltanet synth`, cached after the first run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "demo")
    args = ap.parse_args(argv)
    con = Console()
    model_path = args.model or bundled_model("cartpole")
    model = load_model(model_path)
    con.rule(f"deltanet demo: {model.meta['env_id']} ({model_path.name})")

    con.print("[bold]1. reference evaluation[/bold] (pysim)")
    evals = {}
    for name, mode, delta in (("float dense", "float", False), ("float delta", "float", True),
                              ("fixed dense", "fixed", False), ("fixed delta", "fixed", True)):
        evals[name] = run_episodes(model, args.eval_episodes, args.seed, mode=mode,
                                   delta=delta).summary()
    t = Table(title=f"reference, {args.eval_episodes} episodes, seed {args.seed}")
    for c in ("network", "return", "significant mults/step", "dense mults/step", "reduction"):
        t.add_column(c, justify="right")
    for name, s in evals.items():
        t.add_row(name, f"{s['mean_return']:.1f} +/- {s['std_return']:.1f}",
                  f"{s['significant_mults_per_step']:.1f}", f"{s['dense_mults_per_step']:.0f}",
                  f"{s['reduction']:.1f}x")
    con.print(t)

    con.print(f"[bold]2-3. Verilog generation and closed loop in Verilator[/bold] "
              f"({args.episodes} episodes, {args.lanes} lanes)")
    t0 = time.perf_counter()
    res = run(model_path, lanes=args.lanes, sim="verilator", episodes=args.episodes,
              seed=args.seed)
    wall = time.perf_counter() - t0
    clock, clock_src = args.clock_mhz, "given"
    if clock is None:
        con.print(f"[bold]synthesis[/bold] for the latency figures: the event-driven core on "
                  f"{DEMO_TARGET} (yowasp yosys + nextpnr; minutes the first time, then cached)")
        try:
            syn = synth_model(model_path, args.lanes, DEMO_TARGET)
            clock = float(syn["fmax_mhz"])
            clock_src = (f"fmax on {DEMO_TARGET}: {syn.get('luts')} LUT, {syn.get('bram')} "
                         f"BRAM, {syn.get('dsp')} DSP")
        except SynthError as e:
            con.print(f"synthesis failed ({e}); latency at an assumed 100 MHz")
            clock, clock_src = 100.0, "assumed: synthesis failed"
    args.clock_mhz = clock
    perf = performance(res, model, args.lanes, args.clock_mhz)
    print_performance(perf, res, con)
    ok = res["mismatches"] == 0 and res["returns_equal"]
    con.print(f"[bold]4. verification: {'PASS' if ok else 'FAIL'}[/bold] - {res['steps']} "
              f"steps, {res['mismatches']} mismatching steps, hardware return "
              f"{res['hw_return']:.1f} = reference {res['ref_return']:.1f}: "
              f"{res['returns_equal']}")

    png = args.out / "episode.png"
    plot(res["per_step"], png, args.lanes)
    design = Path(res["design_dir"])
    fd = evals["fixed delta"]
    lines = [
        f"# deltanet demo: {model.meta['env_id']}", "",
        (f"Model `{model_path.name}` (checksum `{model.meta['checksum'][:19]}...`), "
        f"{model.sparsity():.0%} of weights pruned, thresholds "
        f"{[ly.threshold for ly in model.config.layers]}."), "",
        "## Reference (pysim)", "",
        "| network | return (mean +/- std) | significant mults/step | reduction |",
        "|---|---|---|---|",
    ]
    for name, s in evals.items():
        lines.append(f"| {name} | {s['mean_return']:.1f} +/- {s['std_return']:.1f} | "
                     f"{s['significant_mults_per_step']:.1f} | {s['reduction']:.1f}x |")
    lines += [
        "", f"## Hardware closed loop (Verilator, {args.lanes} lanes)", "",
        f"Generated Verilog: `{design / (TOPLEVEL + '.v')}` (event-driven core).", "",
        "| figure | value |", "|---|---|",
        f"| env steps checked | {res['steps']} |",
        f"| mismatching steps | {res['mismatches']} |",
        f"| return hardware / reference | {res['hw_return']:.1f} / {res['ref_return']:.1f} |",
        (f"| cycles/step mean / p99 / max | {perf['cycles_mean']:.1f} / {perf['cycles_p99']:.0f}"
        f" / {perf['cycles_max']:.0f} |"),
        (f"| latency at {args.clock_mhz:.1f} MHz ({clock_src}; mean / max) | "
         f"{perf['latency_us_mean']:.3f} us / {perf['latency_us_max']:.3f} us |"),
        f"| MAC-lane utilisation | {perf['mac_utilisation']:.1%} |"
        if perf["mac_utilisation"] is not None else "| MAC-lane utilisation | - |",
        f"| lane balance | {perf['balance']:.3f} |" if perf["balance"] else "| balance | - |",
        f"| dense schedule cycles/step | {perf['dense_schedule_cycles']} |",
        f"| speed-up vs dense schedule | {perf['speedup_vs_dense']:.1f}x |",
        f"| significant-mult reduction (reference) | {fd['reduction']:.1f}x |",
        f"| simulation speed | {res['env_steps_per_s']:.0f} env steps/s |",
        f"| demo hardware stage wall time | {wall:.1f} s |",
        "", "![significant multiplications and cycles per step](episode.png)", "",
    ]
    write_text_atomic(args.out / "report.md", "\n".join(lines))
    con.print(f"wrote {args.out / 'report.md'} and {png}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

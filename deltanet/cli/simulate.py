"""``deltanet simulate``: cycle-accurate closed-loop simulation with a performance report."""

from __future__ import annotations

from deltanet.pysim import load_model
from deltanet.sim.check import CLOCK_NS
from deltanet.sim.vcd import filter_vcd, timescale_s

from ..closed_loop import performance, print_performance
from ..closed_loop import run as run_closed_loop
from ..envs import check_model_env
from ..io import write_json_atomic
from ..options import (
    MAX_CLOCK_MHZ,
    MAX_STEPS,
    CliError,
    RunFailed,
    add_episodes,
    add_json,
    add_lanes,
    add_model,
    add_obs_words,
    add_seed,
    check_build_dir,
    check_output_file,
    check_simulator,
    float_in,
    int_in,
    path_arg,
)

ENGINES = ("verilator", "icarus", "amaranth")


def register(sub):
    p = sub.add_parser(
        "simulate", help="cycle-accurate closed-loop simulation and a performance report",
        description="Run closed-loop episodes on the hardware (generated Verilog in Verilator "
                    "or Icarus, or the Amaranth simulator) and report cycles per step, latency "
                    "at the clock, MAC-lane utilisation, balance and the speed-up over a dense "
                    "schedule on the same lanes. Every step is also checked against pysim.")
    add_model(p)
    add_episodes(p, default=1, help="closed-loop episodes")
    add_seed(p, help="episode i is reset with seed+i")
    p.add_argument("--engine", "--sim", dest="engine", choices=ENGINES, default="verilator",
                   help="simulator (default verilator; --sim, as in verify and run, is the "
                   "same option)")
    add_lanes(p)
    p.add_argument("--clock-mhz", type=float_in(0, MAX_CLOCK_MHZ, lo_open=True), default=100.0,
                   help="clock for the latency figures")
    p.add_argument("--max-steps", type=int_in(0, MAX_STEPS), default=0,
                   help="cut episodes after this many steps (0: never)")
    add_obs_words(p)
    p.add_argument("--obs-writes", choices=("changed", "all"),
                   help="write only the observation words that changed since the last step, "
                        "or all of them (default: changed)")
    p.add_argument("--waves", type=path_arg, help="write a waveform (VCD) of the run here")
    p.add_argument("--waves-scope", metavar="PREFIX",
                   help="keep only the signals whose hierarchical name starts with PREFIX "
                        "(dots between scopes, e.g. deltanet_core.lane0 or bench.dut.lane0; "
                        "default: every signal)")
    p.add_argument("--waves-from", type=int_in(0, MAX_STEPS), metavar="CYCLE",
                   help="keep the waveform from this clock cycle of the run (default: 0)")
    p.add_argument("--waves-to", type=int_in(0, MAX_STEPS), metavar="CYCLE",
                   help="keep the waveform up to this clock cycle (default: the end)")
    add_json(p, help="write the report as JSON here")
    p.set_defaults(func=run)


def cut_waves(path, args) -> None:
    """The --waves-scope / --waves-from / --waves-to cut of the run's VCD, in place."""
    if args.waves_scope is None and args.waves_from is None and args.waves_to is None:
        return
    with open(path) as f:
        head = "".join(line for _, line in zip(range(200), f))
    per_cycle = CLOCK_NS * 1e-9 / timescale_s(head)  # VCD time units per clock cycle
    r = filter_vcd(path, path, scope=args.waves_scope,
                   start=None if args.waves_from is None else round(args.waves_from * per_cycle),
                   stop=None if args.waves_to is None else round(args.waves_to * per_cycle))
    end = "end" if args.waves_to is None else args.waves_to
    print(f"waves cut to {r['vars']} of {r['of']} signals, cycles {args.waves_from or 0}..{end}")


def run(args) -> int:
    if args.waves is None and (args.waves_scope or args.waves_from is not None
                               or args.waves_to is not None):
        raise CliError("--waves-scope/--waves-from/--waves-to need --waves FILE")
    if args.waves_from is not None and args.waves_to is not None \
            and args.waves_to < args.waves_from:
        raise CliError(f"--waves-to {args.waves_to} is before --waves-from {args.waves_from}")
    check_output_file(args.waves, "--waves")
    check_output_file(args.json, "--json")
    if args.engine != "amaranth":
        check_build_dir("simulate")
        check_simulator(args.engine, "--engine")
    model = load_model(args.model)
    check_model_env(model)  # (the verilator and icarus runs check it too; amaranth later)
    from deltanet.sim.runner import SimulationError

    try:
        if args.engine == "amaranth":
            from ..amaranth_engine import run_amaranth

            res = run_amaranth(args.model, lanes=args.lanes, episodes=args.episodes,
                               seed=args.seed, max_steps=args.max_steps, waves=args.waves,
                               obs_words=args.obs_words, obs_writes=args.obs_writes)
        else:
            res = run_closed_loop(args.model, lanes=args.lanes, sim=args.engine,
                                  episodes=args.episodes, seed=args.seed,
                                  max_steps=args.max_steps, waves=args.waves,
                                  obs_words=args.obs_words, obs_writes=args.obs_writes)
    except SimulationError as e:
        raise RunFailed(str(e)) from None
    perf = performance(res, model, args.lanes, args.clock_mhz)
    print_performance(perf, res)
    if res.get("waves"):
        cut_waves(res["waves"], args)
        print(f"waves: {res['waves']} (open with gtkwave or surfer)")
    if args.json:
        write_json_atomic(args.json, {"performance": perf,
                                      **{k: v for k, v in res.items() if k != "per_step"}})
        print(f"wrote {args.json}")
    return 0 if res["mismatches"] == 0 else 1

"""``deltanet simulate``: cycle-accurate closed-loop simulation with a performance report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pysim import load_model
from pysim.coreplan import MAX_LANES

from .closed_loop import add_obs_words_argument, performance, run
from .envs import check_model_env
from .io import write_json_atomic
from .options import (
    MAX_CLOCK_MHZ,
    MAX_EPISODES,
    MAX_STEPS,
    SEED_MAX,
    RunFailed,
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
    p.add_argument("--model", required=True, type=path_arg, help="model artifact (.npz)")
    p.add_argument("--episodes", type=int_in(1, MAX_EPISODES), default=1,
                   help="closed-loop episodes")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                   help="episode i is reset with seed+i")
    p.add_argument("--engine", choices=ENGINES, default="verilator",
                   help="simulator (default verilator)")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=4, help="MAC lanes")
    p.add_argument("--clock-mhz", type=float_in(0, MAX_CLOCK_MHZ, lo_open=True), default=100.0,
                   help="clock for the latency figures")
    p.add_argument("--max-steps", type=int_in(0, MAX_STEPS), default=0,
                   help="cut episodes after this many steps (0: never)")
    add_obs_words_argument(p)
    p.add_argument("--obs-writes", choices=("changed", "all"),
                   help="write only the observation words that changed since the last step, "
                        "or all of them (default: changed)")
    p.add_argument("--waves", type=path_arg, help="write a waveform (VCD) of the run here")
    p.add_argument("--json", type=path_arg, help="write the report as JSON here")
    p.set_defaults(func=main)


def print_report(perf: dict, res: dict, console=None):
    con = console or Console()
    t = Table(title=f"closed loop on {res['simulator']}, event-driven core, "
                    f"{perf['lanes']} lanes, {perf['clock_mhz']:g} MHz")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("env steps", f"{perf['steps']}"),
        ("return (hardware / reference)", f"{res['hw_return']:.2f} / "
         + ("-" if res["ref_return"] is None else f"{res['ref_return']:.2f}")),
        ("mismatching steps", f"{res['mismatches']}"),
        ("cycles/step mean, p50, p99, max",
         (f"{perf['cycles_mean']:.1f}, {perf['cycles_p50']:.0f}, {perf['cycles_p99']:.0f}, "
         f"{perf['cycles_max']:.0f}")),
        ("latency mean / max", (f"{perf['latency_us_mean']:.3f} us / "
                               f"{perf['latency_us_max']:.3f} us")),
        ("cycles/step with the observation writes", "-" if perf["latency_cycles_mean"] is None
         else f"{perf['latency_cycles_mean']:.1f}"),
        ("useful MACs/step (dense mults)", (f"{perf['useful_macs_per_step']:.1f} "
                                           f"({perf['dense_mults_per_step']})")),
        ("MAC-lane utilisation", f"{perf['mac_utilisation']:.1%}"
         if perf["mac_utilisation"] is not None else "-"),
        ("lane balance (mean/worst)", f"{perf['balance']:.3f}" if perf["balance"] else "-"),
        ("dense schedule cycles/step", f"{perf['dense_schedule_cycles']}"),
        ("speed-up vs dense schedule", f"{perf['speedup_vs_dense']:.1f}x"),
        ("simulation speed", f"{res['env_steps_per_s']:.1f} env steps/s"
         + (f", {res['sim_cycles_per_s']:,.0f} cycles/s"
            if res.get("sim_cycles_per_s") else "")),
    ]
    for a, b in rows:
        t.add_row(a, b)
    con.print(t)


def main(args) -> int:
    check_output_file(args.waves, "--waves")
    check_output_file(args.json, "--json")
    if args.engine != "amaranth":
        check_build_dir("simulate")
        check_simulator(args.engine, "--engine")
    model = load_model(args.model)
    check_model_env(model)  # (the verilator and icarus runs check it too; amaranth later)
    from sim.runner import SimulationError

    try:
        if args.engine == "amaranth":
            from .amaranth_engine import run_amaranth

            res = run_amaranth(args.model, lanes=args.lanes, episodes=args.episodes,
                               seed=args.seed, max_steps=args.max_steps, waves=args.waves,
                               obs_words=args.obs_words, obs_writes=args.obs_writes)
        else:
            res = run(args.model, lanes=args.lanes, sim=args.engine, episodes=args.episodes,
                      seed=args.seed, max_steps=args.max_steps, waves=args.waves,
                      obs_words=args.obs_words, obs_writes=args.obs_writes)
    except SimulationError as e:
        raise RunFailed(str(e)) from None
    perf = performance(res, model, args.lanes, args.clock_mhz)
    print_report(perf, res)
    if res.get("waves"):
        print(f"waves: {res['waves']} (open with gtkwave or surfer)")
    if args.json:
        write_json_atomic(args.json, {"performance": perf,
                                      **{k: v for k, v in res.items() if k != "per_step"}})
        print(f"wrote {args.json}")
    return 0 if res["mismatches"] == 0 else 1

"""``deltanet verify``: closed-loop episodes on the generated Verilog, checked bit for bit."""

from __future__ import annotations

from rich.console import Console

from deltanet.sim.check import describe

from ..closed_loop import MUTATIONS
from ..closed_loop import run as run_closed_loop
from ..io import write_json_atomic
from ..options import (
    MAX_STEPS,
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
    int_in,
)


def register(sub):
    p = sub.add_parser(
        "verify", help="check the generated hardware against the reference, bit for bit",
        description="Generate Verilog from the model, run closed-loop gymnasium episodes in "
                    "which the simulated hardware chooses the actions, and compare outputs, "
                    "action, per-layer events and MACs and cycles with pysim at every step. "
                    "The run stops at the first mismatching step. Exit code 0 only with zero "
                    "mismatches.")
    add_model(p)
    add_episodes(p, default=1, help="closed-loop episodes")
    add_seed(p, help="episode i is reset with seed+i")
    p.add_argument("--sim", "--engine", dest="sim", choices=["verilator", "icarus"],
                   default="verilator", help="simulator (default verilator; --engine, as in "
                   "simulate, is the same option)")
    add_lanes(p)
    p.add_argument("--max-steps", type=int_in(0, MAX_STEPS), default=0,
                   help="cut episodes after this many steps (0: never)")
    add_obs_words(p)
    p.add_argument("--obs-writes", choices=("changed", "all"),
                   help="write only the observation words that changed since the last step, "
                        "or all of them (default: changed)")
    add_json(p, help="write the results as JSON here")
    p.add_argument("--mutate", choices=MUTATIONS,
                   help="self-check: build the hardware from a deliberately corrupted model; "
                        "verify must then fail and report the first mismatch")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.json, "--json")
    check_build_dir("verify")
    check_simulator(args.sim, "--sim")
    from deltanet.sim.runner import SimulationError

    try:
        res = run_closed_loop(args.model, lanes=args.lanes, sim=args.sim,
                              episodes=args.episodes, seed=args.seed,
                              max_steps=args.max_steps, mutation=args.mutate,
                              obs_words=args.obs_words, obs_writes=args.obs_writes)
    except SimulationError as e:
        raise RunFailed(str(e)) from None
    summary = {k: res[k] for k in ("steps", "mismatches", "mismatched_values", "hw_return",
                                   "ref_return", "returns_equal", "first_mismatch", "episodes",
                                   "simulator", "lanes", "seed", "mutation", "model",
                                   "env_steps_per_s")}
    for k in ("cycles_per_step", "latency_per_step", "sim_cycles", "sim_cycles_per_s",
              "step_cycles_per_s", "obs_words", "obs_writes", "obs_writes_per_step", "wall_s",
              "wall_total_s", "time_s", "build_s", "build_cached", "run_s",
              "stopped_at_first_mismatch", "first_mismatch_text", "log"):
        if k in res:
            summary[k] = res[k]
    con = Console()
    ok = res["mismatches"] == 0 and res["returns_equal"]
    ref_ret = "-" if res["ref_return"] is None else f"{res['ref_return']:.2f}"
    speed = f"{res['env_steps_per_s']:.1f} env steps/s" if res["env_steps_per_s"] else ""
    if res.get("sim_cycles_per_s"):
        speed += f", {res['sim_cycles_per_s']:,.0f} cycles/s"
    con.print(f"[bold]{'PASS' if ok else 'FAIL'}[/bold]: {res['steps']} steps checked on "
              f"{args.sim} (event-driven core), {res['mismatches']} mismatching steps; "
              f"return hw {res['hw_return']:.2f} / reference {ref_ret} ({speed})")
    if res.get("cycles_per_step") and res["cycles_per_step"]["mean"] is not None:
        c = res["cycles_per_step"]
        con.print(f"cycles/step: first {c['first']}, mean {c['mean']:.0f}, min {c['min']}, "
                  f"max {c['max']}")
    if res["first_mismatch"]:
        con.print(f"first mismatch: {describe(res['first_mismatch'])}"
                  + (" - stopped there" if res.get("stopped_at_first_mismatch") else ""))
    if args.json:
        write_json_atomic(args.json, summary)
        con.print(f"wrote {args.json}")
    return 0 if ok else 1

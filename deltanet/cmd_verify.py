"""``deltanet verify``: closed-loop episodes on the generated Verilog, checked bit for bit."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .closed_loop import MUTATIONS, run
from .io import write_json_atomic


def register(sub):
    p = sub.add_parser(
        "verify", help="check the generated hardware against the reference, bit for bit",
        description="Generate Verilog from the model, run closed-loop gymnasium episodes in "
                    "which the simulated hardware chooses the actions, and compare outputs, "
                    "action, per-layer events and MACs and cycles with pysim at every step. "
                    "Exit code 0 only with zero mismatches.")
    p.add_argument("--model", required=True, help="model artifact (.npz)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed+i")
    p.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--lanes", type=int, default=4, help="MAC lanes (default 4)")
    p.add_argument("--max-steps", type=int, default=0, help="cut episodes after this many steps")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--mutate", choices=MUTATIONS,
                   help="self-check: build the hardware from a deliberately corrupted model; "
                        "verify must then fail and report the first mismatch")
    p.set_defaults(func=main)


def main(args) -> int:
    res = run(args.model, lanes=args.lanes, sim=args.sim, episodes=args.episodes,
              seed=args.seed, max_steps=args.max_steps, mutation=args.mutate)
    summary = {k: res[k] for k in ("steps", "mismatches", "mismatched_values", "hw_return",
                                   "ref_return", "returns_equal", "first_mismatch", "episodes",
                                   "simulator", "lanes", "seed", "mutation", "model",
                                   "env_steps_per_s")}
    con = Console()
    ok = res["mismatches"] == 0 and res["returns_equal"]
    con.print(f"[bold]{'PASS' if ok else 'FAIL'}[/bold]: {res['steps']} steps on {args.sim}, "
              f"{res['mismatches']} mismatching steps; return hw {res['hw_return']:.2f} / "
              f"reference {res['ref_return']:.2f} ({res['env_steps_per_s']:.0f} env steps/s)")
    if res["first_mismatch"]:
        fm = res["first_mismatch"]
        con.print(f"first mismatch: episode {fm['episode']} step {fm['step']} layer "
                  f"{fm['layer']} {fm['field']}[{fm['index']}]: hardware {fm['hw']}, "
                  f"reference {fm['ref']}")
    if args.json:
        write_json_atomic(args.json, summary)
        con.print(f"wrote {args.json}")
    return 0 if ok else 1

"""``deltanet generate``: Verilog + design JSON + report for a model (see
:mod:`hw.generate_core`)."""

from __future__ import annotations

from deltanet.pysim import load_model
from deltanet.pysim.coreplan import CorePlan

from ..closed_loop import check_obs_words
from ..design import record_episode, write_design_dir
from ..options import (
    add_lanes,
    add_model,
    add_obs_words,
    add_seed,
    check_output_dir,
    int_in,
    path_arg,
)

__all__ = ["register", "run"]

#: most env steps recorded for the report
MAX_RECORD_STEPS = 1_000_000


def register(sub):
    p = sub.add_parser("generate", help="generate the Verilog, design JSON and report",
                       description="Build the hardware for a model on L MAC lanes and write "
                                   "deltanet_core.v, deltanet_core.json and report.md into "
                                   "OUT, all together or none (they "
                                   "are written beside OUT first). The report's cycle figures "
                                   "come from a recorded episode of the model's env (the "
                                   "reference as the policy) unless --no-episode.")
    add_model(p)
    add_lanes(p)
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    add_seed(p, help="seed of the recorded episode")
    p.add_argument("--steps", type=int_in(1, MAX_RECORD_STEPS), default=200,
                   help="record at most this many env steps for the report")
    p.add_argument("--no-episode", action="store_true",
                   help="use a deterministic synthetic observation sequence instead of the env")
    add_obs_words(p)
    p.add_argument("--memory-files", action="store_true",
                   help="memory contents in $readmemh files beside the Verilog")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_dir(args.out, "--out", staged=True)
    model = load_model(args.model)
    obs_words = check_obs_words(model, args.obs_words)
    CorePlan.build(model, args.lanes, obs_words)  # validates --lanes with a clear message
    obs = None
    if not args.no_episode and model.meta.get("env_id"):
        obs = record_episode(model, args.seed, args.steps)
    paths = write_design_dir(model, args.lanes, args.out, obs_words=obs_words,
                             memory_files=args.memory_files, observations=obs)
    for kind, path in paths.items():
        if kind == "memory_files":
            print(f"wrote {len(path)} memory files ($readmemh)")
        else:
            print(f"wrote {kind}: {path}")
    return 0

"""``deltanet generate``: Verilog + design JSON + report for a model (see
:mod:`hw.generate_core`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pysim import DeltaNetwork, load_model
from pysim.atomic import atomic_dir
from pysim.coreplan import MAX_LANES, CorePlan

from .closed_loop import add_obs_words_argument, check_obs_words
from .options import SEED_MAX, check_output_dir, int_in, path_arg

__all__ = ["record_episode", "register", "run", "write_design"]

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
    p.add_argument("--model", required=True, type=path_arg, help="model artifact (.npz)")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=4, help="MAC lanes")
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                   help="seed of the recorded episode")
    p.add_argument("--steps", type=int_in(1, MAX_RECORD_STEPS), default=200,
                   help="record at most this many env steps for the report")
    p.add_argument("--no-episode", action="store_true",
                   help="use a deterministic synthetic observation sequence instead of the env")
    add_obs_words_argument(p)
    p.add_argument("--memory-files", action="store_true",
                   help="memory contents in $readmemh files beside the Verilog")
    p.set_defaults(func=run)


def record_episode(model, seed: int, max_steps: int) -> np.ndarray:
    """Float observations of one episode with the pysim reference choosing the actions."""
    from .envs import check_model_fits_env, make_env

    env = make_env(model.meta["env_id"], seed)()
    try:
        check_model_fits_env(model, env)
        net = DeltaNetwork(model)
        obs, _ = env.reset(seed=seed)
        out = []
        for _ in range(max_steps):
            o = np.asarray(obs, dtype=np.float64).ravel()
            out.append(o)
            action = net.act(o[None])[0]
            obs, _, term, trunc, _ = env.step(action)
            if term or trunc:
                break
        return np.stack(out)
    finally:
        env.close()


def write_design(model, lanes: int, out_dir, *, obs_words: int,
                 memory_files: bool = False, observations=None) -> dict:
    """Run the generator into ``out_dir``; its ``{kind: path(s)}``."""
    from hw.generate_core import generate_core

    return generate_core(model, lanes, out_dir, obs_words=obs_words,
                         memory_files=memory_files, observations=observations)


def _moved(paths: dict, tmp: Path, out: Path) -> dict:
    """The generator's paths under the temporary folder -> the same files under ``out``."""
    def move(p):
        return out / Path(p).relative_to(tmp)

    return {k: [move(p) for p in v] if isinstance(v, (list, tuple)) else move(v)
            for k, v in paths.items()}


def run(args) -> int:
    check_output_dir(args.out, "--out", staged=True)
    model = load_model(args.model)
    obs_words = check_obs_words(model, args.obs_words)
    CorePlan.build(model, args.lanes, obs_words)  # validates --lanes with a clear message
    obs = None
    if not args.no_episode and model.meta.get("env_id"):
        obs = record_episode(model, args.seed, args.steps)
    # every file in a fresh folder beside OUT first: OUT gets all of them or none
    with atomic_dir(args.out) as tmp:
        paths = write_design(model, args.lanes, tmp, obs_words=obs_words,
                             memory_files=args.memory_files, observations=obs)
    for kind, path in _moved(paths, Path(tmp), args.out).items():
        if kind == "memory_files":
            print(f"wrote {len(path)} memory files ($readmemh)")
        else:
            print(f"wrote {kind}: {path}")
    return 0

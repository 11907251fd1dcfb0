"""``deltanet generate``: Verilog + design JSON + report for a model (see :mod:`hw.generate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pysim import CycleModel, DeltaNetwork, load_model


def register(sub):
    p = sub.add_parser("generate", help="generate the Verilog, design JSON and report",
                       description="Build the hardware for a model on L MAC lanes and write "
                                   "deltanet_top.v, deltanet_top.json and report.md. The report's "
                                   "cycle figures come from a recorded episode of the model's "
                                   "env (the reference as the policy) unless --no-episode.")
    p.add_argument("--model", required=True, help="model artifact (.npz)")
    p.add_argument("--lanes", type=int, default=4, help="MAC lanes, 1..64 (default 4)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the recorded episode")
    p.add_argument("--steps", type=int, default=200,
                   help="record at most this many env steps for the report (default 200)")
    p.add_argument("--no-episode", action="store_true",
                   help="use a deterministic synthetic observation sequence instead of the env")
    p.add_argument("--arch", choices=ARCHS, default="auto",
                   help="parallel: register-parallel core (deltanet_top.v, dense layers only); "
                        "seq: memory-based sequential core (deltanet_seq.v, conv2d and dense); "
                        "auto (default): seq when the model has a conv layer, else parallel")
    p.add_argument("--obs-words", type=int, default=8,
                   help="seq core: observation values written per cycle (default 8)")
    p.set_defaults(func=run)


ARCHS = ("auto", "parallel", "seq")


def choose_arch(model, arch: str) -> str:
    """``auto`` -> ``seq`` for models with a conv layer, else ``parallel``; refuse conv on
    the parallel core with a clear message."""
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")
    has_conv = any(ly.kind != "dense" for ly in model.config.layers)
    if arch == "auto":
        return "seq" if has_conv else "parallel"
    if arch == "parallel" and has_conv:
        raise ValueError(f"{model.meta.get('path', 'model')}: the parallel core runs dense "
                         "layers only; this model has conv2d layers (use --arch seq)")
    return arch


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


def run(args) -> int:
    from hw.generate import generate

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    model = load_model(args.model)
    arch = choose_arch(model, args.arch)
    if arch == "seq":
        from hw.generate_seq import generate_seq
        from pysim.seqcycles import SeqCycleModel

        SeqCycleModel(model, args.lanes)  # validates --lanes with a clear message
        if args.obs_words < 1:
            raise ValueError(f"--obs-words must be >= 1, got {args.obs_words}")
    else:
        CycleModel(model, args.lanes)  # validates --lanes with a clear message
    obs = None
    if not args.no_episode and model.meta.get("env_id"):
        obs = record_episode(model, args.seed, args.steps)
    if arch == "seq":
        paths = generate_seq(model, args.lanes, args.out, obs_words=args.obs_words,
                             observations=obs)
    else:
        paths = generate(model, args.lanes, args.out, observations=obs)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0

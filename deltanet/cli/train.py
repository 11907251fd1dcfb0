"""``deltanet train``: train an RL policy with stable-baselines3 and export it as an artifact."""

from __future__ import annotations

from math import isqrt

from deltanet.pysim.artifact import MAX_LAYERS, MAX_WEIGHTS

from ..options import (
    MAX_STEPS,
    CliError,
    add_seed,
    check_output_dir,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..train import (
    ALGOS,
    DEVICES,
    EVAL_EPISODES,
    VALIDATION_SEED,
    ckpt_dir,
    parse_hyperparams,
    sb3_paths,
    train,
    vecnormalize_path,
)


def register(sub):
    p = sub.add_parser(
        "train", help="train a policy with stable-baselines3 and export a float artifact",
        description="Train a ReLU MLP policy with stable-baselines3 on the CPU or a GPU (seeded, "
                    "one torch thread), checkpoint it into OUT.ckpt/ as it goes, save the SB3 "
                    "model beside OUT (OUT-stem.sb3.zip, needed by `deltanet prune`) and export "
                    "the float policy to OUT. Envs need a Discrete or Box action space and a Box "
                    "observation space or one gymnasium flattens (Discrete, Tuple, Dict, ...: the"
                    " network sees the one-hot flat vector). Hyper-parameters come from rl-zoo3's"
                    " tuned files (the rl_zoo3 package's hyperparams/<algo>.yml) for every env "
                    "they cover (VecNormalize entries are folded into the artifact's input map; "
                    "the activation is always ReLU), else from the algorithm's defaults; the "
                    "command prints which.")
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--algo", required=True, choices=ALGOS, help="RL algorithm")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None,
                   help="total env steps (default: rl-zoo3's n_timesteps, else the defaults')")
    add_seed(p, help="seed for SB3, torch and the envs")
    p.add_argument("--out", required=True, type=path_arg, help="artifact to write (.npz)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in OUT.ckpt/ (with replay buffer)")
    # a hidden layer as wide as this squared is already the artifact's whole weight budget
    p.add_argument("--net", type=int_in(1, isqrt(MAX_WEIGHTS)), nargs="+", default=None,
                   metavar="N", help="hidden layer sizes (default: rl-zoo3's net_arch, else 64 64)")
    p.add_argument("--checkpoint-every", type=int_in(1, MAX_STEPS), default=None,
                   metavar="STEPS",
                   help="checkpoint period in env steps (default steps/10, at least 1000)")
    p.add_argument("--eval-every", type=int_in(1, MAX_STEPS), default=None, metavar="STEPS",
                   help="validate the deterministic policy every STEPS env steps (default: at "
                        "each checkpoint)")
    p.add_argument("--eval-episodes", type=int_in(0, 1000), default=None, metavar="N",
                   help=f"validation episodes per evaluation, seeds {VALIDATION_SEED}+ (default "
                        f"{EVAL_EPISODES}; Atari: 0; 0 turns the selection off)")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="export the policy with the best validation return (default) or the "
                        "last one")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where the network trains (default cpu; cuda needs a GPU torch sees)")
    p.add_argument("--time-limit", type=float_in(1, 1e7), default=None, metavar="SECONDS",
                   help="stop after SECONDS of training with a checkpoint (continue with "
                        "--resume) and export the policy reached")
    p.add_argument("--hyperparams", nargs="+", default=None, metavar="KEY=VALUE",
                   help="replace hyper-parameters, as rl-zoo3's --hyperparams does: an SB3 "
                        "argument of the algorithm (learning_rate=5e-5, exploration_fraction=0.3),"
                        " a policy argument (policy_kwargs.ortho_init=False) or one of its Adam's"
                        " (policy_kwargs.optimizer_kwargs.eps=3.125e-4); VALUE is a Python "
                        "literal. Recorded in the artifact's provenance; a resumed run keeps "
                        "those it started with")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.out, "--out")
    check_output_dir(ckpt_dir(args.out), "--out (its checkpoint folder)")
    for path in (*sb3_paths(args.out), vecnormalize_path(args.out)):
        check_output_file(path, "--out (its SB3 model)")
    if args.net is not None:
        if len(args.net) > MAX_LAYERS - 1:
            raise CliError(f"--net: {len(args.net)} hidden layers; at most {MAX_LAYERS - 1}")
        weights = sum(a * b for a, b in zip(args.net, args.net[1:]))
        if weights > MAX_WEIGHTS:
            raise CliError(f"--net {' '.join(map(str, args.net))}: {weights} weights between "
                           f"the hidden layers; a model holds at most {MAX_WEIGHTS}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CliError("--device cuda: torch sees no CUDA device on this machine")
    try:
        overrides = parse_hyperparams(args.hyperparams or [])
    except ValueError as e:
        raise CliError(str(e)) from None
    train(args.env, args.algo, args.steps, args.seed, args.out, resume=args.resume,
          overrides=overrides,
          progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
          net_arch=args.net, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
          keep=args.keep, device=args.device, time_limit=args.time_limit)
    return 0

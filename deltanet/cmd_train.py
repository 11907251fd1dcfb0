"""``deltanet train``: train an RL policy with stable-baselines3 and export it as an artifact."""

from __future__ import annotations

from pathlib import Path

from .train import ALGOS, HYPERPARAMS


def register(sub):
    known = ", ".join(f"{e}/{a}" for e, a in HYPERPARAMS)
    p = sub.add_parser(
        "train", help="train a policy with stable-baselines3 and export a float artifact",
        description="Train a ReLU MLP policy with stable-baselines3 on the CPU (seeded, one "
                    "torch thread), checkpoint it into OUT.ckpt/ as it goes, save the SB3 "
                    "model beside OUT (OUT-stem.sb3.zip, needed by `deltanet prune`) and export "
                    "the float policy to OUT. Envs need a Box observation space and a Discrete "
                    "or Box action space. Tuned hyper-parameters exist for: " + known +
                    "; other envs get the algorithm's defaults.")
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--algo", required=True, choices=ALGOS, help="RL algorithm")
    p.add_argument("--steps", type=int, default=None,
                   help="total env steps (default: the hyper-parameter table's budget)")
    p.add_argument("--seed", type=int, default=0, help="seed for SB3, torch and the envs")
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.npz)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in OUT.ckpt/ (with replay buffer)")
    p.add_argument("--net", type=int, nargs="+", default=None, metavar="N",
                   help="hidden layer sizes (default from the table, e.g. 64 64)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="checkpoint period in env steps (default steps/10, at least 1000)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from .train import train

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.net is not None and any(n < 1 for n in args.net):
        raise ValueError(f"--net sizes must be positive, got {args.net}")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    train(args.env, args.algo, args.steps, args.seed, args.out, resume=args.resume,
          progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
          net_arch=args.net)
    return 0

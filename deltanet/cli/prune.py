"""``deltanet prune``: magnitude pruning, gradual with RL fine-tuning or one-shot."""

from __future__ import annotations

from deltanet.pysim import load_model, save_model
from deltanet.pysim.coreplan import MAX_LANES

from ..options import (
    MAX_STEPS,
    CliError,
    add_model,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..prune import apply_cleanup, mask_stats, prune_finetune, prune_oneshot
from ..train import EVAL_EPISODES, VALIDATION_SEED, sb3_paths, vecnormalize_path

SPARSITY = float_in(0, 1, hi_open=True)


class Sparsities:
    """``--sparsity``: one target (a float) or one per layer, comma-separated (a tuple)."""

    kind = "number"  # a checked numeric option (tests/test_cli_fuzz.py fuzzes every one)
    range_text = "[0, 1), or one per layer: S0,S1,..."

    def __call__(self, text):
        parts = str(text).split(",")
        if len(parts) == 1:
            return SPARSITY(text)
        return tuple(SPARSITY(v) for v in parts)


def register(sub):
    p = sub.add_parser(
        "prune", help="prune a policy's weights by magnitude (gradual + fine-tuning)",
        description="Gradual magnitude pruning (cubic schedule, Zhu & Gupta) of the policy "
                    "layers with RL fine-tuning of the SB3 model saved beside MODEL by `deltanet "
                    "train`; masks are re-applied after every gradient step and stored in the "
                    "artifact. --finetune-steps 0 prunes one-shot (works on any artifact, no SB3 "
                    "model needed). --balanced-lanes L keeps the same number of weights in every "
                    "lane's slice of every column (lane k owns output rows r % L == k). "
                    "Then hidden neurons (conv: channels) whose outgoing weights are all zero, "
                    "or whose incoming weights are all zero (their constant output folded into "
                    "the next layer's bias), are removed; --no-cleanup keeps them.")
    add_model(p, help="float artifact from `train`")
    p.add_argument("--sparsity", required=True, type=Sparsities(),
                   help="target sparsity, or one per policy layer (comma-separated, e.g. "
                        "0.5,0.5,0.5,0.82,0 to prune a DQN's large dense layer harder than its "
                        "convolutions)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--per-layer", dest="scope", action="store_const", const="per-layer",
                   help="every layer to the target sparsity (default)")
    g.add_argument("--global", dest="scope", action="store_const", const="global",
                   help="one magnitude threshold over all policy weights")
    p.add_argument("--balanced-lanes", type=int_in(1, MAX_LANES), default=None, metavar="L",
                   help="lane-balanced (Spartus column-balanced) pruning for L lanes, at most "
                        "the widest layer's outputs")
    p.add_argument("--whole-columns", action="store_true",
                   help="with --balanced-lanes: prune layers with n_out <= L (the output layer) "
                        "by whole columns instead of keeping them dense")
    p.add_argument("--out-sparsity", type=SPARSITY, default=None, metavar="S",
                   help="target sparsity of the output layer (default: --sparsity; per-layer "
                        "scope only)")
    p.add_argument("--finetune-steps", type=int_in(0, MAX_STEPS), default=None, metavar="N",
                   help="RL fine-tuning env steps (default: half the training steps; "
                        "0 = one-shot pruning without fine-tuning)")
    p.add_argument("--eval-episodes", type=int_in(0, 1000), default=None, metavar="N",
                   help=f"validation episodes (seeds {VALIDATION_SEED}+) of the best pruned "
                        f"policy, checked 5 times once the masks are final (default "
                        f"{EVAL_EPISODES}; Atari: 0; 0 keeps the final policy)")
    p.add_argument("--sb3", type=path_arg, default=None,
                   help="SB3 model to fine-tune (default: the one recorded in MODEL)")
    p.add_argument("--out", required=True, type=path_arg, help="pruned artifact to write")
    p.add_argument("--no-cleanup", action="store_true",
                   help="keep the hidden units that nothing reads (see deltanet.cleanup)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run, scope="per-layer")


def check_lanes(model, lanes: int | None, where) -> None:
    """``--balanced-lanes`` must not exceed the widest layer's outputs (rows): with more lanes
    than rows no lane slice of any column holds two rows to balance."""
    if lanes is None:
        return
    widest = max(p.weight.shape[0] for p in model.params)
    if lanes > widest:
        raise CliError(f"--balanced-lanes {lanes}: must be in 1..{widest} for {where} (its "
                       f"widest layer has {widest} outputs)")


def run(args) -> int:
    per_layer = isinstance(args.sparsity, tuple)
    if per_layer and args.scope == "global":
        raise ValueError("--sparsity: one value per layer needs per-layer scope (not --global)")
    if per_layer and args.out_sparsity is not None:
        raise ValueError("--out-sparsity: the output layer's sparsity is the last of the "
                         "per-layer --sparsity values")
    if args.out_sparsity is not None and args.scope == "global":
        raise ValueError("--out-sparsity needs per-layer sparsity (not --global)")
    if args.whole_columns and not args.balanced_lanes:
        raise ValueError("--whole-columns needs --balanced-lanes")
    if args.balanced_lanes and args.scope == "global":
        raise ValueError("--balanced-lanes needs per-layer sparsity (not --global)")
    if args.finetune_steps == 0 and args.eval_episodes:
        raise ValueError("--eval-episodes needs fine-tuning (--finetune-steps > 0)")
    if args.finetune_steps == 0 and args.out_sparsity is not None:
        raise ValueError("--out-sparsity needs fine-tuning (--finetune-steps > 0)")
    check_output_file(args.out, "--out")
    if args.finetune_steps != 0:
        for path in (*sb3_paths(args.out), vecnormalize_path(args.out)):
            check_output_file(path, "--out (its SB3 model)")
    model = load_model(args.model)
    check_lanes(model, args.balanced_lanes, args.model)
    if per_layer and len(args.sparsity) != len(model.params):
        raise CliError(f"--sparsity {','.join(f'{v:g}' for v in args.sparsity)}: "
                       f"{len(args.sparsity)} values, but {args.model} has "
                       f"{len(model.params)} layers (give one per layer, or one for all)")
    if args.finetune_steps == 0:
        m = prune_oneshot(model, args.sparsity, args.scope, args.balanced_lanes,
                          args.whole_columns, source=args.model)
        st = mask_stats([p.mask for p in m.params], args.balanced_lanes)
        print(f"one-shot sparsity {st['sparsity']:.3f} per layer {st['per_layer_sparsity']}")
        if not args.no_cleanup:
            m = apply_cleanup(m, args.balanced_lanes)
        save_model(m, args.out)
        print(f"wrote {args.out}")
        return 0
    prune_finetune(args.model, args.sparsity, args.out, scope=args.scope,
                   lanes=args.balanced_lanes, finetune_steps=args.finetune_steps,
                   sb3_path=args.sb3, progress=not args.no_progress,
                   whole_columns=args.whole_columns, out_sparsity=args.out_sparsity,
                   cleanup=not args.no_cleanup, eval_episodes=args.eval_episodes)
    return 0

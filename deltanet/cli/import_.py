"""``deltanet import``: a trained SB3, PyTorch or ONNX policy -> a deltanet float artifact."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from deltanet.pysim import save_model

from ..importers import FORMATS, ONNX_OPSETS, ONNX_SUPPORTED, SPEC_HELP, import_policy
from ..options import CliError, HelpFormatter, check_output_file, int_in, path_arg


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Ranges in the option help, the epilog (the spec format) as written."""


def _wrap(*paragraphs) -> str:
    return "\n\n".join(textwrap.fill(p, 78) for p in paragraphs)


def register(sub):
    lo, hi = ONNX_OPSETS
    p = sub.add_parser(
        "import", help="import a trained SB3, PyTorch or ONNX policy as a float artifact",
        formatter_class=_Formatter,
        description=_wrap(
            "Read a trained policy and write a deltanet float artifact (like `deltanet train` "
            "does) that computes the same deterministic action; then prune, quantize, "
            "calibrate, eval, generate and verify it as any other model.",
            "sb3: a stable-baselines3 zip (PPO, A2C, DQN, SAC, TD3, DDPG; MlpPolicy with ReLU, "
            "CnnPolicy): the path of predict(deterministic=True), decoded by argmax "
            "(Discrete), clip (PPO/A2C Box) or tanh squash (SAC/TD3) into the action bounds; "
            "SB3's /255 of images is the input scale.",
            "torch: a module saved whole with torch.save(module) (unpickled: import only files "
            "you trust), or a state_dict with --spec; an nn.Sequential or a module whose "
            "forward is a chain of Linear, Conv2d, ReLU, Flatten, Identity, Dropout, "
            "BatchNorm1d/2d (folded into the layer before it).",
            f"onnx: ai.onnx opsets {lo} to {hi}, a chain of {ONNX_SUPPORTED}.",
            "torch/onnx: Discrete actions are the argmax of the outputs; Box actions are the "
            "outputs clipped into the env's bounds or, when the network ends with a Tanh, "
            "low + (tanh(y) + 1) * (high - low) / 2.",
            "Anything else (Tanh/Sigmoid hidden activations, LSTMs, residual branches, "
            "unsupported attributes) is refused with one line naming the layer or node, "
            "exit code 2, and nothing is written."),
        epilog=SPEC_HELP)
    p.add_argument("source", type=path_arg, metavar="SOURCE",
                   help="the policy: SB3 .zip, PyTorch .pt/.pth or .onnx")
    p.add_argument("--out", required=True, type=path_arg, help="artifact to write (.npz)")
    p.add_argument("--env", default=None, metavar="ENV_ID",
                   help="gymnasium env id; required for torch and onnx (the spaces come from "
                        "it); for sb3 checks the zip's spaces against it and records it (without "
                        "it the artifact names no env, and eval/quantize need one)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="source format (default: from the suffix: .zip sb3, .pt/.pth torch, "
                        ".onnx onnx)")
    p.add_argument("--spec", type=path_arg, default=None, metavar="SPEC.json",
                   help="layer spec of a PyTorch state_dict (format below)")
    p.add_argument("--vecnormalize", type=path_arg, default=None, metavar="PKL",
                   help="SB3 VecNormalize statistics (.pkl) folded into the input map "
                        "x = (obs - mean) / sqrt(var + eps); whether its clip_obs can bind is "
                        "printed and recorded in the provenance")
    p.add_argument("--input-shape", type=int_in(1, 1 << 24), nargs="+", default=None,
                   metavar="N",
                   help="input shape of a torch/onnx network: N (vector) or C H W (CHW maps); "
                        "default: the ONNX graph's, the spec's, else the env's observation "
                        "shape")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.out, "--out")
    if Path(args.out).exists() and Path(args.out).resolve() == Path(args.source).resolve():
        raise CliError(f"--out {args.out}: is SOURCE itself; choose another file")
    if args.input_shape is not None and len(args.input_shape) not in (1, 3):
        raise CliError(f"--input-shape {' '.join(map(str, args.input_shape))}: give N or "
                       "C H W")
    model = import_policy(args.source, fmt=args.format, env_id=args.env, spec=args.spec,
                          vecnormalize=args.vecnormalize,
                          input_shape=tuple(args.input_shape) if args.input_shape else None)
    save_model(model, args.out)
    cfg = model.config
    layers = " -> ".join(f"{ly.kind} {ly.n_in}->{ly.n_out}" for ly in cfg.layers)
    env = model.meta.get("env_id")
    print(f"wrote {args.out}: {layers}, decoder {cfg.decoder.kind}, env {env or '(none)'}")
    if not env:
        print("note: no --env given, so the artifact names no env; eval, quantize and "
              "calibrate need one (import again with --env ENV_ID)")
    return 0

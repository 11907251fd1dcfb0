"""``deltanet quantize``: choose fixed-point formats from float rollouts; report the errors."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pysim import load_model, save_model

from .io import write_json_atomic
from .options import MAX_EPISODES, SEED_MAX, check_output_file, float_in, int_in, path_arg
from .quantize import ACT_BITS, HEADROOM, MAX_INPUT_SHIFT, QUANT_SEED, WEIGHT_BITS, quantize_model


def register(sub):
    p = sub.add_parser(
        "quantize", help="choose fixed-point formats from observed activation ranges",
        description="Record observations in float rollouts of MODEL, scale small-range inputs "
                    "by powers of two, choose per-layer activation formats (integer bits from "
                    "the observed maximum x headroom) and weight formats (from max |w|), with "
                    "accumulators that cannot overflow; a kept weight that rounds to 0 is set to "
                    "+/-1 LSB (counted per layer). Print the per-layer error of the "
                    "bit-accurate outputs against float.")
    p.add_argument("--model", required=True, type=path_arg, help="float (pruned) artifact")
    p.add_argument("--out", required=True, type=path_arg, help="quantized artifact to write")
    p.add_argument("--act-bits", type=int_in(*ACT_BITS), default=16,
                   help="activation/input width")
    p.add_argument("--weight-bits", type=int_in(*WEIGHT_BITS), default=8, help="weight width")
    p.add_argument("--headroom", type=float_in(*HEADROOM), default=2.0,
                   help="range headroom factor over the observed maximum")
    p.add_argument("--max-input-shift", type=int_in(0, MAX_INPUT_SHIFT), default=3,
                   help="largest input scale is 2**this (3 -> x8); 0 disables input scaling")
    p.add_argument("--no-equalize", action="store_true",
                   help="skip the power-of-two cross-layer range equalisation")
    p.add_argument("--episodes", type=int_in(1, MAX_EPISODES), default=10,
                   help="float episodes recorded")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=QUANT_SEED,
                   help="first episode seed")
    p.add_argument("--json", type=path_arg, help="also write the report as JSON")
    p.set_defaults(func=run)


def print_report(rep: dict, console=None):
    console = console or Console(width=max(Console().width, 110))
    t = Table(title=f"quantization error over {rep['observations']} recorded observations "
                    "(bit-accurate dense vs float dense)")
    for col in ("layer", "in", "weights", "out", "acc", "float max", "RMS err", "max err",
                "rel RMS"):
        t.add_column(col, justify="right")
    for r in rep["layers"]:
        t.add_row(str(r["layer"]), r["in_fmt"], r["weight_fmt"], r["out_fmt"],
                  str(r["acc_bits"]), f"{r['float_max']:.3g}", f"{r['rms_error']:.2e}",
                  f"{r['max_error']:.2e}", f"{r['relative_rms']:.2%}")
    console.print(t)
    if "action_agreement" in rep:
        console.print(f"argmax action agreement {rep['action_agreement']:.2%}")
    else:
        console.print(f"action RMS error {rep['action_rms_error']:.3g}, "
                      f"max {rep['action_max_error']:.3g}")
    console.print(f"input scale {rep['input_scale']}; equalisation: "
                  f"{rep.get('equalization', 'none')}")
    raised = rep.get("kept_weights_raised", [])
    if any(raised):
        per = ", ".join(f"layer {i}: {n} (weights {r['weight_fmt']})"
                        for i, (n, r) in enumerate(zip(raised, rep["layers"])) if n)
        console.print(f"kept weights that rounded to 0, set to +/-1 LSB: {per}")
    else:
        console.print("no kept weight rounds to 0")


def run(args) -> int:
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    model = load_model(args.model)
    q, rep = quantize_model(model, episodes=args.episodes, seed=args.seed,
                            act_bits=args.act_bits, weight_bits=args.weight_bits,
                            headroom=args.headroom, max_input_shift=args.max_input_shift,
                            scale_inputs=args.max_input_shift > 0,
                            equalize_ranges=not args.no_equalize)
    print_report(rep)
    save_model(q, args.out)
    print(f"wrote {args.out}")
    if args.json:
        write_json_atomic(args.json, rep)
    return 0

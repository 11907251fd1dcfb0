"""``deltanet quantize``: choose fixed-point formats from float rollouts; report the errors."""

from __future__ import annotations

from deltanet.pysim import load_model, save_model

from ..io import write_json_atomic
from ..options import (
    add_episodes,
    add_json,
    add_model,
    add_seed,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..quantize import (
    ACT_BITS,
    HEADROOM,
    MAX_INPUT_SHIFT,
    QUANT_SEED,
    WEIGHT_BITS,
    print_quantize_report,
    quantize_model,
)


def register(sub):
    p = sub.add_parser(
        "quantize", help="choose fixed-point formats from observed activation ranges",
        description="Record observations in float rollouts of MODEL, scale small-range inputs "
                    "by powers of two, choose per-layer activation formats (integer bits from "
                    "the observed maximum x headroom) and weight formats (from max |w|), with "
                    "accumulators that cannot overflow; a kept weight that rounds to 0 is set to "
                    "+/-1 LSB (counted per layer). Print the per-layer error of the "
                    "bit-accurate outputs against float.")
    add_model(p, help="float (pruned) artifact")
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
    add_episodes(p, default=10, help="float episodes recorded")
    add_seed(p, default=QUANT_SEED, help="first episode seed")
    add_json(p, help="also write the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    model = load_model(args.model)
    q, rep = quantize_model(model, episodes=args.episodes, seed=args.seed,
                            act_bits=args.act_bits, weight_bits=args.weight_bits,
                            headroom=args.headroom, max_input_shift=args.max_input_shift,
                            scale_inputs=args.max_input_shift > 0,
                            equalize_ranges=not args.no_equalize)
    print_quantize_report(rep)
    save_model(q, args.out)
    print(f"wrote {args.out}")
    if args.json:
        write_json_atomic(args.json, rep)
    return 0

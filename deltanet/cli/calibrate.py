"""``deltanet calibrate``: per-layer delta thresholds, fewest multiplications at a set return."""

from __future__ import annotations

from deltanet.pysim import Model, load_model, save_model

from ..calibrate import HOLDOUT_SEED, MIN_EPISODES, SELECT_SEED, calibrate, dense_reference
from ..io import write_json_atomic
from ..options import (
    CliError,
    add_episodes,
    add_json,
    add_model,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)

#: most evaluations one search may run
MAX_EVALS = 100_000


def register(sub):
    p = sub.add_parser(
        "calibrate", help="choose per-layer delta thresholds automatically",
        description="Greedy per-layer search over thresholds {0, 1, 2, 3, 4, 6, 8, 11, ...} "
                    "x LSB (two steps per octave) of each layer's input format, minimising "
                    "significant multiplications per step. "
                    "Rule: a setting is acceptable when the bit-accurate (fixed-point, delta) "
                    f"mean return over N >= {MIN_EPISODES} episodes seeded {SELECT_SEED}+ is "
                    ">= ref - (1 - FRACTION) * |ref|, ref being the float dense-update return "
                    "of the reference on the same seeds: --reference, else the dense model "
                    "MODEL was pruned from (named in its provenance), else MODEL itself (with a "
                    "warning). The "
                    f"chosen setting must pass again on held-out seeds {HOLDOUT_SEED}+, else "
                    "the search backs off one layer at a time until one passes. Every "
                    "candidate, the rejected ones with the reason, goes into the report.")
    add_model(p, help="quantized artifact")
    p.add_argument("--out", required=True, type=path_arg, help="calibrated artifact to write")
    p.add_argument("--fraction", type=float_in(0, 1, lo_open=True), default=0.95,
                   help="keep at least this fraction of the reference return")
    add_episodes(p, default=30, lo=MIN_EPISODES, help="episodes per evaluation")
    p.add_argument("--reference", type=path_arg, default=None,
                   help="model of the same task whose float dense return sets the target "
                        "(default: the dense model MODEL was pruned from, else MODEL)")
    p.add_argument("--max-evals", type=int_in(1, MAX_EVALS), default=400,
                   help="evaluation budget")
    add_json(p, help="also write the calibration report as JSON")
    p.set_defaults(func=run)


def check_same_task(model: Model, ref: Model, model_path, ref_path) -> None:
    """The reference must drive the same env with the same observation and action sizes."""
    a, b = model.meta.get("env_id"), ref.meta.get("env_id")
    if a != b:
        raise CliError(f"--reference {ref_path} is a model of {b!r} but --model {model_path} "
                       f"is one of {a!r}: the reference must solve the same task")
    ca, cb = model.config, ref.config
    if (ca.n_in, ca.n_out, ca.decoder.kind) != (cb.n_in, cb.n_out, cb.decoder.kind):
        raise CliError(f"--reference {ref_path} ({b}) takes {cb.n_in} inputs and gives "
                       f"{cb.n_out} {cb.decoder.kind} outputs but --model {model_path} ({a}) "
                       f"takes {ca.n_in} and gives {ca.n_out} {ca.decoder.kind} outputs")


def run(args) -> int:
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    model = load_model(args.model)
    if args.reference:
        ref = load_model(args.reference)
        check_same_task(model, ref, args.model, args.reference)
    else:
        ref = dense_reference(model, args.model)
        if ref is not None:
            check_same_task(model, ref, args.model, ref.meta.get("path"))
    out, rep = calibrate(model, fraction=args.fraction, episodes=args.episodes, reference=ref,
                         max_evals=args.max_evals)
    save_model(out, args.out)
    print(f"wrote {args.out}")
    if args.json:
        write_json_atomic(args.json, rep)
    return 0

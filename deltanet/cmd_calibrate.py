"""``deltanet calibrate``: per-layer delta thresholds, fewest multiplications at a set return."""

from __future__ import annotations

from pathlib import Path

from .calibrate import HOLDOUT_SEED, MIN_EPISODES, SELECT_SEED


def register(sub):
    p = sub.add_parser(
        "calibrate", help="choose per-layer delta thresholds automatically",
        description="Greedy per-layer search over thresholds {0, 1, 2, 3, 4, 6, 8, 11, ...} "
                    "x LSB (two steps per octave) of each layer's input format, minimising "
                    "significant multiplications per step. "
                    "Rule: a setting is acceptable when the bit-accurate (fixed-point, delta) "
                    f"mean return over N >= {MIN_EPISODES} episodes seeded {SELECT_SEED}+ is "
                    ">= ref - (1 - FRACTION) * |ref|, ref being the float dense-update return "
                    "of the reference (MODEL itself, or --reference) on the same seeds. The "
                    f"chosen setting must pass again on held-out seeds {HOLDOUT_SEED}+, else "
                    "the search backs off one layer at a time until one passes.")
    p.add_argument("--model", required=True, type=Path, help="quantized artifact")
    p.add_argument("--out", required=True, type=Path, help="calibrated artifact to write")
    p.add_argument("--fraction", type=float, default=0.95,
                   help="keep at least this fraction of the reference return (0.95)")
    p.add_argument("--episodes", type=int, default=30,
                   help=f"episodes per evaluation, >= {MIN_EPISODES} (30)")
    p.add_argument("--reference", type=Path, default=None,
                   help="model whose float dense return sets the target (default: MODEL)")
    p.add_argument("--max-evals", type=int, default=400, help="evaluation budget (400)")
    p.add_argument("--json", type=Path, help="also write the calibration report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pysim import load_model, save_model

    from .calibrate import calibrate
    from .io import write_json_atomic

    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must lie in (0, 1], got {args.fraction}")
    if args.episodes < MIN_EPISODES:
        raise ValueError(f"--episodes must be >= {MIN_EPISODES}, got {args.episodes}")
    model = load_model(args.model)
    ref = load_model(args.reference) if args.reference else None
    out, rep = calibrate(model, fraction=args.fraction, episodes=args.episodes, reference=ref,
                         max_evals=args.max_evals)
    save_model(out, args.out)
    print(f"wrote {args.out}")
    if args.json:
        write_json_atomic(args.json, rep)
    return 0

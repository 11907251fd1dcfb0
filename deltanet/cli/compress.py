"""``deltanet compress``: dense float policy -> the most reduced fixed-point delta model within a
return budget (Optuna search on Dask, paired held-out acceptance)."""

from __future__ import annotations

from deltanet.pysim import load_model

from ..compress import RULE, compress, default_finetune_steps, outputs
from ..io import write_json_atomic
from ..options import (
    MAX_EPISODES,
    MAX_STEPS,
    CliError,
    RunFailed,
    add_episodes,
    add_json,
    add_lanes,
    add_model,
    add_seed,
    check_output_dir,
    check_output_file,
    float_in,
    int_in,
    path_arg,
)
from ..train import find_sb3

#: most trials one search may hold, candidates one acceptance may try, LocalCluster size
MAX_TRIALS = 100_000
MAX_CANDIDATES = 10_000
MAX_WORKERS = 1024


def register(sub):
    p = sub.add_parser(
        "compress", help="search per-layer sparsity, thresholds and weight bits for the most "
                         "reduced model within a return budget (Optuna on Dask)",
        description="From a dense float policy to the fixed-point delta model with the fewest "
                    "significant multiplications per step whose return stays within the budget. "
                    "An Optuna study (TPE; objectives: significant multiplications per step and "
                    "the core's weight-memory bits; constraint: the search return) chooses per "
                    "layer the lane-balanced sparsity (whole columns for layers with at most "
                    "one row per lane), the delta threshold (calibrate's grid, in LSB) and the "
                    "weight width, and, with fine-tuning, the level of a pruning ladder (one "
                    "run of gradual lane-balanced pruning with RL fine-tuning of MODEL's SB3 "
                    "model, --finetune-steps, kept in OUT's name with .ladder/) to start "
                    "from; every trial prunes one-shot on top, removes the units nothing "
                    "reads, quantizes (kept weights never round to 0) and runs bit-accurate "
                    "delta episodes on seeds 400000+. Trials run on a "
                    "Dask LocalCluster (or --scheduler) and are kept in an Optuna journal "
                    "(--journal, default OUT's name with .journal): a re-run resumes, running "
                    "only the trials missing to reach --trials. A trial counts when, on its "
                    "search episodes, the lower confidence bound of its mean paired return "
                    "difference to the dense float model (dense updates, the same seeds) is >= "
                    "-(1 - BUDGET) x |dense mean|. "
                    f"Acceptance rule: {RULE}. Writes OUT (the accepted model), OUT's name with "
                    ".md (every trial, with its status and reason) and .pareto.png (return vs "
                    "significant multiplications). `deltanet sweep` is the grid special case "
                    "(one sparsity and one threshold for every layer).")
    add_model(p, help="dense float artifact (from `train` or `import`)")
    p.add_argument("--out", required=True, type=path_arg,
                   help="the accepted model (also names the report and the plot)")
    p.add_argument("--budget", type=float_in(0, 1, lo_open=True), default=0.95,
                   help="keep at least this fraction of the dense return (judged against "
                        "|dense| for negative returns)")
    add_lanes(p)
    p.add_argument("--trials", type=int_in(1, MAX_TRIALS), default=1000,
                   help="finished trials the study should hold (a resumed study runs the rest)")
    add_episodes(p, default=30, help="search episodes per trial")
    p.add_argument("--holdout-episodes", type=int_in(2, MAX_EPISODES), default=100,
                   help="paired held-out episodes per acceptance check, at least: a "
                   "candidate gets up to 8 times as many, as the spread of its search "
                   "episodes needs")
    p.add_argument("--confidence", type=float_in(0.5, 1, hi_open=True), default=0.95,
                   help="one-sided confidence of the acceptance bound")
    p.add_argument("--candidates", type=int_in(1, MAX_CANDIDATES), default=10,
                   help="most candidates given the held-out check")
    p.add_argument("--finetune-steps", type=int_in(0, MAX_STEPS), default=None, metavar="N",
                   help="RL fine-tuning env steps of the pruning ladder (needs the SB3 model "
                        "saved beside MODEL by `deltanet train`; default when that model is "
                        "there: its training steps for DQN, SAC and TD3, half of them for PPO "
                        "and A2C, else 0; 0: one-shot pruning only). Each ladder level "
                        "fine-tunes until its return is back within the budget (or a cap)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=2,
                   help="LocalCluster worker processes")
    p.add_argument("--journal", type=path_arg, default=None,
                   help="Optuna journal file (default: OUT's name with .journal)")
    add_seed(p, help="seed of the search's sampler (the episode seeds are fixed)")
    add_json(p, help="also write the result (every trial, the accepted one) as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    files = outputs(args.out)
    check_output_file(args.out, "--out")
    check_output_file(files["report"], "--out (its report)")
    check_output_file(files["plot"], "--out (its plot)")
    check_output_file(args.journal or files["journal"], "--journal")
    check_output_dir(files["ladder"], "--out (its pruning ladder folder)")
    check_output_file(args.json, "--json")
    model = load_model(args.model)
    if "quantization" in model.meta.get("provenance", {}):
        raise CliError(f"--model {args.model} is already quantized; compress starts from the "
                       "dense float model (`deltanet train` or `deltanet import` output)")
    if not model.meta.get("env_id"):
        raise CliError(f"--model {args.model}: no env_id in the model")
    if args.finetune_steps is None:
        args.finetune_steps = default_finetune_steps(model, args.model)
        if args.finetune_steps == 0:
            print(f"note: no SB3 model beside {args.model}: one-shot pruning only, no "
                  "fine-tuning (train with `deltanet train` to fine-tune)")
    elif args.finetune_steps > 0:
        try:
            find_sb3(model.meta, args.model)
        except (ValueError, FileNotFoundError):
            name = model.meta.get("provenance", {}).get("sb3_zip")
            why = (f"its SB3 model {args.model.parent / name} is missing" if name else
                   "it records no SB3 model")
            raise CliError(f"--finetune-steps {args.finetune_steps} fine-tunes the SB3 model "
                           f"saved beside --model by `deltanet train`, but {why}; use "
                           "--finetune-steps 0 (one-shot pruning)") from None
    res = compress(model, args.model, args.out, budget=args.budget, lanes=args.lanes,
                   trials=args.trials, episodes=args.episodes,
                   holdout_episodes=args.holdout_episodes, confidence=args.confidence,
                   candidates=args.candidates, finetune_steps=args.finetune_steps,
                   scheduler=args.scheduler, workers=args.workers, journal=args.journal,
                   seed=args.seed, progress=not args.no_progress)
    if args.json:
        write_json_atomic(args.json, res)
    a = res["accepted"]
    print(f"wrote {res['report']}, {res['plot']}" + (f", {args.json}" if args.json else ""))
    if a is None:
        raise RunFailed(f"no candidate passed the acceptance rule ({len(res['trials'])} "
                        f"trials); see {res['report']}")
    d = a["holdout"]
    wm = a["weight_memory"]
    print(f"accepted trial {a['trial']}: {a['mults']:.1f} significant mults/step "
          f"({a['reduction']:.1f}x fewer than dense), {wm['hw_bits']:,} weight-memory bits "
          f"({wm['hw_reduction']:.1f}x below dense float32); held-out return {d['return']:.2f} "
          f"vs dense {d['dense_return']:.2f}, lower bound of the difference {d['lower']:+.2f} >= "
          f"{-d['allowed_loss']:+.2f}")
    print(f"wrote {args.out}")
    return 0

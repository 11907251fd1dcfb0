"""Compression as a new user runs it, collected: ``deltanet train`` then ``deltanet compress``.

    python scripts/bench_compress.py [TASK ...] [--seed 0]      # runs what is missing
    python scripts/bench_compress.py --report                   # only collects the results

Per task (the bundled tasks and gymnasium tasks that are not bundled) the runs of
``scripts/build_models.py`` in ``runs/compress/<task>/`` (train with rl-zoo3's settings, the
dense agent on 20 held-out episodes, ``deltanet compress`` with default options; every step
resumes or is skipped when its output exists). The results (and the commands that made them) go
to ``benchmarks/results/compress.json``; ``scripts/bench_reduction.py`` puts them at the top of
reduction.md. This script bundles nothing: ``scripts/build_models.py`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_models import EVAL_EPISODES, EVAL_SEED, RUNS, TASKS, run_task  # noqa: E402

from deltanet.io import write_json_atomic

OUT = ROOT / "benchmarks" / "results" / "compress.json"
#: the compression target of issue 12 (CartPole: 150x)
TARGET_REDUCTION = {"cartpole": 150.0}
DEFAULT_TARGET = 20.0


def reference(env_id: str, level):
    if level is not None:
        return float(level), "issue 12 (rl-zoo3 benchmark level)"
    import gymnasium as gym

    thr = gym.spec(env_id).reward_threshold
    return (float(thr) if thr is not None else None), "gymnasium reward_threshold"


def collect() -> list:
    from deltanet.pysim import load_model

    rows = []
    for name, (env_id, algo, bundled, level, _seed) in TASKS.items():
        d = RUNS / name
        if not (d / "comp.json").exists() or not (d / "dense_eval.json").exists():
            continue
        prov = load_model(d / "dense.npz").meta["provenance"]
        ev = json.loads((d / "dense_eval.json").read_text())
        comp = json.loads((d / "comp.json").read_text())
        times = json.loads((d / "times.json").read_text()) if (d / "times.json").exists() else {}
        lad = d / "comp.ladder" / "ladder.json"
        ladder = json.loads(lad.read_text())["settings"] if lad.exists() else {}
        ref, ref_src = reference(env_id, level)
        a = comp.get("accepted")
        target = TARGET_REDUCTION.get(name, DEFAULT_TARGET)
        rows.append({
            "task": name, "env_id": env_id, "algo": algo.upper(), "bundled": bundled,
            "seed": prov.get("seed"), "train_steps": prov.get("steps"),
            "net": prov.get("net_arch"), "hyperparams": prov.get("hyperparams_source"),
            "selected": prov.get("selected"), "train_seconds": prov.get("train_seconds"),
            "dense_return": ev["mean_return"], "dense_std": ev["std_return"],
            "dense_episodes": EVAL_EPISODES, "dense_seed": EVAL_SEED,
            "reference": ref, "reference_source": ref_src,
            "competent": ref is None or ev["mean_return"] >= ref,
            "compress_seconds": comp.get("seconds"),
            # the wall time of a compress that ran from nothing (not resumed)
            "compress_wall_seconds": times.get("compress_whole"),
            "finetune_steps": comp["settings"]["finetune_steps"],
            # which compress made it: "sequential" searches also have the recovery-driven
            # ladder, the trim and the sized held-out check
            "search_rule": comp["settings"].get("search_rule", "mean"),
            # how the pruning ladder's levels were fine-tuned (distillation since session 9)
            "ladder": ladder.get("fine_tuning"),
            "trials": len(comp["trials"]),
            # a run that resumed a journal or read back a ladder did not take all the time
            "one_run": "compress_whole" in times,
            "accepted": None if a is None else {
                "reduction": a["reduction"], "mults": a["mults"],
                "dense_mults": comp["dense_mults_per_step"],
                "holdout_return": a["holdout"]["return"],
                "holdout_dense_return": a["holdout"]["dense_return"],
                "holdout_episodes": a["holdout"]["n"], "lower": a["holdout"]["lower"],
                "allowed_loss": a["holdout"]["allowed_loss"], "level": a.get("level"),
                "thresholds_lsb": a["thresholds_lsb"], "weight_bits": a["weight_bits"],
                "weight_memory": a["weight_memory"]},
            "target_reduction": target,
            "meets": a is not None and a["reduction"] >= target,
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", default=[], help=f"some of {', '.join(TASKS)}")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the task's)")
    ap.add_argument("--report", action="store_true", help="only collect the results")
    args = ap.parse_args(argv)
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; choose from {list(TASKS)}")
    if not args.report:
        for name in args.tasks or list(TASKS):
            print(f"== {name}", flush=True)
            run_task(name, args.seed)
    rows = collect()
    write_json_atomic(OUT, {"tasks": rows, "eval_episodes": EVAL_EPISODES,
                            "eval_seed": EVAL_SEED})
    for r in rows:
        a = r["accepted"]
        print(f"{r['task']}: dense {r['dense_return']:.1f} (reference {r['reference']}), "
              + (f"compressed {a['reduction']:.1f}x, held-out {a['holdout_return']:.1f} vs "
                 f"{a['holdout_dense_return']:.1f}" if a else "nothing accepted"))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

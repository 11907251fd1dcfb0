#!/usr/bin/env python
"""Benchmark: env-steps per second of the bit-accurate delta step vs a float32 dense forward.

Side by side in one run, for a 4-64-64-2 and an 8-256-256-4 MLP at B = 1 and B = 64, on
correlated random-walk observations (thresholds 0.05, 50% pruning). Each figure is the median
of several repeats. Writes benchmarks/results/reference.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import DeltaNetwork, LayerParams, Model, mlp_config


def make_model(sizes, seed=0):
    rng = np.random.default_rng(seed)
    cfg = mlp_config(sizes, thresholds=[0.05] * (len(sizes) - 1))
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=(ly.n_out, ly.n_in)) / np.sqrt(ly.n_in)).astype(np.float32)
        params.append(LayerParams(w, np.zeros(ly.n_out, np.float32),
                                  rng.random(w.shape) >= 0.5))
    return Model(cfg, tuple(params))


def observations(n_in, batch, steps, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n_in))
    out = []
    for _ in range(steps):
        x = x + 0.05 * rng.normal(size=(batch, n_in))
        out.append(x.copy())
    return out


def float_dense_forward(model):
    ws = [model.float_weight(i).T.copy() for i in range(len(model.params))]
    bs = [p.bias for p in model.params]

    def fwd(x):
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = x @ w + b
            if i < len(ws) - 1:
                np.maximum(x, 0, out=x)
        return x

    return fwd


def timed(fn, seq, repeats):
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for obs in seq:
            fn(obs)
        rates.append(len(seq) * seq[0].shape[0] / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    rows = []
    for sizes in ([4, 64, 64, 2], [8, 256, 256, 4]):
        model = make_model(sizes)
        fwd = float_dense_forward(model)
        for batch in (1, 64):
            seq = observations(sizes[0], batch, args.steps)
            seq32 = [s.astype(np.float32) for s in seq]
            net = DeltaNetwork(model, batch=batch)

            def delta_step(obs, net=net):
                net.step(net.quantize_obs(obs))

            fdelta = DeltaNetwork(model, batch=batch, mode="float")

            def float_delta_step(obs, net=fdelta):
                net.step(net.quantize_obs(obs))

            r_dense = timed(fwd, seq32, args.repeats)
            r_delta = timed(delta_step, seq, args.repeats)
            r_fdelta = timed(float_delta_step, seq, args.repeats)
            rows.append({"net": "-".join(map(str, sizes)), "batch": batch,
                         "float_dense_steps_per_s": r_dense,
                         "fixed_delta_steps_per_s": r_delta,
                         "float_delta_steps_per_s": r_fdelta,
                         "fixed_delta_over_float_dense": r_delta / r_dense})
            print(f"{rows[-1]['net']:>12} B={batch:<3} float dense {r_dense:12,.0f}  "
                  f"fixed delta {r_delta:12,.0f}  float delta {r_fdelta:12,.0f}  "
                  f"ratio {r_delta / r_dense:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Reference speed: bit-accurate delta step vs float32 dense numpy", "",
             f"Machine: {platform.processor() or platform.machine()}, Python "
             f"{platform.python_version()}, numpy {np.__version__}. Env-steps per second "
             f"(batch x steps / s), median of {args.repeats} runs of {args.steps} steps, all "
             "measured side by side in one run (`scripts/bench_reference.py`). Networks: 50% "
             "pruned, thresholds 0.05, SQ8.8 activations, SQ2.6 weights, random-walk "
             "observations.", "",
             "| network | B | float32 dense | fixed-point delta | float32 delta | "
             "fixed delta / float dense |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['batch']} | {r['float_dense_steps_per_s']:,.0f} | "
                     f"{r['fixed_delta_steps_per_s']:,.0f} | {r['float_delta_steps_per_s']:,.0f}"
                     f" | {r['fixed_delta_over_float_dense']:.2f} |")
    ratio = max(r["fixed_delta_over_float_dense"] for r in rows if r["batch"] == 64)
    lines += ["", "Aim: fixed-point delta at B = 64 at least 0.5x float dense numpy: "
              + ("reached." if ratio >= 0.5 else
                 f"not reached (best {ratio:.2f}x). The integer arithmetic runs exactly in "
                 "float64 (BLAS), so its products cost about 2x the float32 ones, and a delta "
                 "layer needs about ten numpy calls (delta, compare, masked update, product, "
                 "accumulate, counts, round, saturate) against three for a dense float layer "
                 "(product, bias, ReLU); at these sizes the per-call overhead dominates.")]
    (args.out / "reference.md").write_text("\n".join(lines) + "\n")
    (args.out / "reference.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out / 'reference.md'}")


if __name__ == "__main__":
    main()

"""Grid sweeps over delta thresholds x sparsities (x seeds x models) on Dask.

* Every point takes a model, prunes it **one-shot** by magnitude to the point's sparsity (no
  fine-tuning, to stay cheap: real fine-tuned pruning does better, see ``deltanet prune``; a
  sparsity below the model's own keeps the model's masks), sets **one threshold for every layer**
  (real units of each layer's input format) and runs ``episodes`` bit-accurate delta episodes
  (``mode="fixed"``) seeded ``300000 + 1000 * seed + i``.
* Points run on ``dask.distributed`` (:func:`deltanet.cluster.dask_client`): a ``LocalCluster``
  (``workers`` processes, one thread each) unless ``scheduler`` names a running scheduler.
  Results are appended to ``results.jsonl`` as they complete (``as_completed``) and
  ``results.csv`` is rewritten atomically after each; a re-run reads ``results.jsonl`` and skips
  finished points. ``deltanet compress`` searches the same space (and more: per-layer
  sparsities and thresholds) with Optuna; this grid is its special case.
* ``pareto.png``: mean return against reduction (log scale), one panel per model, the Pareto
  front (no other point has both a higher return and a higher reduction) drawn as a line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from .cluster import dask_client
from .progress import bar

SWEEP_SEED = 300_000
FIELDS = ["key", "model", "env_id", "sparsity", "threshold", "seed", "episodes",
          "achieved_sparsity", "mean_return", "std_return", "significant_mults_per_step",
          "dense_mults_per_step", "reduction"]


def point_key(model: str, sparsity: float, threshold: float, seed: int) -> str:
    return f"{Path(model).stem}|s={sparsity:g}|t={threshold:g}|seed={seed}"


def run_point(model_path: str, sparsity: float, threshold: float, seed: int,
              episodes: int) -> dict:
    """One sweep point (runs on a Dask worker)."""
    from deltanet.pysim import load_model

    from .prune import prune_oneshot
    from .rollout import run_episodes

    m = load_model(model_path)
    if sparsity > 0:
        m = prune_oneshot(m, sparsity)
    m = m.replace(config=m.config.with_thresholds([threshold] * len(m.config.layers)))
    s = run_episodes(m, episodes, SWEEP_SEED + 1000 * seed, mode="fixed", delta=True,
                     progress=False).summary()
    return {"key": point_key(model_path, sparsity, threshold, seed), "model": str(model_path),
            "env_id": m.meta.get("env_id"), "sparsity": sparsity, "threshold": threshold,
            "seed": seed, "episodes": episodes, "achieved_sparsity": m.sparsity("fixed"),
            "mean_return": s["mean_return"], "std_return": s["std_return"],
            "significant_mults_per_step": s["significant_mults_per_step"],
            "dense_mults_per_step": s["dense_mults_per_step"], "reduction": s["reduction"]}


def read_results(path) -> list:
    path = Path(path)
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: that point runs again
                continue
    return out


def write_csv(rows, path) -> None:
    from .io import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["key"]):
        w.writerow(r)
    write_text_atomic(path, buf.getvalue())


def pareto_front(points):
    """Points (reduction, return) not dominated by another one, by increasing reduction."""
    pts = sorted(points, key=lambda p: (-p[0], -p[1]))
    front, best = [], -float("inf")
    for red, ret in pts:
        if ret > best:
            front.append((red, ret))
            best = ret
    return sorted(front)


def plot_pareto(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import write_figure_atomic

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == model]
        sps = sorted({r["sparsity"] for r in rs})
        cmap = plt.get_cmap("viridis")
        for k, sp in enumerate(sps):
            pts = [r for r in rs if r["sparsity"] == sp]
            ax.scatter([p["reduction"] for p in pts], [p["mean_return"] for p in pts], s=22,
                       color=cmap(k / max(1, len(sps) - 1)), label=f"sparsity {sp:g}")
        front = pareto_front([(r["reduction"], r["mean_return"]) for r in rs
                              if r["reduction"] != float("inf")])
        if front:
            ax.plot(*zip(*front), "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("reduction of significant multiplications (x)")
        ax.set_ylabel("mean return (fixed point, delta)")
        ax.set_title(f"{rs[0].get('env_id')} ({Path(model).name})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    write_figure_atomic(path, fig)


def sweep(models, thresholds, sparsities, seeds, out, *, episodes: int = 10,
          scheduler: str | None = None, workers: int = 2, progress: bool = True,
          log=print) -> list:
    """Run the grid (skipping finished points); returns every result row."""
    from dask.distributed import as_completed

    from .prune import check_sparsity

    for s in sparsities:
        check_sparsity(s)
    for t in thresholds:
        if t < 0:
            raise ValueError(f"--thresholds must be >= 0, got {t}")
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    for m in models:
        if not Path(m).exists():
            raise FileNotFoundError(f"{m}: no such model file")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    rows = read_results(jsonl)
    done = {r["key"] for r in rows}
    todo = [(str(m), float(s), float(t), int(k)) for m in models for s in sparsities
            for t in thresholds for k in seeds
            if point_key(str(m), float(s), float(t), int(k)) not in done]
    log(f"sweep: {len(todo)} points to run, {len(done)} already done -> {out}/")
    if todo:
        with dask_client(scheduler, workers) as client:
            futs = [client.submit(run_point, m, s, t, k, episodes, pure=False)
                    for m, s, t, k in todo]
            pbar = bar(total=len(futs), desc="sweep", unit="pt", progress=progress)
            with open(jsonl, "a") as f:
                for fut in as_completed(futs):
                    r = fut.result()
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                    rows.append(r)
                    write_csv(rows, out / "results.csv")
                    pbar.update(1)
            pbar.close()
    write_csv(rows, out / "results.csv")
    if rows:
        plot_pareto(rows, out / "pareto.png")
    return rows

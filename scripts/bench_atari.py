"""The paper's own setting: Nature-DQN agents on Atari -> benchmarks/results/atari.md (+ .json).

    python scripts/bench_atari.py [--games breakout spaceinvaders] [--episodes 10]
                                  [--max-steps 4500] [--threshold 0.001]

Per game ``G`` it needs the trained float agent ``runs/atari/G_dqn.npz`` (``deltanet train --env
<Game>NoFrameskip-v4 --algo dqn``) and uses ``runs/atari/G_pruned.npz`` when it exists (gradual
pruning with DQN fine-tuning, ``deltanet prune``); otherwise it prunes one-shot to the paper's
sparsity (0.79 Breakout, 0.74 SpaceInvaders; 0.75 for other games), lane-balanced for 4 lanes.
Both are quantized with :func:`deltanet.atari.quantize_atari` (pixels exact in SQ1.8, 12-bit
weights, 16-bit activations) and given the delta threshold ``--threshold`` on every layer's
input (the paper's 0.001, in the layer's real units).

Rows, all over the same ``--episodes`` whole games (seeds 0..N-1, 30 no-op starts from
AtariWrapper, at most ``--max-steps`` agent steps each = 5 minutes of play), played
epsilon-greedy with ``--epsilon`` (default 0.05, the protocol of the published DQN scores: a
greedy agent can stall a game forever, e.g. never serving in Breakout; the random actions are
seeded per game, and the network still steps on every frame):

* random  - uniform random actions (seeded);
* dense   - the trained agent, float, dense updates (what SB3 plays);
* dense q - the same quantized, bit-accurate, dense updates;
* pruned  - pruned + quantized, bit-accurate, dense updates;
* delta   - dense quantized, bit-accurate, delta updates with the threshold;
* combined- pruned + quantized, bit-accurate, delta updates (what the hardware runs).

``--sweep`` thresholds add points of the combined model at other thresholds (same games): the
score-against-reduction curve of ``atari.png``, one panel per game, like the paper's figure.

``--calibrate G ...`` adds, for those games, the combined model with per-layer thresholds chosen
by ``deltanet calibrate``'s rule (95% of the dense float score; every layer raised together
first, then greedy per layer, one grid step per octave) on games of other seeds (100000+,
confirmed on held-out 200000+), then played on the bench's games: one selection honestly kept
apart from the games it is judged on. Games are played by ``--workers`` Dask processes.

Score against sparsity: the float agent before quantization, dense and at every pruning
sparsity there is an artifact for (``runs/atari/G_pruned.npz`` and any
``runs/atari/curve/G_*.npz`` from ``deltanet prune``), over the same games - the curve that shows
where pruning starts to cost score (``atari_sparsity.png``). Each point is cached by the model's
checksum in ``runs/atari/sparsity_G.json``.

Multiplications per step per layer are means over every step of those games. "pruned (weights)"
counts the products with a non-zero weight whatever the input (the paper's pruning count);
the others count products whose two operands are non-zero (so ReLU zeros are skipped too).
The quantized models built here are cached in ``runs/atari/`` and the combined one is copied to
``deltanet/models/atari/G.npz``. Every row played is kept in ``runs/atari/rows_G_*.json`` by its
model's weights checksum and the games' settings: a re-pruned agent re-plays only the rows of
its new model (pruned, combined, the sweep).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import load_model, save_model, weights_checksum

from deltanet.atari import PAPER_SPARSITY, make_eval_env, quantize_atari, record_frames
from deltanet.calibrate import HOLDOUT_SEED, MIN_EPISODES, SELECT_SEED, calibrate
from deltanet.cluster import dask_client
from deltanet.io import write_json_atomic, write_text_atomic
from deltanet.prune import finetune_passes, prune_oneshot
from deltanet.rollout import run_episodes

RUNS = ROOT / "runs" / "atari"
OUT = ROOT / "benchmarks" / "results"
BUNDLE = ROOT / "deltanet" / "models" / "atari"
GAMES = {"breakout": "Breakout", "spaceinvaders": "SpaceInvaders", "freeway": "Freeway",
         "enduro": "Enduro", "robotank": "Robotank", "battlezone": "BattleZone"}
#: Published scores (Mnih et al. 2015, Nature, Extended Data Table 2): random, human, DQN.
PUBLISHED = {"Breakout": (1.7, 31.8, 401.2), "SpaceInvaders": (148.0, 1652.0, 1976.0),
             "Freeway": (0.0, 29.6, 30.3), "Enduro": (0.0, 860.5, 301.8),
             "Robotank": (2.2, 11.9, 51.6), "BattleZone": (2360.0, 37800.0, 29900.0)}
ROW_ORDER = ("random", "constant", "dense", "dense q", "pruned", "delta", "combined")
PAPER = {"pruned": "2-8x", "delta": "10-50x", "combined": "20-150x"}


def baseline_scores(env_id: str, episodes: int, max_steps: int, action: int | None = None,
                    epsilon: float = 0.0) -> dict:
    """Scores of a policy without a network over games 0..episodes-1: uniform random actions
    (``action`` None), or always ``action`` played epsilon-greedy like the agents' rows (the
    same seeded coins and random actions as :func:`deltanet.rollout.run_episodes`)."""
    rets, lens = [], []
    for i in range(episodes):
        env = make_eval_env(env_id, max_steps)
        env.action_space.seed(i)
        coin = np.random.default_rng(i)
        env.reset(seed=i)
        ret, n, done = 0.0, 0, False
        while not done:
            a = action
            if action is None or (epsilon > 0 and coin.random() < epsilon):
                a = env.action_space.sample()
            _, r, term, trunc, _ = env.step(a)
            ret += float(r)
            n += 1
            done = term or trunc
        rets.append(ret)
        lens.append(n)
        env.close()
    return {"mean_return": float(np.mean(rets)), "std_return": float(np.std(rets)),
            "returns": rets, "mean_length": float(np.mean(lens))}


def best_constant(env_id: str, episodes: int, max_steps: int, epsilon: float) -> dict:
    """The best single action held for whole games (epsilon-greedy like the agents): the score
    a degenerate policy reaches (e.g. always UP in Freeway), which a trained agent must beat."""
    env = make_eval_env(env_id, max_steps)
    names = env.unwrapped.get_action_meanings()
    env.close()
    best = None
    for a, name in enumerate(names):
        s = baseline_scores(env_id, episodes, max_steps, a, epsilon)
        if best is None or s["mean_return"] > best["mean_return"]:
            best = {**s, "action": name}
    return best


def models_key(game: str) -> str | None:
    """The weights checksums (:func:`weights_checksum`: network and arrays, not provenance) of
    ``game``'s float agent and pruned model here (``oneshot`` when there is no pruned model), or
    None when the agent is missing: what a measured result belongs to. An agent re-exported
    from its packed checkpoint on another machine keeps its key."""
    src, pruned_src = RUNS / f"{game}_dqn.npz", RUNS / f"{game}_pruned.npz"
    if not src.exists():
        return None
    pruned = (weights_checksum(load_model(pruned_src))[7:23] if pruned_src.exists()
              else "oneshot")
    return f"w:{weights_checksum(load_model(src))[7:23]}-{pruned}"


def build(game: str, threshold: float, log=print) -> dict:
    """(float dense, dense quantized, pruned quantized) for ``game``, cached in runs/atari/."""
    G = GAMES[game]
    src = RUNS / f"{game}_dqn.npz"
    if not src.exists():
        raise SystemExit(f"{src} missing: train it first with `deltanet train --env "
                         f"{G}NoFrameskip-v4 --algo dqn --out {src.relative_to(ROOT)} --resume`")
    dense = load_model(src)
    pruned_src = RUNS / f"{game}_pruned.npz"
    if pruned_src.exists():
        pruned = load_model(pruned_src)
        how = "gradual magnitude pruning with DQN fine-tuning (deltanet prune)"
    else:
        pruned = prune_oneshot(dense, PAPER_SPARSITY.get(G, 0.75), lanes=4)
        how = "one-shot magnitude pruning (no fine-tuning), lane-balanced for 4 lanes"
    key = models_key(game)
    qd_path, qp_path = RUNS / f"{game}_dense_q.npz", RUNS / f"{game}_pruned_q.npz"
    cached = all(p.exists() for p in (qd_path, qp_path)) and all(
        load_model(p).meta["provenance"].get("bench_key") == key for p in (qd_path, qp_path))
    if cached:
        qd, qp = load_model(qd_path), load_model(qp_path)
    else:
        t0 = time.time()
        frames = record_frames(dense)
        out = []
        for m, p in ((dense, qd_path), (pruned, qp_path)):
            q = quantize_atari(m, frames)
            meta = dict(q.meta)
            meta["provenance"] = {**meta["provenance"], "bench_key": key, "pruning_how": how}
            q = q.replace(meta=meta)
            save_model(q, p)
            out.append(q)
        qd, qp = out
        log(f"  {G}: quantized dense and pruned models ({time.time() - t0:.0f} s)")
    n = len(qd.config.layers)
    qd = qd.replace(config=qd.config.with_thresholds([threshold] * n))
    qp = qp.replace(config=qp.config.with_thresholds([threshold] * n))
    return {"dense": dense.replace(config=dense.config.with_thresholds([0.0] * n)),
            "dense_q": qd, "pruned_q": qp, "pruning_how": how, "key": key}


def overrides_text(overrides) -> str:
    """``; with --hyperparams k=v ...`` for a run trained with some, else ``""``."""
    if not overrides:
        return ""
    return "; with `--hyperparams " + " ".join(f"{k}={v!r}" for k, v in overrides.items()) + "`"


def bench_game(game: str, episodes: int, max_steps: int, threshold: float,
               sweep=(), epsilon: float = 0.05, client=None) -> dict:
    G = GAMES[game]
    env_id = f"{G}NoFrameskip-v4"
    ms = build(game, threshold)
    BUNDLE.mkdir(parents=True, exist_ok=True)
    save_model(ms["pruned_q"], BUNDLE / f"{game}.npz")
    kept = row_store(game, episodes, max_steps, epsilon)
    rows = {}
    for name, play in (("random", lambda: baseline_scores(env_id, episodes, max_steps)),
                       ("constant", lambda: best_constant(env_id, episodes, max_steps, epsilon))):
        t0 = time.time()
        if name not in kept:
            kept[name] = play()
        rows[name] = kept[name]
        print(f"  {G:14s} {name:9s} {rows[name]['mean_return']:8.1f} +/- "
              f"{rows[name]['std_return']:6.1f} ({time.time() - t0:.0f} s)", flush=True)
    plan = {"dense": ("dense", "float", False), "dense q": ("dense_q", "fixed", False),
            "pruned": ("pruned_q", "fixed", False), "delta": ("dense_q", "fixed", True),
            "combined": ("pruned_q", "fixed", True)}
    for row, (mk, mode, delta) in plan.items():
        t0 = time.time()
        s = played(kept, ms[mk], mode, delta, client)
        rows[row] = s
        print(f"  {G:14s} {row:9s} {s['mean_return']:8.1f} +/- {s['std_return']:6.1f}  "
              f"{s['significant_mults_per_step']:12,.0f} mults/step {s['reduction']:7.1f}x  "
              f"({s['steps']} steps, {time.time() - t0:.0f} s)", flush=True)
    qp = ms["pruned_q"]
    cfg = qp.config
    curve = []
    for t in sweep:
        t0 = time.time()
        s = played(kept, qp.replace(config=cfg.with_thresholds([t] * len(cfg.layers))), "fixed",
                   True, client)
        curve.append({"threshold": t, **{k: s[k] for k in ("mean_return", "std_return",
                                                             "mean_length", "reduction")}})
        print(f"  {G:14s} threshold {t:g}: {s['mean_return']:8.1f} +/- {s['std_return']:6.1f} "
              f"{s['reduction']:7.1f}x ({time.time() - t0:.0f} s)", flush=True)
    weights_only = [int(qp.column_nnz(i, "fixed").sum()) for i in range(len(cfg.layers))]
    prov = ms["dense"].meta["provenance"]
    return {
        "game": G, "env_id": env_id, "models": ms["key"], "episodes": episodes,
        "max_steps": max_steps,
        "threshold": threshold, "epsilon": epsilon, "train_steps": prov.get("steps"),
        "train_seconds": prov.get("train_seconds"), "pruning": ms["pruning_how"],
        "train_overrides": prov.get("hyperparams_overrides", {}),
        "sparsity_per_layer": [round(1 - float(np.mean(qp.nonzero(i, "fixed"))), 3)
                               for i in range(len(cfg.layers))],
        "sparsity": qp.sparsity("fixed"),
        # the trained network's layers: a clean-up may have removed units of the pruned one
        "layers": [f"{ly.kind} {ly.n_in}->{ly.n_out}" for ly in ms["dense_q"].config.layers],
        "dense_per_layer": [ly.dense_mults for ly in ms["dense_q"].config.layers],
        "pruned_weights_per_layer": weights_only,
        "formats": {"input": str(cfg.input_fmt),
                    "weights": [str(ly.weight_fmt) for ly in cfg.layers],
                    "activations": [str(ly.out_fmt) for ly in cfg.layers]},
        "rows": rows, "sweep": curve,
    }


#: the calibrated row's rule: deltanet.calibrate at 95% of the dense float score, the uniform
#: phase first, then the greedy per-layer search one octave at a time (a finer grid after it,
#: ``[1, 2]``, costs another ~10 evaluations of minutes each)
CALIB = {"fraction": 0.95, "uniform_first": True, "steps_per_octave": 1, "max_evals": 30}


class KeptEvals(dict):
    """Measured games by key (a calibration's evaluations, :func:`calibrate`'s ``evals``; the
    bench's rows, :func:`played`), written to ``path`` as each one is added, so that a run
    stopped midway (a session's end) resumes where it was; kept only for the same
    ``settings`` (games, cap, epsilon; a calibration's also its models)."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        old = json.loads(path.read_text()) if path.exists() else {}
        super().__init__(old.get("evals", {}) if old.get("settings") == settings else {})

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        write_json_atomic(self.path, {"settings": self.settings, "evals": dict(self)})


ROW_FIELDS = ("mean_return", "std_return", "returns", "mean_length", "steps",
              "dense_mults_per_step", "significant_mults_per_step", "reduction")


def row_store(game: str, episodes: int, max_steps: int, epsilon: float) -> KeptEvals:
    """The bench rows of ``game`` played with these settings (:func:`played`), on disk."""
    return KeptEvals(RUNS / f"rows_{game}_{episodes}g_{max_steps}s_eps{epsilon:g}.json",
                     {"episodes": episodes, "max_steps": max_steps, "epsilon": epsilon})


def played(kept: KeptEvals, m, mode: str, delta: bool, client=None) -> dict:
    """A bench row: model ``m`` played over ``kept``'s games (seeds 0.., its settings), kept
    there by what it computes (mode, delta, :func:`weights_checksum`: network, thresholds,
    arrays), so that a re-pruned agent re-plays only the rows of its new models."""
    key = f"{mode}:{int(delta)}:{weights_checksum(m)}"
    if key not in kept:
        st = kept.settings
        s = run_episodes(m, st["episodes"], 0, mode=mode, delta=delta, progress=False,
                         env_kwargs={"max_steps": st["max_steps"]}, epsilon=st["epsilon"],
                         client=client).summary()
        kept[key] = {**{k: s[k] for k in ROW_FIELDS},
                     "per_layer_significant": [r["significant_mults_per_step"]
                                               for r in s["per_layer"]],
                     "per_layer_events": [r["events_per_step"] for r in s["per_layer"]]}
    return kept[key]


def calib_settings(models: str, calib_episodes: int, r: dict) -> dict:
    """What a calibrated row of bench result ``r`` depends on."""
    return {"models": models, "episodes": calib_episodes, **CALIB, "max_steps": r["max_steps"],
            "epsilon": r.get("epsilon", 0.0)}


def calibrated_row(game: str, ms: dict, r: dict, calib_episodes: int, client) -> dict:
    """The combined model with per-layer thresholds chosen by :func:`calibrate` (the rule of
    ``deltanet calibrate``, with :data:`CALIB`) on seeds 100000+ and confirmed on held-out
    seeds 200000+, ``calib_episodes`` games each, played like the bench; then played on the
    bench's own games (seeds 0..N-1), which the choice never saw. The search is cached in
    ``runs/atari/calib_<game>.json`` by the models and settings."""
    play = {"env_kwargs": {"max_steps": r["max_steps"]}, "epsilon": r.get("epsilon", 0.0)}
    settings = calib_settings(ms["key"], calib_episodes, r)
    path = RUNS / f"calib_{game}.json"
    rep = json.loads(path.read_text()) if path.exists() else {}
    if rep.get("settings") != settings:
        evals = KeptEvals(RUNS / f"calib_{game}_evals.json",
                          {k: settings[k] for k in ("models", "episodes", "max_steps",
                                                    "epsilon")})
        print(f"  {GAMES[game]}: calibrating per-layer thresholds ({calib_episodes} games per "
              f"setting, seeds {SELECT_SEED}+, held out {HOLDOUT_SEED}+)", flush=True)
        _, rep = calibrate(ms["pruned_q"], fraction=CALIB["fraction"], episodes=calib_episodes,
                           reference=ms["dense"], max_evals=CALIB["max_evals"],
                           uniform_first=CALIB["uniform_first"],
                           steps_per_octave=CALIB["steps_per_octave"], client=client,
                           evals=evals,
                           log=lambda m: print(f"  {GAMES[game]}: {m}", flush=True), **play)
        rep = {"settings": settings, **rep}
        write_json_atomic(path, rep)
    qp = ms["pruned_q"]
    t0 = time.time()
    s = played(row_store(game, r["episodes"], r["max_steps"], r.get("epsilon", 0.0)),
               qp.replace(config=qp.config.with_thresholds(rep["thresholds"])), "fixed", True,
               client)
    print(f"  {GAMES[game]:14s} calibrated {s['mean_return']:8.1f} +/- {s['std_return']:6.1f} "
          f"{s['reduction']:7.1f}x thresholds {[f'{t:.4g}' for t in rep['thresholds']]} "
          f"({time.time() - t0:.0f} s)", flush=True)
    return {"settings": settings, "thresholds": rep["thresholds"],
            "thresholds_lsb": rep["thresholds_lsb"], "reference": rep["reference"],
            "target": rep["target"], "select": rep["select"], "holdout": rep["holdout"],
            "evaluations": rep["evaluations"], "search_stopped": rep["search_stopped"],
            "search_seconds": rep["seconds"],
            "candidates": rep["candidates"],  # every evaluation: a later search can keep them
            **{k: s[k] for k in ROW_FIELDS}, "per_layer_significant": s["per_layer_significant"]}


def sparsity_points(game: str, episodes: int, max_steps: int, epsilon: float,
                    dense_row: dict | None = None, client=None) -> list:
    """Float score of ``game``'s agent against its pruning sparsity (see the module docstring),
    sorted by sparsity then fine-tuning steps. ``dense_row``: the bench's dense row of these
    very games (the float agent, dense updates), taken as the agent's point unmeasured."""
    paths = [RUNS / f"{game}_dqn.npz", RUNS / f"{game}_pruned.npz",
             *sorted((RUNS / "curve").glob(f"{game}_*.npz"))]
    cache_path = RUNS / f"sparsity_{game}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    pts, seen = [], set()
    for p in paths:
        if not p.exists():
            continue
        m = load_model(p)
        if weights_checksum(m) in seen:  # the bench's pruned model is a copy of a curve one
            continue
        seen.add(weights_checksum(m))
        key = f"{weights_checksum(m)}-{episodes}-{max_steps}-{epsilon}"
        if key in cache and cache[key]["model"] != str(p.relative_to(RUNS)):  # renamed since
            cache[key]["model"] = str(p.relative_to(RUNS))
            write_json_atomic(cache_path, cache)
        if key not in cache:
            t0 = time.time()
            n = len(m.config.layers)
            if p == paths[0] and dense_row is not None:  # the bench's dense row: these games
                s = dense_row
            else:
                s = run_episodes(m.replace(config=m.config.with_thresholds([0.0] * n)),
                                 episodes, 0, mode="float", delta=False, progress=False,
                                 env_kwargs={"max_steps": max_steps}, epsilon=epsilon,
                                 client=client).summary()
            pr = m.meta["provenance"].get("pruning", {})
            cache[key] = {"model": str(p.relative_to(RUNS)),
                          "sparsity": round(float(m.sparsity("float")), 3),
                          "per_layer": [round(1 - float(np.mean(m.nonzero(i, "float"))), 2)
                                        for i in range(n)],
                          "finetune_steps": sum(finetune_passes(pr)),
                          "finetune_passes": finetune_passes(pr),
                          **{k: s[k] for k in ("mean_return", "std_return", "mean_length")},
                          "seconds": 0.0 if s is dense_row else round(time.time() - t0, 1)}
            write_json_atomic(cache_path, cache)
            print(f"  {GAMES[game]:14s} float at sparsity {cache[key]['sparsity']:.3f}: "
                  f"{s['mean_return']:8.1f} +/- {s['std_return']:6.1f} ({p.name}, "
                  f"{time.time() - t0:.0f} s)", flush=True)
        pts.append(cache[key])
    return sorted(pts, key=lambda q: (q["sparsity"], q["finetune_steps"]))


def merged_curve(r: dict, pts: list, committed: list) -> list:
    """Result ``r``'s score-against-sparsity curve: the points ``pts`` measured here, and
    those measured before on models that are not here (another machine's runs/): ``r``'s own
    and the committed ones of the same float agent, so that a re-pruned agent's fresh result
    keeps the curve of its earlier prunings; each model once, sorted like
    :func:`sparsity_points`."""
    agent = str(r.get("models", "")).split("-")[0]
    before = r.get("sparsity_curve", []) + [
        q for c in committed if c.get("game") == r["game"]
        and str(c.get("models", "")).split("-")[0] == agent for q in c.get("sparsity_curve", [])]
    names = {q["model"] for q in pts}
    extra = {q["model"]: q for q in before
             if q["model"] not in names and not (RUNS / q["model"]).exists()}
    return sorted(pts + list(extra.values()), key=lambda q: (q["sparsity"], q["finetune_steps"]))


def _save_figure(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    import matplotlib.pyplot as plt

    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_sparsity(results: list, path: Path) -> None:
    """Float score against pruning sparsity, one panel per game (``atari_sparsity.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in results if len(r.get("sparsity_curve", [])) > 1]
    if not rs:
        return
    fig, axes = plt.subplots(1, len(rs), figsize=(4.2 * len(rs), 3.4), squeeze=False)
    for ax, r in zip(axes.flat, rs):
        pts = r["sparsity_curve"]
        dense = r["rows"]["dense"]["mean_return"]
        ax.errorbar([q["sparsity"] for q in pts], [q["mean_return"] for q in pts],
                    yerr=[q["std_return"] for q in pts], fmt="o", color="C0", capsize=3)
        for q in pts:
            if q["finetune_steps"]:
                ax.annotate(f"{q['finetune_steps'] / 1e3:.0f}k", (q["sparsity"], q["mean_return"]),
                            textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.axhline(0.95 * dense, color="k", lw=0.8, ls="--", label="95% of dense")
        ax.axhline(r["rows"]["random"]["mean_return"], color="C1", lw=0.8, ls=":",
                   label="random")
        ax.set_title(f"{r['game']}: float, pruned + fine-tuned")
        ax.set_xlabel("sparsity (labels: fine-tuning env steps)")
        ax.set_ylabel(f"score ({r['episodes']} games)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


#: on-chip block RAM of the ECP5 parts (kbit)
ECP5_BRAM_KBIT = {"ECP5-25k (LFE5U-25F)": 1008, "ECP5-85k (LFE5U-85F)": 3744}


def memory_lines(game: str, lanes: int = 4) -> list:
    """Memory budget of the bundled combined model on the event-driven core."""
    import re

    from deltanet.hw.core import DeltaCore
    from deltanet.hw.generate_core import memories

    rows = memories(DeltaCore(load_model(BUNDLE / f"{game}.npz"), lanes=lanes))
    kinds = {}
    for r in rows:  # lane3.weights -> weights (all lanes)
        kind = re.sub(r"^(lane|exam)\d+\.", "", r["name"])
        kinds[kind] = kinds.get(kind, 0) + r["bits"]
    total = sum(kinds.values())
    out = [f"Memory of the combined model on the event-driven core ({lanes} lanes, "
           "`hw.generate_core.memories`):", "", "| memory (all lanes) | kbit |", "|---|---|"]
    out += [f"| {k} | {v / 1024:,.0f} |" for k, v in sorted(kinds.items(),
                                                           key=lambda kv: -kv[1])]
    out += [f"| **total** | **{total / 1024:,.0f}** |", ""]
    dev = ", ".join(f"{name} {kb:,} kbit" for name, kb in ECP5_BRAM_KBIT.items())
    out += [f"On-chip block RAM: {dev}. The whole network does not fit on chip: the weights "
            "would live in external memory (read once per significant multiplication, "
            "column-compressed, so the bandwidth follows the work); the accumulators, x_hat, "
            "dirty lists and the event queue are the on-chip part.", ""]
    return out


def curve_points(r: dict) -> list:
    """(threshold, reduction, mean score) of the pruned model along the thresholds: dense
    updates (threshold 0), the bench's threshold, and the ``--sweep`` ones, by threshold."""
    rows = r["rows"]
    pts = [(0.0, rows["pruned"]["reduction"], rows["pruned"]["mean_return"]),
           (r["threshold"], rows["combined"]["reduction"], rows["combined"]["mean_return"])]
    pts += [(c["threshold"], c["reduction"], c["mean_return"]) for c in r.get("sweep", [])]
    return sorted(set(pts))


def plot(results: list, path: Path) -> None:
    """Score against multiplication reduction, one panel per game (``atari.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    n = len(results)
    cols = min(3, n)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False)
    for ax, r in zip(axes.flat, results):
        rows = r["rows"]
        dense = rows["dense"]["mean_return"]
        pts = curve_points(r)
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "o-", color="C0",
                label="pruned, delta threshold " + " / ".join(f"{p[0]:g}" for p in pts))
        for name, mk, col in (("dense q", "s", "C7"), ("delta", "^", "C2"),
                              ("combined", "*", "C3")):
            ax.plot(rows[name]["reduction"], rows[name]["mean_return"], mk, color=col,
                    markersize=11 if name == "combined" else 7, label=name)
        if r.get("calibrated"):
            c = r["calibrated"]
            ax.plot(c["reduction"], c["mean_return"], "D", color="C5", markersize=8,
                    label="combined, calibrated per-layer thresholds")
        ax.axhline(dense, color="k", lw=0.8, label="dense float")
        ax.axhline(0.95 * dense, color="k", lw=0.8, ls="--", label="95% of dense")
        ax.axhline(rows["random"]["mean_return"], color="C1", lw=0.8, ls=":", label="random")
        ax.axhline(rows["constant"]["mean_return"], color="C4", lw=0.8, ls="-.",
                   label="best constant action")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{r['game']} ({r['train_steps'] / 1e6:.2g}M steps)")
        ax.set_xlabel("multiplication reduction (x)")
        ax.set_ylabel(f"score ({r['episodes']} games)")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.flat[n:]:
        ax.axis("off")
    legend = {}  # every label once, from whichever panel has it (the curve's names its
    for ax in axes.flat[:n]:  # thresholds per panel: one entry for all)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab.startswith("pruned, delta threshold"):
                lab = "pruned, along the delta threshold (0, then upwards)"
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.13 / rows_n, 1, 1))
    _save_figure(fig, path)


def _f(x: float) -> str:
    return f"{x:,.0f}"


def _protocol(r: dict) -> str:
    eps = r.get("epsilon", 0.0)  # results from before the option played greedily
    frames = 4 * r["max_steps"]
    published = "; the published protocol's limit" if frames == 18_000 else ""
    cap = (f"A game ends at the latest after {r['max_steps']:,} agent steps ({frames:,} frames, "
           f"{frames / 3600:g} minutes at 60 Hz{published}).")
    if not eps:
        return f"Played greedily (epsilon 0). {cap}"
    return (f"Played epsilon-greedy, epsilon {eps:g} (seeded per game; the network steps on "
            f"every frame). {cap}")


def _sparsity_row(q: dict, dense: float) -> str:
    share = f"{100 * q['mean_return'] / dense:.0f}%" if dense > 0 else "-"
    # a policy pruned in several passes: each pass's fine-tuning steps
    steps = " + ".join(f"{n:,}" for n in q.get("finetune_passes") or [q["finetune_steps"]])
    return (f"| {q['sparsity']:.3f} | {q.get('per_layer', '-')} | {steps} | "
            f"{q['mean_return']:.1f} +/- "
            f"{q['std_return']:.1f} | {share} | {q['mean_length']:.0f} |")


def calibrated_lines(r: dict) -> list:
    """The calibrated row's rule and its three measurements (selection, held out, the bench's
    own games), in markdown."""
    c, st = r["calibrated"], r["calibrated"]["settings"]
    dense = r["rows"]["dense"]["mean_return"]

    def share(score, ref):
        return f"{100 * score / ref:.0f}%" if ref > 0 else "-"

    thr = ", ".join(f"{t:.4g}" for t in c["thresholds"])
    dens = st["steps_per_octave"]
    octaves = ", then ".join(str(d) for d in (dens if isinstance(dens, list) else [dens]))
    return [f"Per-layer thresholds, calibrated: the rule of `deltanet calibrate` "
            f"(`deltanet/calibrate.py`) at {100 * st['fraction']:g}% of the dense float score, "
            f"every candidate played like this section over {st['episodes']} games from seed "
            f"{SELECT_SEED:,}: every layer raised together first, then the greedy per-layer "
            f"search, {octaves} grid step(s) per octave ({c['evaluations']} "
            f"evaluations, {c['search_seconds'] / 60:.0f} minutes, stopped: "
            f"{c['search_stopped']}); confirmed on {st['episodes']} held-out games from seed "
            f"{HOLDOUT_SEED:,}; then played on this section's games, which the choice never "
            f"saw. Thresholds per layer input: {thr}.", "",
            "| games | dense float | calibrated combined | % of dense | reduction |",
            "|---|---|---|---|---|",
            f"| selection ({st['episodes']}, seeds {SELECT_SEED:,}+) | "
            f"{c['reference']['select']:.1f} | {c['select']['mean_return']:.1f} | "
            f"{share(c['select']['mean_return'], c['reference']['select'])} | "
            f"{c['select']['reduction']:.1f}x |",
            f"| held out ({st['episodes']}, seeds {HOLDOUT_SEED:,}+) | "
            f"{c['reference']['holdout']:.1f} | {c['holdout']['mean_return']:.1f} | "
            f"{share(c['holdout']['mean_return'], c['reference']['holdout'])} | "
            f"{c['holdout']['reduction']:.1f}x |",
            f"| **this section's ({r['episodes']}, seeds 0+)** | {dense:.1f} | "
            f"**{c['mean_return']:.1f} +/- {c['std_return']:.1f}** | "
            f"**{share(c['mean_return'], dense)}** | **{c['reduction']:.1f}x** |", ""]


def markdown(results: list) -> str:
    lines = ["# Atari: Nature-DQN agents as sparse delta networks",
             "",
             "Generated by `scripts/bench_atari.py`. Whole games (all lives, unclipped score, "
             "AtariWrapper preprocessing: 30 no-op starts, frame skip 4, 84x84 grey, 4 stacked "
             "frames), seeds 0..N-1, each capped at the agent steps its section states. "
             "Multiplications per step "
             "are means over every step of those games. `pruned (weights)` counts products with "
             "a non-zero weight whatever the input (the paper's pruning count); the other columns "
             "count products whose two operands are non-zero. Paper (Ivanov et al. 2022): "
             "pruning 2-8x, delta 10-50x, combined 20-150x.", "",
             "![score against multiplication reduction per game](atari.png)", ""]
    for r in results:
        rows = r["rows"]
        pub = PUBLISHED.get(r["game"])
        lines += [f"## {r['game']} ({r['env_id']})", "",
                  f"Agent: SB3 DQN (Nature CNN, rl-zoo Atari hyper-parameters, learning from "
                  f"step 20k{overrides_text(r.get('train_overrides'))}), "
                  f"{r['train_steps']:,} env steps ({4 * r['train_steps']:,} "
                  f"frames) of training. Pruning: "
                  f"{r['pruning']}; sparsity {r['sparsity']:.2f} (per layer "
                  f"{r['sparsity_per_layer']}). Threshold {r['threshold']} on every layer's "
                  f"input. Formats: input {r['formats']['input']}, weights "
                  f"{r['formats']['weights']}, activations {r['formats']['activations']}. "
                  f"{_protocol(r)}", "",
                  *([r["note"], ""] if r.get("note") else []),
                  f"| agent | score (mean +/- std, {r['episodes']} games) | mean length |",
                  "|---|---|---|"]
        stalled = []
        for name in ROW_ORDER:
            row = rows[name]
            cap = row["mean_length"] >= r["max_steps"]
            if cap:
                stalled.append(name)
            label = f"best constant ({row['action']})" if name == "constant" else name
            lines.append(f"| {label} | {row['mean_return']:.1f} +/- {row['std_return']:.1f} | "
                         f"{row['mean_length']:.0f}{' (cap)' if cap else ''} |")
        if stalled:
            lines += ["", f"**{', '.join(stalled)}: every game ran into the {r['max_steps']:,}-"
                          "step cap.** A game still being played is cut off there, as in the "
                          "published protocol; but if the agent stopped playing (in Breakout, "
                          "by never pressing FIRE to serve), the screen is static and those "
                          "rows' multiplication counts describe an idle game, not play."]
        dead = [i - 1 for i, ev in enumerate(rows["dense"].get("per_layer_events", []))
                if i > 0 and ev == 0]
        if dead:
            lines += ["", f"**The dense agent's layer {dead[0]} outputs zeros on every step of "
                          "every game (dead ReLUs): its Q-values never depend on the screen, "
                          "it plays one fixed action, and this game's multiplication counts "
                          "and reductions describe a constant network, not a working policy.**"]
        if pub:
            lines += ["", f"Published (Mnih et al. 2015, 50M frames): random {pub[0]}, human "
                          f"{pub[1]}, DQN {pub[2]}."]
        cal = r.get("calibrated")
        extra = {"head": "", "rule": "", "layer": [""] * len(r["layers"]), "total": "",
                 "reduction": ""}
        if cal:  # one more column: the combined model at its calibrated thresholds
            extra = {"head": " calibrated |", "rule": "---|",
                     "layer": [f" {_f(v)} |" for v in cal["per_layer_significant"]],
                     "total": f" {_f(cal['significant_mults_per_step'])} |",
                     "reduction": f" {cal['reduction']:.1f}x |"}
        lines += ["", "| layer | dense | pruned (weights) | pruned | delta | combined |"
                      + extra["head"], "|---|---|---|---|---|---|" + extra["rule"]]
        for i, name in enumerate(r["layers"]):
            lines.append(
                f"| {i}: {name} | {_f(r['dense_per_layer'][i])} | "
                f"{_f(r['pruned_weights_per_layer'][i])} | "
                f"{_f(rows['pruned']['per_layer_significant'][i])} | "
                f"{_f(rows['delta']['per_layer_significant'][i])} | "
                f"{_f(rows['combined']['per_layer_significant'][i])} |{extra['layer'][i]}")
        dense = sum(r["dense_per_layer"])
        tot = {k: rows[k]["significant_mults_per_step"] for k in ("pruned", "delta", "combined")}
        pw = sum(r["pruned_weights_per_layer"])
        lines.append(f"| **total** | {_f(dense)} | {_f(pw)} | {_f(tot['pruned'])} | "
                     f"{_f(tot['delta'])} | {_f(tot['combined'])} |{extra['total']}")
        lines.append(f"| **reduction** | 1x | {dense / pw:.1f}x (paper {PAPER['pruned']}) | "
                     f"{dense / tot['pruned']:.1f}x | {dense / tot['delta']:.1f}x (paper "
                     f"{PAPER['delta']}) | {dense / tot['combined']:.1f}x (paper "
                     f"{PAPER['combined']}) |{extra['reduction']}")
        lines.append("")
        if cal:
            lines += calibrated_lines(r)
        if r.get("sweep"):
            lines += ["Pruned model along the delta threshold (the curve of atari.png):", "",
                      "| threshold | score | reduction |", "|---|---|---|"]
            lines += [f"| {t:g} | {sc:.1f} | {red:.1f}x |" for t, red, sc in curve_points(r)]
            lines.append("")
        if len(r.get("sparsity_curve", [])) > 1:
            dense = r["rows"]["dense"]["mean_return"]
            lines += ["Float agent against pruning sparsity (gradual magnitude pruning with DQN "
                      "fine-tuning for the given env steps, lane-balanced for 4 lanes; before "
                      "quantization; same games; [atari_sparsity.png](atari_sparsity.png)):", "",
                      "| sparsity | per layer | fine-tuning steps | score | % of dense | "
                      "mean length |", "|---|---|---|---|---|---|"]
            lines += [_sparsity_row(q, dense) for q in r["sparsity_curve"]]
            lines.append("")
        if (BUNDLE / f"{r['game'].lower()}.npz").exists():
            lines += memory_lines(r["game"].lower())
    return "\n".join(lines) + "\n"


def reusable(game: str, settings: dict, sweep: list):
    """``(result, where, note)`` of ``game`` measured before with ``settings`` and at least
    the thresholds ``sweep``, or None: from ``runs/atari/bench_<game>.json`` (this machine's
    run), else from the committed ``benchmarks/results/atari.json`` (a fresh checkout, whose
    ``runs/`` is empty). When the game's agent is here, only results measured on these very
    models count (their checksums, :func:`models_key`): a retrained or re-pruned agent is
    measured again. A game whose agent is not here (e.g. still training) keeps its results
    whatever their settings (epsilon, games, cap); its section names how it was played. A
    run's result carries the note that ``atari.json`` gives the same models (``--note`` is
    written there after the run).
    """
    found = []
    committed = OUT / "atari.json"
    if committed.exists():
        found = [(r, committed) for r in json.loads(committed.read_text())
                 if r.get("game") == GAMES[game]]
    cache = RUNS / f"bench_{game}.json"
    if cache.exists():
        mine = json.loads(cache.read_text())
        mine["note"] = next((r["note"] for r, _ in found
                             if r.get("note") and r.get("models") == mine.get("models")),
                            mine.get("note"))
        found.insert(0, (mine, cache))
    here = models_key(game)
    gone = here is None
    for r, where in found:
        swept = sorted(c["threshold"] for c in r.get("sweep", []))
        same = all(r.get(k, 0.0 if k == "epsilon" else None) == v for k, v in settings.items())
        same = same and (gone or r.get("models") == here)
        kept = gone  # it cannot be measured again: kept as played, its section says how
        if (same or kept) and set(swept) <= set(sweep):
            note = (f"{'' if swept == sweep else f' (swept only {swept})'}"
                    f"{'' if same else ' (its agent is missing: kept as played)'}")
            return r, where.relative_to(ROOT), note
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", nargs="+", default=["breakout", "spaceinvaders"],
                    choices=sorted(GAMES))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=4500)
    ap.add_argument("--threshold", type=float, default=0.001)
    ap.add_argument("--epsilon", type=float, default=0.05,
                    help="epsilon-greedy evaluation (default 0.05, the Nature DQN protocol)")
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.003, 0.01],
                    metavar="T", help="more thresholds of the combined model for the curve "
                                      "(default 0.003 0.01)")
    ap.add_argument("--note", nargs=2, action="append", default=[], metavar=("GAME", "TEXT"),
                    help="a sentence to print under GAME's heading (e.g. how its sparsity "
                         "was chosen)")
    ap.add_argument("--reuse", action="store_true",
                    help="take each game's results from runs/atari/bench_<game>.json, else "
                         "from benchmarks/results/atari.json, when measured with the same "
                         "settings and no other --sweep thresholds (e.g. after running games "
                         "in parallel); with any settings when the game's agent "
                         "runs/atari/<game>_dqn.npz is missing (training)")
    ap.add_argument("--calibrate", nargs="+", default=[], choices=sorted(GAMES),
                    metavar="GAME", help="add a row of the combined model with per-layer "
                    "thresholds chosen by the calibration rule on other seeds (see "
                    "calibrated_row; minutes per candidate setting, cached in runs/atari/)")
    ap.add_argument("--calib-episodes", type=int, default=20,
                    help="games per candidate setting of --calibrate (default 20, at least 20)")
    ap.add_argument("--workers", type=int, default=2,
                    help="processes that play the agents' games (default 2; an episode does "
                         "not depend on which plays it)")
    args = ap.parse_args(argv)
    if args.workers < 1 or args.calib_episodes < MIN_EPISODES:
        raise SystemExit(f"--workers must be >= 1 (got {args.workers}) and --calib-episodes "
                         f">= {MIN_EPISODES} (got {args.calib_episodes})")
    with dask_client(workers=args.workers) as client:
        return run(args, client)


def run(args, client) -> int:
    if args.episodes < 1 or args.max_steps < 1 or min([args.threshold, *args.sweep]) < 0 \
            or not 0 <= args.epsilon <= 1:
        raise SystemExit("--episodes and --max-steps must be >= 1, --threshold and --sweep "
                         ">= 0, --epsilon in [0, 1]")
    results = []
    committed = json.loads((OUT / "atari.json").read_text()) if (OUT / "atari.json").exists() \
        else []
    for g in args.games:
        cache = RUNS / f"bench_{g}.json"
        settings = {"episodes": args.episodes, "max_steps": args.max_steps,
                    "threshold": args.threshold, "epsilon": args.epsilon}
        sweep = sorted(set(args.sweep) - {0.0, args.threshold})
        found = reusable(g, settings, sweep) if args.reuse else None
        if found is not None:
            r, where, note = found
            results.append(r)
            print(f"  {GAMES[g]}: results from {where}{note}")
            continue
        r = bench_game(g, args.episodes, args.max_steps, args.threshold, sweep, args.epsilon,
                       client)
        write_json_atomic(cache, r)
        results.append(r)
    notes = {}
    for game, text in args.note:
        if game not in GAMES:
            raise SystemExit(f"--note: unknown game {game!r}; choose one of {sorted(GAMES)}")
        notes[GAMES[game]] = text
    for g, r in zip(args.games, results):
        r["note"] = notes.get(r["game"], r.get("note"))
        done, here = r.get("calibrated", {}).get("settings", {}), models_key(g)
        if g in args.calibrate and here is None and not r.get("calibrated"):
            print(f"  {GAMES[g]}: not calibrated, its agent runs/atari/{g}_dqn.npz is not here")
        elif g in args.calibrate and here is not None and done != calib_settings(
                here, args.calib_episodes, r):
            if here != r.get("models"):
                raise SystemExit(f"--calibrate {g}: its results here belong to other models "
                                 f"than runs/atari/{g}_*.npz; bench it first")
            r["calibrated"] = calibrated_row(g, build(g, args.threshold), r,
                                             args.calib_episodes, client)
            write_json_atomic(RUNS / f"bench_{g}.json", r)
        if "constant" not in r["rows"]:  # measured before the baseline existed: env-only
            r["rows"]["constant"] = best_constant(r["env_id"], r["episodes"], r["max_steps"],
                                                  r.get("epsilon", 0.0))
        r["sparsity_curve"] = merged_curve(
            r, sparsity_points(g, args.episodes, args.max_steps, args.epsilon,
                               r["rows"]["dense"], client), committed)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT / "atari.json", results)
    plot(results, OUT / "atari.png")
    plot_sparsity(results, OUT / "atari_sparsity.png")
    write_text_atomic(OUT / "atari.md", markdown(results))
    print(f"wrote {OUT / 'atari.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

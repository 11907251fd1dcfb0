"""Delta-threshold calibration: fewest significant multiplications at a guaranteed return.

The rule (also in ``deltanet calibrate --help``)
------------------------------------------------
* **Reference**: ``ref`` = mean return of the reference model run in **float with dense
  updates**, over the same episodes as the candidate (paired: same seeds, same initial states).
  ``deltanet calibrate`` takes as the reference, unless ``--reference`` names one, the dense
  float model the artifact was pruned from (:func:`dense_reference`: the provenance's
  ``pruning.source``, followed back through repeated prunings, checked by its checksum), and
  only when that cannot be found the model itself (with a warning line): judged against the
  pruned model, a search would accept the loss that pruning already caused.
* **Target**: ``target = ref - (1 - fraction) * |ref|``; for a positive ``ref`` that is
  ``fraction * ref``, and it stays meaningful for negative returns (Pendulum, MountainCar).
* **Acceptable**: a threshold setting is acceptable when the mean return of the model with those
  thresholds, run **bit-accurately** (``mode="fixed"``, delta updates; what the hardware runs),
  over ``N`` episodes (default 30, at least 20) seeded ``100000 ... 100000+N-1`` is ``>= target``.
* **Search**: greedy coordinate descent over a per-layer grid of thresholds
  ``{0} U {round(2^(k/2)) LSB}`` of that layer's input format (two steps per octave, ``k = 0, 1,
  ...`` up to half the format's range). Start at all zeros; each round tries the next grid point
  of every layer that is not frozen and keeps the acceptable candidate with the fewest
  significant multiplications per step (plateaus are crossed: a step that does not increase
  the count is taken); a layer whose next step is not acceptable is frozen. Stops when every
  layer is frozen or when every acceptable step would increase the count.
  Optionally (``uniform_first``; the Atari bench, where one evaluation takes minutes) a first
  phase raises every layer together, in real units: at the coarsest-LSB layer's grid points
  ``u``, each layer at its largest grid point ``<= u``, while that is acceptable and needs no
  more multiplications; the greedy search then starts there. ``steps_per_octave`` sets the
  grid's density (default 2), or a coarse-to-fine sequence of nested densities: the greedy
  search runs on each in turn, from where the coarser one stopped, every layer free again.
* **Held-out check**: the chosen setting must pass the same test on a second seed range
  (``200000 ...``, reference re-measured on those seeds); if it fails, the search backs off one
  grid step in one layer at a time (the passing candidate with the fewest multiplications, else
  the best-returning one) until a setting passes or all thresholds are 0 (the bit-accurate
  model without thresholds, reported as it is).
* **Log**: every evaluated setting goes into the report (``candidates``) with its thresholds,
  return, multiplications, status and reason; the rejected ones (return below the target, or
  acceptable but beaten by another step, or failing the held-out check) also under
  ``rejected``.
Benchmarks use other seeds again (``scripts/bench_reduction.py``: 0 ...).
"""

from __future__ import annotations

import time
from pathlib import Path

from deltanet.pysim import Model, load_model
from deltanet.pysim.artifact import ModelFormatError

from .envs import unsolved_note
from .rollout import run_episodes

SELECT_SEED = 100_000
HOLDOUT_SEED = 200_000
MIN_EPISODES = 20


#: most prunings followed back to the dense model; sibling files searched by checksum
MAX_HOPS = 8
MAX_SIBLINGS = 256


def _source_file(src: str, checksum, artifact_path) -> Path | None:
    """The file a ``pruning.source`` entry names: the path as recorded (relative to the
    working folder at pruning time), beside the artifact, or - when a checksum is recorded - a
    sibling ``.npz`` with that checksum (bundled models: ``X_dense.npz`` beside ``X.npz``)."""
    here = Path(artifact_path).parent
    cands = [Path(src), here / src, here / Path(src).name]
    if checksum:
        cands += sorted(here.glob("*.npz"))[:MAX_SIBLINGS]
    for c in cands:
        try:
            if not c.is_file() or c.resolve() == Path(artifact_path).resolve():
                continue
            m = load_model(c)
        except (OSError, ModelFormatError):
            continue
        if not checksum or m.meta.get("checksum") == checksum:
            return c
    return None


def dense_reference(model: Model, artifact_path, log=print) -> Model | None:
    """The dense float model ``model`` was pruned from (its provenance's ``pruning.source``,
    followed back through repeated prunings), or None with a warning line when the provenance
    names none or the file is gone or changed (see :func:`_source_file`)."""
    cur, cur_path = model, Path(artifact_path)
    for _ in range(MAX_HOPS):
        pr = cur.meta.get("provenance", {}).get("pruning")
        if not isinstance(pr, dict):
            break  # not pruned: the dense model
        src = pr.get("source")
        if not src:
            log(f"warning: {cur_path} names no source model in its provenance; judging the "
                "return against the model itself (pass --reference DENSE to compare against "
                "the dense model)")
            return None
        found = _source_file(str(src), pr.get("source_checksum"), cur_path)
        if found is None:
            log(f"warning: {cur_path} was pruned from {src}, which is missing or has changed "
                "(checksum); judging the return against the model itself (pass --reference "
                "DENSE)")
            return None
        cur, cur_path = load_model(found), found
    else:
        log(f"warning: more than {MAX_HOPS} prunings back from {artifact_path}; judging the "
            "return against the model itself (pass --reference DENSE)")
        return None
    if cur is model:
        log(f"warning: {artifact_path} records no pruning, so no dense model to compare "
            "against; judging the return against the model itself")
        return None
    log(f"reference: the dense model {cur_path} (from the provenance)")
    return cur


def target_return(ref: float, fraction: float) -> float:
    return ref - (1.0 - fraction) * abs(ref)


def evaluate(model: Model, thresholds, episodes: int, seed: int, *, mode: str = "fixed",
             delta: bool = True, env_kwargs=None, epsilon: float = 0.0, client=None) -> dict:
    """Mean return and multiplications of ``model`` with ``thresholds`` over ``episodes``
    episodes from ``seed`` (:func:`deltanet.rollout.run_episodes`, whose options these are)."""
    m = model.replace(config=model.config.with_thresholds(thresholds))
    s = run_episodes(m, episodes, seed, mode=mode, delta=delta, progress=False,
                     env_kwargs=env_kwargs, epsilon=epsilon, client=client).summary()
    return {"mean_return": s["mean_return"], "std_return": s["std_return"],
            "significant": s["significant_mults_per_step"], "reduction": s["reduction"],
            "dense": s["dense_mults_per_step"]}


def lsb_multiples(fmt, steps_per_octave: int = 2) -> list:
    """0 and the distinct ``round(2^(k/steps_per_octave))``, k = 0, 1, ..., up to half the
    range of ``fmt`` in LSB (``max(2, max_raw // 2)``): the threshold grid in LSB."""
    top = max(2, fmt.max_raw // 2)
    mults, k = [0], 0
    while True:
        m = round(2 ** (k / steps_per_octave))
        if m > top:
            break
        if m != mults[-1]:
            mults.append(m)
        k += 1
    return mults


def threshold_grid(model: Model, steps_per_octave: int = 2) -> list:
    """Per layer: 0 and ``round(2^(k/steps_per_octave))`` x LSB of its input format (distinct
    multiples, k = 0, 1, ...), up to half the input format's range (:func:`lsb_multiples`)."""
    cfg = model.config
    grids = []
    for i in range(len(cfg.layers)):
        f = cfg.in_fmt(i)
        grids.append([m * f.lsb for m in lsb_multiples(f, steps_per_octave)])
    return grids


def calibrate(model: Model, *, fraction: float = 0.95, episodes: int = 30,
              reference: Model | None = None, max_evals: int = 400, log=print,
              uniform_first: bool = False, steps_per_octave=2, env_kwargs=None,
              epsilon: float = 0.0, client=None, evals=None) -> tuple:
    """Returns ``(calibrated model, report)``; see the module docstring for the rule.

    ``env_kwargs``, ``epsilon`` and ``client`` are how every episode is played and where
    (:func:`deltanet.rollout.run_episodes`). ``steps_per_octave``: one grid density, or a
    sequence of nested ones (each a multiple of the one before) searched coarse to fine, each
    continuing from where the one before stopped. ``evals``: a mapping that keeps every
    evaluation (reference, selection, held out) by its seeds and thresholds and is read
    before evaluating, so that a search interrupted or repeated with the same model and
    episodes does not play again what it played (the caller keeps it, e.g. on disk). The
    report lists every evaluated candidate (``candidates``: phase, thresholds, return,
    multiplications, status and the reason) and, apart, the rejected ones (``rejected``)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must lie in (0, 1], got {fraction}")
    if episodes < MIN_EPISODES:
        raise ValueError(f"--episodes must be >= {MIN_EPISODES} for a meaningful mean, "
                         f"got {episodes}")
    t0 = time.time()
    octaves = ((steps_per_octave,) if isinstance(steps_per_octave, int)
               else tuple(steps_per_octave))
    if not octaves or min(octaves) < 1 or any(b % a for a, b in zip(octaves, octaves[1:])):
        raise ValueError(f"steps_per_octave must be >= 1, each a multiple of the one before, "
                         f"got {steps_per_octave}")
    play = {"env_kwargs": env_kwargs, "epsilon": epsilon, "client": client}
    ref_model = reference or model
    n = len(model.config.layers)
    evals = {} if evals is None else evals

    def measured(kind, m, thr, seed, **kw):
        """``evaluate``, through ``evals`` (keyed by kind, seed and thresholds)."""
        key = f"{kind}:{seed}:" + ",".join(repr(float(t)) for t in thr)
        if key not in evals:
            evals[key] = evaluate(m, thr, episodes, seed, **kw, **play)
        return evals[key]

    ref = measured("reference", ref_model, [0.0] * len(ref_model.config.layers), SELECT_SEED,
                   mode="float", delta=False)
    target = target_return(ref["mean_return"], fraction)
    log(f"reference (float, dense updates) {ref['mean_return']:.2f} over {episodes} episodes; "
        f"target mean return >= {target:.2f}")
    weak = unsolved_note(ref_model.meta.get("env_id"), ref["mean_return"], "the reference")
    if weak:
        log(weak)
    grids = threshold_grid(model, octaves[0])
    idx = [0] * n
    cache = {}
    log_ = {}  # (phase, setting) -> candidate entry, in evaluation order

    def thresholds(ix):
        return [grids[i][k] for i, k in enumerate(ix)]

    def note(phase, ix, r, status, reason):
        e = log_.setdefault((phase, tuple(thresholds(ix))), {
            "phase": phase, "thresholds": thresholds(ix),
            "thresholds_lsb": [round(t / model.config.in_fmt(i).lsb)
                               for i, t in enumerate(thresholds(ix))],
            "mean_return": r["mean_return"], "std_return": r["std_return"],
            "significant": r["significant"], "reduction": r["reduction"]})
        e["status"], e["reason"] = status, reason

    def ev(ix):
        key = tuple(thresholds(ix))
        if key not in cache:
            cache[key] = measured("model", model, key, SELECT_SEED)
        return cache[key]

    def fmt_thr(ix):
        return [f"{t:.4g}" for t in thresholds(ix)]

    cur = ev(idx)
    if cur["mean_return"] < target:
        log(f"warning: without thresholds the bit-accurate model returns "
            f"{cur['mean_return']:.2f} < target {target:.2f}; keeping all thresholds at 0")
        note("select", idx, cur, "rejected", f"return {cur['mean_return']:.2f} < target "
             f"{target:.2f} even without thresholds (kept: nothing lower to try)")
    else:
        note("select", idx, cur, "accepted", "start (no thresholds)")
    frozen = [cur["mean_return"] < target] * n
    stop = "every layer frozen" if all(frozen) else None
    if uniform_first and not all(frozen):
        coarse = grids[max(range(n), key=lambda i: model.config.in_fmt(i).lsb)]
        for u in coarse[1:]:
            if len(cache) >= max_evals:
                stop = f"evaluation budget reached (--max-evals {max_evals})"
                break
            cand = [max(k for k, g in enumerate(grids[i]) if g <= u * (1 + 1e-9))
                    for i in range(n)]
            if cand == idx:
                continue
            r = ev(cand)
            if r["mean_return"] < target or r["significant"] > cur["significant"]:
                why = (f"return {r['mean_return']:.2f} < target {target:.2f}"
                       if r["mean_return"] < target else
                       f"needs more multiplications ({r['significant']:.1f} > "
                       f"{cur['significant']:.1f} per step)")
                note("uniform", cand, r, "rejected", f"{why} (the uniform phase stops)")
                log(f"  uniform {fmt_thr(cand)} rejected: {why}")
                break
            idx, cur = cand, r
            note("uniform", idx, cur, "accepted", "acceptable, every layer raised together")
            log(f"  uniform {fmt_thr(idx)}: return {cur['mean_return']:.2f}, "
                f"{cur['significant']:.1f} significant mults/step ({cur['reduction']:.1f}x)")
    for level, density in enumerate(octaves):
        if level:
            if (stop or "").startswith("evaluation budget") or cur["mean_return"] < target:
                break
            # a finer grid holds every point of the coarser one: continue from the same
            # thresholds, every layer free again to take the finer steps
            fine = threshold_grid(model, density)
            idx = [min(range(len(fine[i])), key=lambda k, i=i: abs(fine[i][k] - grids[i][j]))
                   for i, j in enumerate(idx)]
            grids, frozen = fine, [False] * n
            log(f"  the grid refined to {density} steps per octave")
        stop = None
        while not all(frozen):
            if len(cache) >= max_evals:
                stop = f"evaluation budget reached (--max-evals {max_evals})"
                break
            best, tried = None, []
            for i in range(n):
                if frozen[i]:
                    continue
                if idx[i] + 1 >= len(grids[i]):
                    frozen[i] = True
                    continue
                cand = list(idx)
                cand[i] += 1
                r = ev(cand)
                if r["mean_return"] < target:
                    frozen[i] = True
                    note("select", cand, r, "rejected", f"return {r['mean_return']:.2f} < "
                         f"target {target:.2f} (layer {i} frozen)")
                    log(f"  rejected {fmt_thr(cand)}: return {r['mean_return']:.2f} < target "
                        f"{target:.2f}")
                else:
                    tried.append((cand, r))
                    if best is None or r["significant"] < best[1]["significant"]:
                        best = (cand, r)
            for cand, r in tried:
                if cand is not best[0]:
                    note("select", cand, r, "rejected",
                         f"acceptable, but not taken: the step taken this round needs no "
                         f"more multiplications ({best[1]['significant']:.1f} <= "
                         f"{r['significant']:.1f} per step)")
            if best is None:
                stop = "no acceptable step left"
                break
            if best[1]["significant"] > cur["significant"]:
                note("select", best[0], best[1], "rejected",
                     f"acceptable, but every acceptable step costs more multiplications "
                     f"({best[1]['significant']:.1f} > {cur['significant']:.1f} per step)")
                stop = "every acceptable step costs more multiplications"
                break
            idx, cur = best
            note("select", idx, cur, "accepted",
                 "acceptable, fewest multiplications of its round")
            log(f"  thresholds {fmt_thr(idx)}: return {cur['mean_return']:.2f}, "
                f"{cur['significant']:.1f} significant mults/step ({cur['reduction']:.1f}x)")
    # held-out check, stepping back along the path
    ref_h = measured("reference", ref_model, [0.0] * len(ref_model.config.layers),
                     HOLDOUT_SEED, mode="float", delta=False)
    target_h = target_return(ref_h["mean_return"], fraction)
    hcache = {}

    def hold(ix):
        key = tuple(thresholds(ix))
        if key not in hcache:
            hcache[key] = measured("model", model, key, HOLDOUT_SEED)
            h = hcache[key]
            ok = h["mean_return"] >= target_h
            note("holdout", ix, h, "passed" if ok else "rejected",
                 "held-out return >= target" if ok else
                 f"held-out return {h['mean_return']:.2f} < target {target_h:.2f}")
            log(f"held-out check {fmt_thr(ix)}: return {h['mean_return']:.2f} "
                f"(target {target_h:.2f}), {h['reduction']:.1f}x")
        return hcache[key]

    # back off one layer at a time: among the settings one grid step lower in one layer, take
    # the passing one with the fewest multiplications, else the best-returning one, and repeat.
    ix = list(idx)
    while hold(ix)["mean_return"] < target_h and any(ix):
        cands = []
        for i in range(n):
            if ix[i] > 0:
                c = list(ix)
                c[i] -= 1
                cands.append(c)
        ok = [c for c in cands if hold(c)["mean_return"] >= target_h]
        if ok:
            ix = min(ok, key=lambda c: hold(c)["significant"])
            for c in ok:
                if c != ix:
                    note("holdout", c, hold(c), "rejected",
                         f"passes held out, but another back-off step needs fewer "
                         f"multiplications ({hold(ix)['significant']:.1f} < "
                         f"{hold(c)['significant']:.1f} per step)")
        else:
            ix = max(cands, key=lambda c: hold(c)["mean_return"])
    thr = thresholds(ix)
    sel, held = ev(ix), hold(ix)
    passed = held["mean_return"] >= target_h
    note("holdout", ix, held, "chosen", "passes held out" if passed else
         "all thresholds 0: the bit-accurate model as it is (held-out return below target)")
    candidates = list(log_.values())
    report = {
        "rule": "mean fixed-point delta return over N seeded episodes >= ref - (1-fraction)|ref|"
                ", ref = float dense-update return of the reference on the same seeds; "
                "greedy per-layer search on seeds 100000+, confirmed on held-out seeds 200000+",
        "fraction": fraction, "episodes": episodes,
        "search": {"uniform_first": uniform_first, "steps_per_octave": list(octaves),
                   "max_evals": max_evals},
        "reference": {"select": ref["mean_return"], "holdout": ref_h["mean_return"],
                      "model": reference.meta.get("path") if reference is not None else "self"},
        "target": {"select": target, "holdout": target_h},
        "thresholds": thr,
        "thresholds_lsb": [round(t / model.config.in_fmt(i).lsb) for i, t in
                           enumerate(thr)],
        "select": sel, "holdout": held, "evaluations": len(cache) + len(hcache),
        "search_stopped": stop or "every layer frozen",
        "candidates": candidates,
        "rejected": [c for c in candidates if c["status"] == "rejected"],
        "seconds": round(time.time() - t0, 1),
    }
    meta = dict(model.meta)
    prov = dict(meta.get("provenance", {}))
    prov["calibration"] = report
    meta["provenance"] = prov
    out = model.replace(config=model.config.with_thresholds(thr), meta=meta)
    log(f"chosen thresholds {[f'{t:.4g}' for t in thr]} ({report['thresholds_lsb']} LSB): "
        f"held-out return {held['mean_return']:.2f} +/- {held['std_return']:.2f}, "
        f"{held['significant']:.1f} significant mults/step, {held['reduction']:.1f}x "
        f"({len(cache) + len(hcache)} evaluations, {len(report['rejected'])} candidates "
        f"rejected, {time.time() - t0:.0f} s)")
    return out, report

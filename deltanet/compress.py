"""Compression search: a dense float policy -> the most reduced fixed-point delta model whose
return stays within a budget of the dense return (``deltanet compress``).

The search (Optuna, trials on Dask)
-----------------------------------
* **Parameters of a trial** (one Optuna study, multi-objective with a constraint):

  - ``keep_i`` per layer ``i``: lane-balanced one-shot magnitude pruning (:mod:`deltanet.prune`,
    ``lanes`` lanes): the weights every lane keeps in every column, ``1 .. ceil(n_out / L)``
    (log scale), i.e. the layer's sparsity target ``1 - keep / ceil(n_out / L)``. A layer in
    which every lane owns at most one row (``n_out <= L``: the output layer of a small policy)
    is pruned by whole columns (``whole_columns``): ``keep_i`` is then the number of columns
    kept, ``1 .. n_in``. The maximum keeps the layer dense.
  - ``threshold_i`` per layer: an index into the delta-threshold grid of ``deltanet
    calibrate`` (:func:`deltanet.calibrate.lsb_multiples`: 0, 1, 2, 3, 4, 6, 8, 11, ... LSB of
    the layer's input format, two steps per octave up to half the format's range).
  - ``weight_bits``: the weight width of the quantization, 6, 8, 10 or 12 bits.
  - ``trim`` (0 or 1): after the clean-up, trim every column back to lane balance
    (:func:`deltanet.prune.trim_for_lanes`: each lane keeps at most ``ceil(nnz / L)`` of the
    column's weights), so the core issues it in the fewest cycles; clean up again.
  - ``level`` (with fine-tuning, the default when the dense artifact's SB3 model is at hand):
    the rung of the **pruning ladder** the trial starts from. Before the search, one run of
    gradual lane-balanced magnitude pruning with RL fine-tuning
    (:func:`deltanet.prune.prune_ladder`, up to ``finetune_steps`` env steps in all:
    :func:`default_finetune_steps`) walks the policy down ``ladder_levels + 1`` sparsities, from
    dense to one weight per lane and column, each level fine-tuned until its return is back
    within the budget (or a cap), and keeps the fine-tuned policy of every level
    (``OUT.ladder/``, reused by a re-run with the same settings). One-shot pruning removes
    what it can from a policy trained dense; fine-tuning lets the kept weights take over the
    work of the removed ones, which is how the
    paper (and ``scripts/build_models.py``) reach their sparsities. ``keep_i`` then prunes
    further, one-shot, on top of the level's mask.

* **A trial**: take the dense model (or the ladder level), prune one-shot to ``keep_i``,
  remove the units nothing reads (:mod:`deltanet.cleanup`), quantize
  (:func:`deltanet.quantize.quantize_model`, 16-bit activations; a kept weight never rounds to
  zero), set the thresholds, and run ``episodes`` bit-accurate delta episodes
  (``mode="fixed"``) on the search seeds ``400000 + i``. **Sequential**: while the trial is
  not ruled out by the bound below (its matching upper bound reaches it) and its
  multiplications beat the best trial meeting the bound so far, its episodes double, up to
  ``SEQUENTIAL_FACTOR`` times ``episodes``. An undecided trial gets decided (a task whose
  returns vary much from episode to episode, LunarLanderContinuous, otherwise fails every
  good trial on noise), and a would-be best is confirmed: the cheapest trials meeting the
  bound on 30 episodes are the likeliest to have been lucky (Pendulum's cheapest candidates
  lost 6.8 of the 7.5 allowed on the held-out episodes).
* **Objectives**: significant multiplications per step (minimised) and the weight-memory bits
  the core stores (:func:`deltanet.weight_memory.weight_memory` ``hw_bits``, minimised, the
  secondary objective); **constraint**: the acceptance rule below on the search episodes:
  the one-sided lower confidence bound of the mean paired difference to the dense float
  (dense-update) returns on the same seeds is ``>= -(1 - budget) * |ref|`` (``ref`` their
  mean; one episode: the difference itself). A bare mean against the target lets the search
  pick the trials whose 30 episodes happened to go well, which then fail the held-out check
  (Pendulum and LunarLander did so with every candidate). Sampler: TPE
  (multivariate, constant liar for the trials in flight, constraint-aware). The first trials
  of a new study are the least reduced point of every ladder level (no further pruning,
  thresholds 0, 12-bit weights): anchors in the feasible region, without which the sampler can
  lock onto the least bad of infeasible trials.
* **Dask**: trials run on :func:`deltanet.cluster.dask_client` (a ``LocalCluster`` or a running
  scheduler), as many in flight as the cluster has threads; the parameters are asked and the
  results told in this process only, so only it writes the journal. Parameters asked again
  (TPE repeats itself as it converges) take the earlier trial's result instead of running the
  same deterministic trial again (status "repeat" in the report; they count as trials).
* **Resumable**: the study lives in an Optuna journal file (``JournalFileBackend``). A re-run
  with the same journal runs only the trials missing to reach ``trials`` finished ones (complete
  or failed with an error); a trial left running by an interrupted run is marked failed
  ("interrupted") and its parameters are queued again. The journal records the settings the
  trials depend on (model checksum, budget, lanes, episodes, ...): another setting refuses the
  journal. One run per journal at a time.

The acceptance rule (also in ``deltanet compress --help``)
----------------------------------------------------------
The trials that meet the constraint on the search seeds are the candidates, ranked by
significant multiplications per step, then weight-memory bits; a trial with the same figures
as a better-ranked one (multiplications, weight bits and search return: in effect the same
model) is not tried again. Up to ``candidates`` of them are tried (:func:`margin_ladder`: the
best-ranked one, then the best-ranked ones with ever more margin on the search bound), in that
order: the
candidate and the dense float model run the same ``n`` **held-out** episodes (seeds
``500000 + i``, never used by the search; ``n`` from the candidate's search episodes alone,
:func:`holdout_size`), giving paired differences ``d_i = R_cand,i -
R_dense,i``. The candidate is **accepted** when the one-sided ``confidence`` (95%) lower bound
of the mean difference, ``mean(d) - t_{confidence, n-1} * sd(d) / sqrt(n)``, is ``>=
-allowed_loss``, ``allowed_loss = (1 - budget) * |mean(R_dense)|`` over the held-out episodes;
the first accepted one is written. None accepted: nothing is written but the report and the
plot (``deltanet compress`` then exits with 1).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltanet.pysim import Model, save_model
from deltanet.pysim.fixed import FixedFormat

from .calibrate import lsb_multiples, target_return
from .cleanup import dense_mults as trained_mults
from .cluster import dask_client
from .envs import unsolved_note
from .io import write_figure_atomic, write_text_atomic
from .progress import bar
from .prune import (
    LADDER_METHOD,
    apply_cleanup,
    float_returns,
    prune_ladder,
    prune_oneshot,
    trim_for_lanes,
)
from .quantize import quantize_model
from .rollout import run_episodes
from .stats import paired_lower_bound
from .sweep import pareto_front
from .weight_memory import weight_memory

# optuna, dask and matplotlib are imported where they are used: every `deltanet` command
# imports this module (through its sub-command), and should not pay for them

__all__ = ["ACCEPT_SEED", "LADDER_LEVELS", "RULE", "SEARCH_SEED", "Settings", "build_candidate",
           "compress", "default_finetune_steps", "open_study", "outputs", "search_space",
           "suggest", "threshold_lsb"]

SEARCH_SEED = 400_000
ACCEPT_SEED = 500_000
STUDY_NAME = "deltanet-compress"
#: rungs of the pruning ladder below the dense one (fine-tuned policies the search starts from)
LADDER_LEVELS = 10
#: a trial that could become the best doubles its episodes up to this many times the
#: search episodes
SEQUENTIAL_FACTOR = 4
#: the held-out episodes of a candidate are at most this many times ``holdout_episodes``
HOLDOUT_FACTOR = 8
#: the power a candidate's held-out episodes are sized for (see :func:`holdout_size`)
HOLDOUT_POWER = 0.8
#: a trimmed trial trims and cleans up at most this many times (a clean-up after a trim may
#: renumber rows again)
TRIM_ROUNDS = 3
#: the weight widths a trial may choose (quantization, deltanet.quantize)
WEIGHT_BITS = (6, 8, 10, 12)
#: the least reduced trials, queued first in a new study (one per ladder level): no further
#: pruning, no thresholds, the widest weights. They anchor the constrained search in the
#: feasible region: on Acrobot's DQN even the dense model fails at 8-bit weights (-500 vs -76),
#: and with no feasible trial the sampler spent 883 of 1000 trials on one broken ladder level
BASELINE_WEIGHT_BITS = WEIGHT_BITS[-1]
#: the acceptance rule, as stated in the report and in --help
RULE = ("a candidate (a trial meeting the same bound on the search seeds, its episodes "
        "doubled while it could be the best; the fewest "
        "significant multiplications first, then the fewest with ever more margin on that "
        "bound, in tenths of the allowed loss) and the dense float model run the same "
        "N held-out episodes (seeds 500000+; N sized from the candidate's search episodes for "
        "80% power, 1 to 8 times --holdout-episodes); it is accepted when the one-sided lower "
        "confidence bound (confidence conf, default 95%) of the mean paired return difference "
        "d = candidate - dense, mean(d) - t(conf, N-1) sd(d) / sqrt(N), is >= -(1 - budget) "
        "|dense mean return|; else the next candidate is tried")


@dataclass(frozen=True)
class Settings:
    """What every trial's result depends on; recorded in the journal, which a run with other
    settings refuses."""

    #: checksum of the dense model
    model: str
    #: keep at least this fraction of the dense return (judged against |dense|)
    budget: float
    #: MAC lanes the pruning is balanced for (and the weight memory counted for)
    lanes: int
    #: search episodes per trial
    episodes: int
    #: RL fine-tuning env steps of the pruning ladder (0: no ladder, one-shot pruning only)
    finetune_steps: int = 0
    #: rungs of the ladder below the dense one
    ladder_levels: int = LADDER_LEVELS
    #: activation width of the quantization
    act_bits: int = 16
    #: float episodes whose observations set the formats (deltanet.quantize)
    quant_episodes: int = 10
    search_seed: int = SEARCH_SEED
    #: what a trial must meet on the search seeds (older journals: the bare mean, or the
    #: paired lower bound on a fixed number of episodes)
    search_rule: str = "paired lower bound, sequential"
    #: a trial that could become the best runs more episodes, up to this many
    max_episodes: int = 0
    #: its confidence (and the acceptance rule's)
    confidence: float = 0.95


def outputs(out) -> dict:
    """The files a run writes beside ``out``: the report, the Pareto plot, the default journal."""
    out = Path(out)
    return {"report": out.with_suffix(".md"), "plot": out.parent / f"{out.stem}.pareto.png",
            "journal": out.parent / f"{out.stem}.journal",
            "ladder": out.parent / f"{out.stem}.ladder"}


def default_finetune_steps(model: Model, model_path) -> int:
    """When the dense policy's SB3 model is at hand (``deltanet train`` output): the env steps
    it was trained for (off-policy algorithms: DQN, SAC, TD3) or half of them (on-policy), else
    0 (one-shot pruning). An off-policy agent recovers from pruning slowly: Acrobot's DQN at
    sparsity 0.81 needed 18k fine-tuning steps to come back to -80 (dense -70), where half its
    100k training steps split over the ladder left a level 4.5k and a return of -128."""
    from .train import OFF_POLICY, find_sb3  # off-policy: the ladder gets the whole budget

    try:
        if not find_sb3(model.meta, model_path).exists():
            return 0
    except (ValueError, FileNotFoundError):
        return 0
    prov = model.meta.get("provenance", {})
    steps = int(prov.get("steps", 0))
    return max(1000, steps if str(prov.get("algo", "")).lower() in OFF_POLICY else steps // 2)


def _silent(*args, **kwargs) -> None:
    pass


# ---- the search space ----------------------------------------------------------------------
def search_space(model: Model, lanes: int) -> list:
    """Per layer: ``keep_max`` (the dense value of ``keep_i``) and whether it is pruned by whole
    columns (see the module doc)."""
    out = []
    for i, p in enumerate(model.params):
        n_out = int(p.weight.shape[0])
        n_in = int(np.prod(p.weight.shape[1:]))
        rows = math.ceil(n_out / lanes)
        whole = rows == 1
        out.append({"layer": i, "whole_columns": whole, "keep_max": n_in if whole else rows,
                    "unit": "columns kept" if whole else "weights kept per lane and column"})
    return out


def threshold_lsb(settings: Settings) -> list:
    """The threshold grid in LSB (the same for every layer: every input format is
    ``act_bits`` wide)."""
    return lsb_multiples(FixedFormat(True, 1, settings.act_bits - 1))


def suggest(trial, space: list, grid: list, levels: int = 0) -> dict:
    """The parameters of an Optuna trial (see the module doc); ``levels``: ladder rungs below
    the dense one (0: no ladder)."""
    params = {}
    if levels:
        params["level"] = trial.suggest_int("level", 0, levels)
    for s in space:
        params[f"keep_{s['layer']}"] = trial.suggest_int(f"keep_{s['layer']}", 1, s["keep_max"],
                                                         log=True)
    for s in space:
        params[f"threshold_{s['layer']}"] = trial.suggest_int(f"threshold_{s['layer']}", 0,
                                                              len(grid) - 1)
    params["weight_bits"] = trial.suggest_int("weight_bits", WEIGHT_BITS[0], WEIGHT_BITS[-1],
                                              step=2)
    params["trim"] = trial.suggest_int("trim", 0, 1)
    return params


def baseline_params(space: list, levels: int = 0, level: int = 0) -> dict:
    """The least reduced trial from ladder level ``level`` (see ``BASELINE_WEIGHT_BITS``)."""
    return {**({"level": int(level)} if levels else {}),
            **{f"keep_{s['layer']}": s["keep_max"] for s in space},
            **{f"threshold_{s['layer']}": 0 for s in space},
            "weight_bits": BASELINE_WEIGHT_BITS, "trim": 0}


def sparsities(space: list, params: dict) -> list:
    """Per-layer sparsity targets of ``params``."""
    return [1.0 - params[f"keep_{s['layer']}"] / s["keep_max"] for s in space]


# ---- one trial (runs on a Dask worker) -----------------------------------------------------
def build_candidate(dense: Model, params: dict, settings: Settings, dense_path=None,
                    ladder=None) -> Model:
    """Prune (from the dense model or the trial's ladder level), clean up, quantize and set the
    thresholds of one trial's parameters."""
    space = search_space(dense, settings.lanes)
    sp = sparsities(space, params)
    base = dense if "level" not in params else ladder[int(params["level"])]
    m = prune_oneshot(base, sp, lanes=settings.lanes, whole_columns=True, source=dense_path)
    m = apply_cleanup(m, settings.lanes, log=_silent)
    for _ in range(TRIM_ROUNDS if params.get("trim") else 0):
        m, dropped = trim_for_lanes(m, settings.lanes)
        if not any(dropped):
            break
        m = apply_cleanup(m, settings.lanes, log=_silent)
    q, _ = quantize_model(m, episodes=settings.quant_episodes, act_bits=settings.act_bits,
                          weight_bits=int(params["weight_bits"]))
    grid = threshold_lsb(settings)
    thr = [grid[int(params[f"threshold_{i}"])] * q.config.in_fmt(i).lsb
           for i in range(len(q.config.layers))]
    return q.replace(config=q.config.with_thresholds(thr))


#: what a trial records (Optuna user attributes), copied by a trial that repeats its parameters
RESULT_KEYS = ("return", "std_return", "returns", "mults", "dense_mults", "reduction",
               "hw_bits", "raw_bits", "dense_bits", "nonzero", "weights", "units", "thresholds",
               "seconds")


def _figures(model: Model, summary: dict, lanes: int) -> dict:
    mem = weight_memory(model, lanes)
    red = summary["reduction"]
    return {"return": summary["mean_return"], "std_return": summary["std_return"],
            "mults": summary["significant_mults_per_step"],
            "dense_mults": summary["dense_mults_per_step"],
            "reduction": red if math.isfinite(red) else None,
            "hw_bits": mem["hw_bits"], "raw_bits": mem["raw_bits"],
            "dense_bits": mem["dense_bits"], "nonzero": mem["nonzero"],
            "weights": mem["weights"],
            "units": [int(ly.n_out if ly.kind == "dense" else ly.out_ch)
                      for ly in model.config.layers],
            "thresholds": [float(ly.threshold) for ly in model.config.layers]}


def run_trial(dense: Model, params: dict, settings: Settings, dense_path=None,
              ladder=None, judge=None, best=None) -> dict:
    """One trial: build the candidate, run the search episodes; its figures. With ``judge``
    the evaluation is sequential: while the trial is not ruled out (:meth:`Judge.ruled_out`)
    and its multiplications beat ``best`` (the fewest of a trial meeting the bound so far;
    None: none yet), the episodes double, up to ``settings.max_episodes`` (seeds continue:
    episode ``i`` always has seed ``search_seed + i``). So an undecided trial gets decided,
    and a trial that would become the best is confirmed on more episodes first."""
    t0 = time.time()
    m = build_candidate(dense, params, settings, dense_path, ladder)
    s = run_episodes(m, settings.episodes, settings.search_seed, mode="fixed", delta=True,
                     progress=False).summary()
    returns = [float(v) for v in s["returns"]]
    steps = s["steps"]
    sig = s["significant_mults_per_step"] * steps
    limit = max(settings.episodes, settings.max_episodes)
    while (judge is not None and len(returns) < limit and not judge.ruled_out(returns)
           and (best is None or sig / max(steps, 1) < best)):
        more = run_episodes(m, min(len(returns), limit - len(returns)),
                            settings.search_seed + len(returns), mode="fixed", delta=True,
                            progress=False).summary()
        returns += [float(v) for v in more["returns"]]
        steps += more["steps"]
        sig += more["significant_mults_per_step"] * more["steps"]
    if len(returns) > settings.episodes:
        per_step = sig / max(steps, 1)
        s = {**s, "returns": returns, "mean_return": float(np.mean(returns)),
             "std_return": float(np.std(returns)), "significant_mults_per_step": per_step,
             "reduction": s["dense_mults_per_step"] / per_step if per_step else float("inf")}
    return {**_figures(m, s, settings.lanes), "returns": returns,
            "seconds": round(time.time() - t0, 3)}


def run_holdout(dense: Model, params: dict, settings: Settings, dense_path, episodes: int,
                ladder=None):
    """A candidate on the held-out seeds: ``(figures with its returns, model)``."""
    m = build_candidate(dense, params, settings, dense_path, ladder)
    s = run_episodes(m, episodes, ACCEPT_SEED, mode="fixed", delta=True,
                     progress=False).summary()
    return {**_figures(m, s, settings.lanes), "returns": s["returns"]}, m


# ---- the study ------------------------------------------------------------------------------
def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(journal, settings: Settings, seed: int, n_startup: int):
    """The study in ``journal`` (created when new); refuses one made with other settings."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    want = dataclasses.asdict(settings)
    n_done = 0
    if STUDY_NAME in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
        old = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        have = old.user_attrs.get("settings") or {}
        if have != want:
            diff = ", ".join(f"{k} {have.get(k)!r} -> {v!r}" for k, v in want.items()
                             if have.get(k) != v)
            raise ValueError(f"--journal {journal} holds a search with other settings ({diff}); "
                             "pass another --journal or delete that file")
        n_done = len(old.trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed + n_done, multivariate=True, constant_liar=True,
            n_startup_trials=n_startup)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, sampler=sampler,
                                directions=["minimize", "minimize"], load_if_exists=True)
    if "settings" not in study.user_attrs:
        study.set_user_attr("settings", want)
    return study


def _finished(study) -> list:
    """Trials that ran to the end: complete, or failed with an error (not interrupted)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def _requeue_interrupted(study, log) -> None:
    """Trials a stopped run left running: marked failed, their parameters queued again."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"rerun_of": t.number})
    if stale:
        log(f"compress: {len(stale)} trial(s) left running by an earlier run queued again: "
            f"{[t.number for t in stale]}")


class Judge:
    """The constraint on the search seeds: the paired lower bound of a trial's returns against
    the dense returns of the same episodes (:func:`deltanet.stats.paired_lower_bound`) must be
    ``>= -allowed``, ``allowed = (1 - budget) * |mean dense return|`` (the mean over the first
    ``episodes`` search seeds, whatever episodes a trial runs). ``dense_returns`` covers every
    seed a sequential trial may reach."""

    def __init__(self, dense_returns, budget: float, confidence: float,
                 episodes: int | None = None):
        self.ref = np.asarray(dense_returns, dtype=np.float64)
        base = self.ref[:episodes] if episodes else self.ref
        self.allowed = (1.0 - budget) * abs(float(base.mean()))
        self.confidence = confidence

    def diffs(self, returns) -> np.ndarray:
        """Paired differences of ``returns`` (episodes 0, 1, ...) to the dense returns."""
        r = np.asarray(returns, dtype=np.float64)
        return r - self.ref[:r.size]

    def lower(self, returns) -> float:
        d = self.diffs(returns)
        return float(d.mean()) if d.size < 2 else paired_lower_bound(d, self.confidence)["lower"]

    def ruled_out(self, returns) -> bool:
        """The matching upper bound (``mean + t sd / sqrt(n)``) is below ``-allowed``: no
        number of episodes would let the trial meet the bound."""
        d = self.diffs(returns)
        if d.size < 2:
            return float(d.mean()) < -self.allowed if d.size else True
        b = paired_lower_bound(d, self.confidence)
        return 2 * b["mean"] - b["lower"] < -self.allowed

    def meets(self, attrs: dict) -> bool:
        return attrs["search_lower"] >= -self.allowed


def _search(study, client, dense_f, dense_path, settings, space, grid, judge, trials,
            progress, log, ladder_f=None) -> int:
    """Run trials until ``trials`` have finished; returns how many ran now."""
    from dask.distributed import wait
    from optuna.trial import TrialState

    todo = max(0, trials - len(_finished(study)))
    if todo == 0:
        return 0
    # parameters asked again (TPE repeats itself as it converges): the trial takes the
    # earlier result instead of running the same deterministic trial again
    seen = {_key(t.params): t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE and "same_as" not in t.user_attrs}
    slots = max(1, sum(client.nthreads().values()))
    pbar = bar(total=todo, desc="compress", unit="trial", progress=progress)
    running = {}
    started = ran = 0
    best = None

    def finish(tr, r, same_as=None):
        nonlocal best
        for k, v in r.items():
            tr.set_user_attr(k, v)
        if same_as is not None:
            tr.set_user_attr("same_as", same_as)
        lower = judge.lower(r["returns"])
        tr.set_user_attr("search_lower", lower)
        tr.set_constraint("return", -judge.allowed - lower)
        frozen = study.tell(tr, [r["mults"], r["hw_bits"]])
        seen.setdefault(_key(frozen.params), frozen)
        if lower >= -judge.allowed and (best is None or r["mults"] < best):
            best = r["mults"]
            pbar.set_postfix_str(f"best {best:.1f} mults/step")

    while started < todo or running:
        while started < todo and len(running) < slots:
            tr = study.ask()
            params = suggest(tr, space, grid, settings.ladder_levels if ladder_f else 0)
            started += 1
            old = seen.get(_key(params))
            if old is not None:
                finish(tr, {k: v for k, v in old.user_attrs.items() if k in RESULT_KEYS},
                       same_as=old.number)
                pbar.update(1)
                continue
            fut = client.submit(run_trial, dense_f, params, settings, dense_path, ladder_f,
                                judge, best, pure=False)
            running[fut] = tr
        if not running:
            continue
        done, _ = wait(list(running), return_when="FIRST_COMPLETED")
        for fut in done:
            tr = running.pop(fut)
            try:
                r = fut.result()
            except Exception as e:  # the trial fails, the search goes on
                tr.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
                study.tell(tr, state=TrialState.FAIL)
            else:
                finish(tr, r)
            ran += 1
            pbar.update(1)
    pbar.close()
    return ran


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def _candidates(study, judge) -> tuple:
    """``(candidates in rank order, {trial: the better-ranked candidate with its figures})``."""
    from optuna.trial import TrialState

    ok = [t for t in study.get_trials(deepcopy=False)
          if t.state == TrialState.COMPLETE and judge.meets(t.user_attrs)
          and "same_as" not in t.user_attrs]
    ok.sort(key=lambda t: (t.user_attrs["mults"], t.user_attrs["hw_bits"],
                           -t.user_attrs["return"], t.number))
    out, twins, first = [], {}, {}
    for t in ok:
        a = t.user_attrs
        sig = (a["mults"], a["hw_bits"], a["return"])
        if sig in first:
            twins[t.number] = first[sig]
        else:
            first[sig] = t.number
            out.append(t)
    return out, twins


def holdout_size(search_diffs, allowed: float, confidence: float, episodes: int) -> int:
    """Held-out episodes for a candidate, sized from its search episodes only (so the held-out
    test stays a fresh one): enough that a candidate that spends half the allowed loss, or its
    search mean if that is worse, passes with probability ``HOLDOUT_POWER``,
    ``n = ((z_conf + z_power) * sd / min(allowed / 2, allowed + min(mean, 0)))^2``, within
    ``episodes .. HOLDOUT_FACTOR * episodes``. Half the allowed loss, not the search mean: a
    candidate is among the best of many trials on the search seeds, so its search mean is
    optimistic (Acrobot's ten candidates: search means about 0, held-out -1.5 to -3.3 of 3.7
    allowed, all rejected on 100-146 episodes). A task whose returns vary much from episode to
    episode (LunarLanderContinuous: paired sd ~65 against an allowed loss of ~14) needs several
    hundred episodes to tell a 5% loss from noise."""
    from statistics import NormalDist

    d = np.asarray(search_diffs, dtype=np.float64)
    if d.size < 2:
        return int(episodes)
    margin = min(allowed / 2.0, allowed + min(float(d.mean()), 0.0))
    sd = float(d.std(ddof=1))
    if margin <= 0 or sd == 0:
        return int(episodes) if sd == 0 else int(HOLDOUT_FACTOR * episodes)
    z = NormalDist().inv_cdf(confidence) + NormalDist().inv_cdf(HOLDOUT_POWER)
    n = math.ceil((z * sd / margin) ** 2)
    return int(min(max(n, episodes), HOLDOUT_FACTOR * episodes))


def _accept(client, dense_f, dense_path, settings, cands, holdout_episodes, confidence,
            budget, log, ladder_f=None, judge=None):
    """Try the candidates in order (batches of the cluster's size), each on its
    :func:`holdout_size` held-out episodes (``holdout_episodes`` without ``judge``); returns
    ``(decisions by trial number, dense held-out returns, accepted (trial, model) or
    None)``."""
    if not cands:
        return {}, None, None
    sizes = {t.number: (holdout_size(judge.diffs(t.user_attrs["returns"]), judge.allowed,
                                     confidence, holdout_episodes)
                        if judge is not None else holdout_episodes) for t in cands}
    ref_f = client.submit(float_returns, dense_f, max(sizes.values()), ACCEPT_SEED, pure=False)
    slots = max(1, sum(client.nthreads().values()))
    decisions, accepted = {}, None
    ref_all = None
    for k in range(0, len(cands), slots):
        batch = cands[k:k + slots]
        futs = [client.submit(run_holdout, dense_f, dict(t.params), settings, dense_path,
                              sizes[t.number], ladder_f, pure=False) for t in batch]
        ref_all = ref_all if ref_all is not None else np.asarray(ref_f.result())
        for t, f in zip(batch, futs):
            try:
                r, model = f.result()
            except Exception as e:
                decisions[t.number] = {"passed": False, "error": f"{type(e).__name__}: {e}"}
                continue
            ref = ref_all[:sizes[t.number]]
            allowed = (1.0 - budget) * abs(float(ref.mean()))
            d = np.asarray(r["returns"]) - ref
            b = paired_lower_bound(d, confidence)
            passed = b["lower"] >= -allowed
            decisions[t.number] = {"passed": bool(passed), "lower": b["lower"],
                                   "mean_diff": b["mean"], "sd_diff": b["sd"], "t": b["t"],
                                   "n": b["n"], "allowed_loss": allowed,
                                   "dense_return": float(ref.mean()),
                                   "return": float(np.mean(r["returns"])),
                                   "mults": r["mults"], "hw_bits": r["hw_bits"]}
            log(f"held-out check of trial {t.number} ({b['n']} episodes): mean return "
                f"{np.mean(r['returns']):.2f} vs dense {ref.mean():.2f}, paired difference "
                f"{b['mean']:+.2f}, {confidence:.0%} lower bound {b['lower']:+.2f} "
                f"{'>=' if passed else '<'} {-allowed:+.2f}: "
                f"{'accepted' if passed else 'rejected'}")
            if passed and accepted is None:
                accepted = (t, model)
        if accepted is not None:
            break
    ref_used = (ref_all[:holdout_episodes].tolist() if ref_all is not None else None)
    return decisions, ref_used, accepted


def margin_ladder(ranked: list, judge, n: int) -> list:
    """Up to ``n`` candidates to try, in order: for margins ``m_k = k / (n - 1)`` of the
    allowed loss (``k = 0 .. n-1``), the best-ranked trial whose search lower bound is at least
    ``-allowed + m_k * allowed`` (each trial once). The cheapest candidates meet the search
    bound by the least; when the held-out episodes cost more than the search episodes did,
    all of them fail together (Pendulum: ten cheapest lost 6.3-6.8 of 7.5 allowed, bounds
    -9.1 to -9.4), so the later tries buy margin in steps rather than more of the same."""
    out, used = [], set()
    for k in range(n):
        need = -judge.allowed + (judge.allowed * k / (n - 1) if n > 1 else 0.0)
        pick = next((t for t in ranked if t.number not in used
                     and t.user_attrs["search_lower"] >= need), None)
        if pick is not None:
            out.append(pick)
            used.add(pick.number)
    return out


# ---- report and plot ------------------------------------------------------------------------
def _status(t, judge, decisions, accepted_no, tried, max_candidates, reruns, twins) -> tuple:
    """(status, reason) of a trial for the report."""
    from optuna.trial import TrialState

    if t.state == TrialState.FAIL:
        if "error" in t.user_attrs:
            return "failed", t.user_attrs["error"]
        again = reruns.get(t.number)
        return "interrupted", ("the run stopped before it finished"
                               + (f"; its parameters ran again as trial {again}"
                                  if again is not None else ""))
    if t.state != TrialState.COMPLETE:
        return t.state.name.lower(), ""
    a = t.user_attrs
    if "same_as" in a:
        return "repeat", f"the parameters of trial {a['same_as']} again: its result, not run"
    if not judge.meets(a):
        return "rejected", (f"search: lower bound {a['search_lower']:+.2f} of the paired "
                            f"difference < {-judge.allowed:+.2f} (mean return {a['return']:.2f})")
    if t.number in twins:
        return "not tried", f"the figures of candidate {twins[t.number]}: in effect that model"
    d = decisions.get(t.number)
    if d is not None:
        if "error" in d:
            return "rejected", f"held-out evaluation failed: {d['error']}"
        rel = ">=" if d["passed"] else "<"
        why = (f"held-out ({d['n']} paired episodes): mean difference {d['mean_diff']:+.2f}, "
               f"lower bound {d['lower']:+.2f} {rel} {-d['allowed_loss']:+.2f}")
        if t.number == accepted_no:
            return "accepted", why
        if d["passed"]:
            return "rejected", why + f"; passes, but trial {accepted_no} ranks first"
        return "rejected", why
    if accepted_no is not None:
        return "not tried", ("meets the search bound; ranks after the accepted trial "
                             f"{accepted_no}")
    if tried >= max_candidates:
        return "not tried", (f"meets the search bound; not among the {max_candidates} "
                             "candidates tried")
    return "not tried", "meets the search bound"


def _kbit(bits) -> str:
    return f"{bits / 1000:.1f}"


def write_report(path, rows: list, head: list) -> None:
    lines = list(head)
    lines += ["", "## Every trial", "",
              "keep: Ln: the pruning-ladder level the trial starts from (with fine-tuning); "
              "k/K weights kept per lane and column of K (kc/K: k of K whole columns), one-shot "
              "on top of the level; "
              "thresholds: LSB of each layer's input format; return and multiplications on the "
              "search seeds.", "",
              "| trial | keep per layer (sparsity) | thresholds (LSB) | weight bits | return | "
              "significant mults/step | reduction | weight memory (kbit) | status | reason |",
              "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        def num(key, f):
            v = r.get(key)
            return f(v) if v is not None else "-"

        lines.append(
            f"| {r['trial']} | {r['keep_text']} | {r['thr_text']} | {r['weight_bits']} | "
            f"{num('return', lambda v: f'{v:.2f}')} | {num('mults', lambda v: f'{v:.1f}')} | "
            f"{num('reduction', lambda v: f'{v:.1f}x')} | {num('hw_bits', _kbit)} | "
            f"{r['status']} | {r['reason'].replace('|', '/')} |")
    write_text_atomic(path, "\n".join(lines) + "\n")


def plot_pareto(path, rows: list, target: float, dense_return: float, title: str) -> None:
    """Search return vs significant multiplications per step (log), coloured by weight memory;
    the Pareto front (fewer multiplications, higher return), the target and the accepted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("mults")]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if pts:
        sc = ax.scatter([r["mults"] for r in pts], [r["return"] for r in pts], s=18,
                        c=[r["hw_bits"] / 1000 for r in pts], cmap="viridis", alpha=0.8,
                        label="trials")
        fig.colorbar(sc, ax=ax, label="weight memory (kbit, core words)")
        rej = [r for r in pts if r["status"] == "rejected" and r["reason"].startswith("held")]
        if rej:
            ax.scatter([r["mults"] for r in rej], [r["return"] for r in rej], s=80,
                       facecolors="none", edgecolors="tab:orange", label="held-out: rejected")
        acc = [r for r in pts if r["status"] == "accepted"]
        if acc:
            ax.scatter([r["mults"] for r in acc], [r["return"] for r in acc], s=200,
                       marker="*", color="tab:red", label="accepted")
        front = pareto_front([(1.0 / r["mults"], r["return"]) for r in pts])
        if front:
            ax.plot([1.0 / x for x, _ in front], [y for _, y in front], "k--", lw=1,
                    label="Pareto front")
        ax.set_xscale("log")
    ax.axhline(target, color="tab:red", lw=1, ls=":", label=f"target {target:.1f}")
    ax.axhline(dense_return, color="grey", lw=1, ls="-.", label=f"dense {dense_return:.1f}")
    ax.set_xlabel("significant multiplications per step (fixed point, delta)")
    ax.set_ylabel("mean return on the search seeds")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    write_figure_atomic(path, fig)


def _rows(study, space, grid, judge, decisions, accepted_no, tried, max_candidates,
          twins) -> list:
    trials = study.get_trials(deepcopy=False)
    reruns = {t.user_attrs["rerun_of"]: t.number for t in trials if "rerun_of" in t.user_attrs}
    rows = []
    for t in trials:
        p = t.params
        status, reason = _status(t, judge, decisions, accepted_no, tried, max_candidates,
                                 reruns, twins)
        keep = [p.get(f"keep_{s['layer']}") for s in space]
        sp = [1.0 - k / s["keep_max"] if k is not None else None for k, s in zip(keep, space)]
        thr = [grid[p[f"threshold_{s['layer']}"]] if f"threshold_{s['layer']}" in p else None
               for s in space]
        a = t.user_attrs
        rows.append({
            "trial": t.number, "status": status, "reason": reason, "params": dict(p),
            "sparsity_target": sp, "thresholds_lsb": thr,
            "weight_bits": p.get("weight_bits"),
            "level": p.get("level"),
            "keep_text": (f"L{p['level']}: " if "level" in p else "") + " ".join(
                f"{k}/{s['keep_max']}{'c' if s['whole_columns'] else ''}"
                f" ({v:.2f})" if k is not None else "-" for k, s, v in zip(keep, space, sp))
            + (" trim" if p.get("trim") else ""),
            "thr_text": " ".join(str(v) for v in thr),
            **{k: a.get(k) for k in ("return", "std_return", "mults", "reduction", "hw_bits",
                                     "raw_bits", "nonzero", "units", "seconds")},
            **({"holdout": decisions[t.number]} if t.number in decisions else {}),
        })
    return rows


# ---- the pruning ladder -----------------------------------------------------------------------
def ladder_models(settings: Settings, dense_path, folder, progress: bool, log) -> list:
    """The fine-tuned policies of the pruning ladder (:func:`deltanet.prune.prune_ladder`),
    built into ``folder`` (atomically) or read back from it when it was built with the same
    settings."""
    import json

    from deltanet.pysim import load_model
    from deltanet.pysim.atomic import atomic_dir

    folder = Path(folder)
    want = {"model": settings.model, "lanes": settings.lanes,
            "levels": settings.ladder_levels, "finetune_steps": settings.finetune_steps,
            "budget": settings.budget, "fine_tuning": LADDER_METHOD}
    index = folder / "ladder.json"
    if index.exists():
        have = json.loads(index.read_text())
        files = [folder / f for f in have.get("files", [])]
        if have.get("settings") == want and files and all(f.exists() for f in files):
            log(f"compress: pruning ladder of {len(files)} levels read from {folder}")
            return [load_model(f) for f in files]
    t0 = time.time()
    with atomic_dir(folder) as tmp:
        paths = prune_ladder(dense_path, tmp, lanes=settings.lanes,
                             levels=settings.ladder_levels,
                             finetune_steps=settings.finetune_steps, budget=settings.budget,
                             progress=progress, log=log)
        (Path(tmp) / "ladder.json").write_text(json.dumps(
            {"settings": want, "files": [p.name for p in paths],
             "seconds": round(time.time() - t0, 1)}, indent=1) + "\n")
    return [load_model(folder / p.name) for p in paths]


# ---- the command ------------------------------------------------------------------------------
def compress(dense: Model, dense_path, out, *, budget: float = 0.95, lanes: int = 4,
             trials: int = 1000, episodes: int = 30, holdout_episodes: int = 100,
             confidence: float = 0.95, candidates: int = 10, finetune_steps: int = 0,
             scheduler: str | None = None, workers: int = 2, journal=None, seed: int = 0,
             progress: bool = True, log=print) -> dict:
    """Search, accept, write ``out`` (when a candidate is accepted), the report and the plot;
    returns the result (also for ``--json``): ``accepted`` is None when no candidate passed."""
    if not 0 < budget <= 1:
        raise ValueError(f"--budget must lie in (0, 1], got {budget}")
    if episodes < 1 or holdout_episodes < 2 or trials < 1 or candidates < 1:
        raise ValueError("--episodes, --trials, --candidates must be >= 1 and "
                         "--holdout-episodes >= 2")
    t0 = time.time()
    out = Path(out)
    files = outputs(out)
    journal = Path(journal) if journal else files["journal"]
    if finetune_steps > 0 and dense_path is None:
        raise ValueError("fine-tuning (the pruning ladder) needs the dense model's path, "
                         "beside which its SB3 model lies")
    settings = Settings(model=str(dense.meta.get("checksum")), budget=float(budget),
                        lanes=int(lanes), episodes=int(episodes),
                        max_episodes=SEQUENTIAL_FACTOR * int(episodes),
                        finetune_steps=int(finetune_steps),
                        ladder_levels=LADDER_LEVELS if finetune_steps > 0 else 0,
                        confidence=float(confidence))
    space = search_space(dense, lanes)
    grid = threshold_lsb(settings)
    study = open_study(journal, settings, seed, n_startup=min(20, max(5, trials // 10)))
    _requeue_interrupted(study, log)
    if not study.trials:
        for k in range(min(settings.ladder_levels + 1, trials)):
            study.enqueue_trial(baseline_params(space, settings.ladder_levels, k),
                                user_attrs={"baseline": True})
    ref = study.user_attrs.get("dense_search_returns")
    if ref is None:
        ref = float_returns(dense, settings.max_episodes, settings.search_seed).tolist()
        study.set_user_attr("dense_search_returns", ref)
    ref_mean = float(np.mean(ref[:episodes]))
    target = target_return(ref_mean, budget)
    n_before = len(_finished(study))
    log(f"compress: dense float return {ref_mean:.2f} over {episodes} search episodes, target "
        f">= {target:.2f}; {max(0, trials - n_before)} trials to run, {n_before} in {journal}")
    weak = unsolved_note(dense.meta.get("env_id"), ref_mean)
    if weak:
        log(weak)
    dense_path = str(dense_path) if dense_path is not None else None
    ladder = (ladder_models(settings, dense_path, files["ladder"], progress, log)
              if settings.ladder_levels else None)
    with dask_client(scheduler, workers) as client:
        dense_f = client.scatter(dense, broadcast=True)
        ladder_f = client.scatter(ladder, broadcast=True) if ladder else None
        judge = Judge(ref, budget, confidence, episodes)
        ran = _search(study, client, dense_f, dense_path, settings, space, grid, judge, trials,
                      progress, log, ladder_f)
        ranked, twins = _candidates(study, judge)
        cands = margin_ladder(ranked, judge, candidates)
        n_meet = len(ranked) + len(twins)
        log(f"compress: {n_meet} of {len(study.trials)} trials meet the search bound "
            f"({len(ranked)} distinct); held-out checks of up to {len(cands)} "
            f"({holdout_episodes} to {HOLDOUT_FACTOR * holdout_episodes} paired episodes each, "
            "sized from its search episodes)")
        decisions, ref_hold, accepted = _accept(client, dense_f, dense_path, settings, cands,
                                                holdout_episodes, confidence, budget, log,
                                                ladder_f, judge)
    acc_no = accepted[0].number if accepted else None
    rows = _rows(study, space, grid, judge, decisions, acc_no, len(decisions), candidates,
                 twins)
    env_id = dense.meta.get("env_id")
    dense_mults = float(trained_mults(dense).sum())
    result = {
        "model": str(dense_path), "env_id": env_id, "out": str(out) if accepted else None,
        "report": str(files["report"]), "plot": str(files["plot"]), "journal": str(journal),
        "rule": RULE, "budget": budget, "confidence": confidence, "lanes": lanes,
        "settings": dataclasses.asdict(settings), "seed": seed,
        "search": {"episodes": episodes, "seed": settings.search_seed,
                   "dense_return": ref_mean, "target": target, "allowed_loss": judge.allowed},
        "holdout": {"episodes": holdout_episodes, "seed": ACCEPT_SEED,
                    "dense_return": float(np.mean(ref_hold)) if ref_hold else None},
        "space": {"layers": space, "threshold_lsb": grid, "weight_bits": list(WEIGHT_BITS)},
        "dense_mults_per_step": dense_mults,
        "trials_run_now": ran, "trials": rows, "accepted": None,
        "seconds": round(time.time() - t0, 1),
    }
    if accepted:
        t, model = accepted
        row = next(r for r in rows if r["trial"] == t.number)
        d = decisions[t.number]
        mem = weight_memory(model, lanes)
        result["accepted"] = {
            "trial": t.number, "params": dict(t.params), "level": t.params.get("level"),
            "sparsity_target": row["sparsity_target"], "thresholds_lsb": row["thresholds_lsb"],
            "thresholds": [float(ly.threshold) for ly in model.config.layers],
            "weight_bits": t.params["weight_bits"], "search_return": row["return"],
            "holdout": d, "mults": d["mults"],
            "reduction": dense_mults / d["mults"] if d["mults"] else None,
            "weight_memory": {k: mem[k] for k in ("dense_bits", "raw_bits", "hw_bits",
                                                   "nonzero", "weights", "raw_reduction",
                                                   "hw_reduction")},
        }
        meta = dict(model.meta)
        prov = dict(meta.get("provenance", {}))
        prov["compression"] = {"rule": RULE, "budget": budget, "confidence": confidence,
                               "lanes": lanes, "journal": str(journal),
                               "trials": len(study.trials),
                               **{k: v for k, v in result["accepted"].items()
                                  if k != "weight_memory"}}
        meta["provenance"] = prov
        save_model(model.replace(meta=meta), out)
    write_report(files["report"], rows, _head(result, space, dense))
    plot_pareto(files["plot"], rows, target, ref_mean,
                f"{env_id}: {len(rows)} trials, budget {budget:g} (target {target:.1f})")
    return result


def _head(result: dict, space: list, dense: Model) -> list:
    s, h, a = result["search"], result["holdout"], result["accepted"]
    layers = ", ".join(f"layer {x['layer']}: 1..{x['keep_max']} {x['unit']}" for x in space)
    lines = [
        f"# deltanet compress: {result['env_id']} ({result['model']})", "",
        f"- budget {result['budget']:g}: on the search episodes ({s['episodes']}, seeds "
        f"{s['seed']}+; dense float mean {s['dense_return']:.2f}) a trial's "
        f"{result['confidence']:.0%} lower bound of the mean paired return difference must be "
        f">= {-s['allowed_loss']:+.2f} (mean target {s['target']:.2f})",
        f"- search space: keep per layer ({layers}; log scale), delta threshold per layer "
        f"(grid index into {result['space']['threshold_lsb']} LSB of the layer's input format), "
        f"weight bits {result['space']['weight_bits']}; pruning lane-balanced for "
        f"{result['lanes']} lanes, whole columns where a layer has at most one row per lane"
        + (f"; from one of {result['settings']['ladder_levels'] + 1} levels of a pruning "
           f"ladder fine-tuned for {result['settings']['finetune_steps']:,} env steps in all"
           if result["settings"]["ladder_levels"] else "; one-shot from the dense model "
           "(no fine-tuning)"),
        f"- objectives: significant multiplications per step (min), weight-memory bits of the "
        f"{result['lanes']}-lane core (min, secondary); constraint: that bound",
        f"- acceptance rule ({result['confidence']:.0%}): {RULE}",
        f"- trials: {len(result['trials'])} in {result['journal']} ({result['trials_run_now']} "
        f"run now), {result['seconds']:.0f} s",
        "",
    ]
    if a:
        wm = a["weight_memory"]
        d = a["holdout"]
        lines += [
            f"## Accepted: trial {a['trial']} -> {result['out']}", "",
            f"- significant multiplications per step: {a['mults']:.1f} (held-out) vs "
            f"{result['dense_mults_per_step']:.0f} dense: **{a['reduction']:.1f}x fewer**",
            f"- weight memory: {wm['nonzero']} of {wm['weights']} weights kept; "
            f"{wm['raw_bits']:,} bits raw ({wm['raw_reduction']:.1f}x below dense float32), "
            f"{wm['hw_bits']:,} bits in the core's words ({wm['hw_reduction']:.1f}x)",
            f"- held-out return {d['return']:.2f} vs dense {d['dense_return']:.2f} over "
            f"{d['n']} paired episodes (seeds {h['seed']}+): mean difference "
            f"{d['mean_diff']:+.2f}, sd {d['sd_diff']:.2f}, lower bound {d['lower']:+.2f} >= "
            f"{-d['allowed_loss']:+.2f} (allowed loss)",
            (f"- pruning-ladder level {a['level']}, then " if a.get("level") is not None
             else "- ")
            + f"sparsity targets {[round(v, 3) for v in a['sparsity_target']]}, thresholds "
            f"{a['thresholds_lsb']} LSB, {a['weight_bits']}-bit weights",
        ]
    else:
        lines += ["## No candidate accepted", "",
                  "No trial met the bound on the search seeds and then passed the held-out "
                  "rule; nothing was written but this report and the plot. More --trials, "
                  "a lower --budget or --finetune-steps may help."]
    return lines

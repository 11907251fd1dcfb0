"""``deltanet compress``: a tiny search on the bundled dense CartPole agent, its acceptance rule
checked independently, the report, resuming from the journal, and the statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from deltanet.pysim import load_model

from deltanet import bundled_model
from deltanet.cli import main
from deltanet.compress import (
    ACCEPT_SEED,
    Settings,
    open_study,
    search_space,
    suggest,
    threshold_lsb,
)
from deltanet.rollout import run_episodes
from deltanet.stats import paired_lower_bound, t_cdf, t_quantile

DENSE = str(bundled_model("cartpole_dense"))
#: a tiny search: 3 trials (the first is the dense baseline), 3 search episodes
TINY = ["--trials", "3", "--episodes", "3", "--holdout-episodes", "12", "--workers", "1",
        "--no-progress"]


@pytest.mark.parametrize("p, df, want", [(0.95, 1, 6.3138), (0.95, 2, 2.9200),
                                         (0.95, 9, 1.8331), (0.95, 29, 1.6991),
                                         (0.975, 10, 2.2281), (0.99, 99, 2.3646),
                                         (0.95, 10**7, 1.6449)])
def test_t_quantile_matches_the_tables(p, df, want):
    assert t_quantile(p, df) == pytest.approx(want, abs=1e-4)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    assert t_quantile(1 - p, df) == pytest.approx(-want, abs=1e-4)


def test_paired_lower_bound():
    d = [1.0, -2.0, 3.0, 0.5, -0.5]
    b = paired_lower_bound(d, 0.95)
    sd = np.std(d, ddof=1)
    assert b["lower"] == pytest.approx(np.mean(d) - t_quantile(0.95, 4) * sd / math.sqrt(5))
    assert paired_lower_bound([2.0, 2.0], 0.95)["lower"] == 2.0  # no spread: the mean
    with pytest.raises(ValueError):
        paired_lower_bound([1.0])


def test_holdout_size_follows_the_spread_of_the_search_episodes():
    from deltanet.compress import HOLDOUT_FACTOR, holdout_size

    rng = np.random.default_rng(0)
    quiet = rng.normal(0.0, 0.5, 30)
    assert holdout_size(quiet, 10.0, 0.95, 100) == 100  # a quiet task keeps the minimum
    z = 1.6448536 + 0.8416212
    for noisy in (rng.normal(-4.0, 30.0, 30), rng.normal(-10.0, 30.0, 30)):
        n = holdout_size(noisy, 13.0, 0.95, 100)
        d = noisy
        margin = min(13.0 / 2, 13.0 + min(d.mean(), 0.0))  # half the allowed loss at most
        want = math.ceil((z * d.std(ddof=1) / margin) ** 2)
        assert n == min(max(want, 100), HOLDOUT_FACTOR * 100) and n > 100
    assert holdout_size(rng.normal(-20.0, 40.0, 30), 13.0, 0.95, 100) == HOLDOUT_FACTOR * 100
    assert holdout_size([1.0], 13.0, 0.95, 100) == 100


def test_ladder_recovery_check_is_paired_and_lenient_by_one_standard_error():
    from deltanet.prune import recovered

    ref = np.array([100.0, 110.0, 90.0, 100.0])
    assert recovered(ref, ref, 0.95) == (True, 0.0)
    assert not recovered(ref - 50.0, ref, 0.95)[0]
    d = np.array([-9.0, -3.0, -6.0, -6.0])  # mean -6, se sqrt(6/4) = 1.22; allowed 5
    assert recovered(ref + d, ref, 0.95)[0]
    assert not recovered(ref + d - 1.0, ref, 0.95)[0]


def test_judge_rules_out_only_trials_no_episodes_could_save():
    from deltanet.compress import Judge

    ref = np.zeros(120)
    j = Judge(ref + 100.0, 0.95, 0.95, episodes=30)
    assert j.allowed == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    noisy = 100.0 + rng.normal(0.0, 20.0, 30)  # mean ~0 difference, bound far below -5
    assert j.lower(noisy) < -j.allowed and not j.ruled_out(noisy)  # undecided
    assert not j.ruled_out(np.full(30, 100.0))  # met: more episodes confirm it
    assert j.ruled_out(np.full(30, 50.0))  # clearly failed
    assert j.ruled_out([90.0]) and not j.ruled_out([99.0])


def test_sequential_trial_runs_more_episodes_while_not_ruled_out():
    """A trial the judge cannot rule out doubles its episodes up to the cap, on the next seeds;
    its figures are those of all its episodes (the same as one run of that many)."""
    from deltanet.compress import Judge, baseline_params, run_trial

    dense = load_model(DENSE)
    settings = Settings(model="x", budget=0.95, lanes=4, episodes=3, max_episodes=12)
    params = baseline_params(search_space(dense, 4))

    class Always(Judge):
        def ruled_out(self, returns):
            return False

    j = Always(np.full(12, 500.0), 0.95, 0.95, 3)
    r = run_trial(dense, params, settings, judge=j)
    assert len(r["returns"]) == 12
    one = run_trial(dense, params, dataclasses_replace(settings, episodes=12))
    assert r["returns"] == one["returns"] and r["mults"] == pytest.approx(one["mults"])
    assert len(run_trial(dense, params, settings, judge=j, best=0.0)["returns"]) == 3


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def _run(*argv):
    return main(["compress", *[str(a) for a in argv]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny search; returns (folder, result JSON)."""
    d = tmp_path_factory.mktemp("compress")
    rc = _run("--model", DENSE, "--out", d / "cp.npz", "--json", d / "r.json", *TINY)
    assert rc == 0
    return d, json.loads((d / "r.json").read_text())


def test_tiny_search_writes_an_accepted_model(tiny):
    d, res = tiny
    for name in ("cp.npz", "cp.md", "cp.pareto.png", "cp.journal"):
        assert (d / name).is_file(), name
    assert (d / "cp.pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a = res["accepted"]
    assert a is not None and res["out"] == str(d / "cp.npz")
    m = load_model(d / "cp.npz")
    comp = m.meta["provenance"]["compression"]
    assert comp["trial"] == a["trial"] and comp["budget"] == 0.95
    assert "quantization" in m.meta["provenance"]
    assert [ly.threshold for ly in m.config.layers] == pytest.approx(a["thresholds"])
    # the rule, checked independently on the written model: paired held-out episodes, as
    # many as the candidate's search episodes called for (12 .. 8 x 12)
    n = a["holdout"]["n"]
    assert 12 <= n <= 96
    dense = run_episodes(load_model(DENSE), n, ACCEPT_SEED, mode="float", delta=False,
                         progress=False).returns
    cand = run_episodes(m, n, ACCEPT_SEED, mode="fixed", delta=True, progress=False).returns
    diff = cand - dense
    lower = diff.mean() - t_quantile(0.95, n - 1) * diff.std(ddof=1) / math.sqrt(n)
    assert lower >= -(1 - 0.95) * abs(dense.mean())
    assert a["holdout"]["lower"] == pytest.approx(lower)


def test_report_lists_every_trial(tiny):
    d, res = tiny
    text = (d / "cp.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == list(range(3))
    assert len(res["trials"]) == 3
    statuses = {r["status"] for r in res["trials"]}
    assert "accepted" in statuses
    assert statuses <= {"accepted", "rejected", "not tried", "repeat"}
    assert "lower confidence bound" in text and "Every trial" in text
    for r in res["trials"]:
        assert r["reason"], r


def test_resume_runs_only_the_missing_trials(tmp_path):
    out = tmp_path / "cp.npz"
    js = tmp_path / "r.json"
    args = ["--model", DENSE, "--out", out, "--json", js, *TINY]
    assert _run(*args) == 0
    first = json.loads(js.read_text())
    assert first["trials_run_now"] == 3
    # the same budget again: nothing to run, the same trials
    assert _run(*args) == 0
    again = json.loads(js.read_text())
    assert again["trials_run_now"] == 0
    keep = ("trial", "params", "return", "mults")
    assert ([{k: r[k] for k in keep} for r in again["trials"]]
            == [{k: r[k] for k in keep} for r in first["trials"]])
    # a trial left running by a stopped run: marked interrupted, its parameters run again
    dense = load_model(DENSE)
    settings = Settings(**first["settings"])
    study = open_study(tmp_path / "cp.journal", settings, seed=0, n_startup=5)
    stale = study.ask()
    params = suggest(stale, search_space(dense, 4), threshold_lsb(settings))
    assert _run(*with_trials(args, 4)) == 0
    res = json.loads(js.read_text())
    assert res["trials_run_now"] == 1
    rows = {r["trial"]: r for r in res["trials"]}
    assert rows[stale.number]["status"] == "interrupted"
    rerun = [r for n, r in rows.items() if n > stale.number]
    assert len(rerun) == 1 and rerun[0]["params"] == params
    assert rerun[0]["status"] in ("accepted", "rejected", "not tried", "repeat")


def with_trials(args, n):
    args = list(args)
    args[args.index("--trials") + 1] = str(n)
    return args


def test_other_settings_refuse_the_journal(tiny, capsys):
    d, _ = tiny
    rc = _run("--model", DENSE, "--out", d / "cp.npz", *with_trials(TINY, 3), "--budget", "0.9")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert "other settings" in err and "budget 0.95 -> 0.9" in err


def test_per_layer_sparsities_prune_each_layer_to_its_own_target():
    from deltanet.prune import check_balance, compute_masks, prune_oneshot

    dense = load_model(DENSE)
    m = prune_oneshot(dense, [1 - 8 / 16, 1 - 1 / 16, 1 - 8 / 64], lanes=4, whole_columns=True)
    nnz = [int(p.mask.sum()) for p in m.params]
    assert nnz == [4 * 8 * 4, 64 * 1 * 4, 8 * 2]  # columns x kept per lane x lanes; 8 columns
    for p in m.params:
        assert check_balance(p.mask, 4)[0]
    with pytest.raises(ValueError, match="3 layers"):
        compute_masks([p.weight for p in dense.params], [0.5, 0.5])


def test_pruning_ladder_is_built_once_and_searched(tmp_path):
    """With the SB3 model beside the dense artifact, compress fine-tunes by default: one
    pruning ladder (half the training steps of a PPO agent), its levels written to
    OUT.ladder/ and reused by a re-run; every trial starts from a level, and the accepted
    model's pruning comes from it (a barely trained agent: the path is checked, not the
    reduction)."""
    from deltanet.compress import LADDER_LEVELS
    from deltanet.prune import check_balance

    agent = tmp_path / "agent.npz"
    assert main(["train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "1000",
                 "--eval-episodes", "0", "--out", str(agent), "--no-progress"]) == 0
    js = tmp_path / "r.json"
    args = ["--model", agent, "--out", tmp_path / "x.npz", "--json", js, *with_trials(TINY, 2)]
    rc = _run(*args)
    res = json.loads(js.read_text())
    steps = load_model(agent).meta["provenance"]["steps"]
    assert res["settings"]["finetune_steps"] == max(1000, steps // 2)
    assert res["settings"]["ladder_levels"] == LADDER_LEVELS
    ladder = tmp_path / "x.ladder"
    files = json.loads((ladder / "ladder.json").read_text())["files"]
    assert files == [f"level_{k}.npz" for k in range(LADDER_LEVELS + 1)]
    nnz, used = [], []
    for f in files:
        m = load_model(ladder / f)
        assert all(check_balance(p.mask, 4)[0] for p in m.params)
        nnz.append(sum(int(p.mask.sum()) for p in m.params))
        st = m.meta["provenance"]["pruning"]
        assert isinstance(st["recovered"], bool) and "check_return" in st
        used.append(st["level_steps"])
    # the fine-tuning steps follow recovery, within the budget
    assert sum(used) <= res["settings"]["finetune_steps"] + 2048
    assert nnz == sorted(nnz, reverse=True) and nnz[0] > nnz[-1]  # sparser down the ladder
    assert all(r["level"] is not None and r["status"] != "failed" for r in res["trials"])
    # the anchors first: the least reduced trial of every level, in ladder order
    assert [r["level"] for r in res["trials"]] == [0, 1]
    assert all(r["params"]["weight_bits"] == 12 and r["params"]["trim"] == 0
               for r in res["trials"])
    assert rc in (0, 1)
    if rc == 0:
        prov = load_model(tmp_path / "x.npz").meta["provenance"]
        assert prov["pruning"]["source_checksum"] is not None
    stamp = (ladder / "level_0.npz").stat().st_mtime_ns
    assert _run(*args[:-len(TINY) - 2], "--json", js, *with_trials(TINY, 3)) in (0, 1)
    assert (ladder / "level_0.npz").stat().st_mtime_ns == stamp  # read back, not rebuilt


def test_distillation_recovers_a_pruned_policy_towards_the_dense_one(tmp_path):
    """The ladder's distillation: after one-shot pruning of a trained agent to a high sparsity,
    ``Distiller.recover`` brings the pruned network's outputs closer to the dense network's on
    the states the pruned policy visits, and every pruned weight stays zero."""
    import torch

    from deltanet.prune import Distiller, _finetune_session, balanced_mask

    agent = tmp_path / "agent.npz"
    assert main(["train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "2048",
                 "--eval-episodes", "0", "--out", str(agent), "--no-progress"]) == 0
    ss = _finetune_session(agent)
    dist = Distiller(ss, seed=7)
    masks = []
    for m in ss.linears:
        w = m.weight.detach().numpy()
        mk = torch.as_tensor(balanced_mask(w, 0.9, 4, w.shape[0] <= 4))
        masks.append(mk)

    def apply():
        with torch.no_grad():
            for m, mk in zip(ss.linears, masks):
                m.weight.mul_(mk)

    apply()
    dist.collect(1024)
    x = dist._tensor(np.concatenate([x for x, _ in dist.states]))
    with torch.no_grad():
        before = float(dist.loss(dist.student(x), dist.teacher(x)))
    dist.train(apply, steps=300)
    with torch.no_grad():
        after = float(dist.loss(dist.student(x), dist.teacher(x)))
    dist.close()
    ss.env.close()
    assert dist.centred  # CartPole's argmax: the loss ignores an offset common to the outputs
    y = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert float(dist.loss(y + torch.tensor([[3.0], [-5.0]]), y)) == 0.0
    assert float(dist.loss(y * 2, y)) > 0.0
    assert after < 0.5 * before
    for m, mk in zip(ss.linears, masks):
        assert not m.weight.detach()[~mk].any()  # the pruned weights stay pruned
        assert m.weight.detach()[mk].ne(0).any()

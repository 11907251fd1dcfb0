"""Atari glue: whole-game eval env, Nature-DQN export, conv pruning, pixel quantization,
training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from deltanet.pysim import DeltaNetwork, load_model, save_model

from deltanet import MODELS_DIR
from deltanet.atari import (
    export_dqn_cnn,
    make_eval_env,
    make_train_env,
    quantize_atari,
    record_frames,
)
from deltanet.envs import make_env
from deltanet.prune import check_balance, prune_oneshot
from deltanet.train import check_env_algo, hyperparams, latest_checkpoint, train

GAME = "BreakoutNoFrameskip-v4"


@pytest.fixture(scope="module")
def sb3_dqn():
    from stable_baselines3 import DQN

    env = make_train_env(GAME, 1, 0)
    model = DQN("CnnPolicy", env, buffer_size=1000, learning_starts=10**9, device="cpu",
                seed=0)
    yield model
    env.close()


@pytest.fixture(scope="module")
def frames():
    env = make_eval_env(GAME, 200)
    obs, _ = env.reset(seed=3)
    out = [obs]
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs, *_ = env.step(int(rng.integers(4)))
        out.append(obs)
    env.close()
    return np.stack(out)


def test_eval_env_is_a_flat_chw_frame_stack():
    env = make_env(GAME, 0)()
    obs, _ = env.reset(seed=1)
    assert obs.shape == (4 * 84 * 84,) and obs.dtype == np.uint8
    prev = obs.reshape(4, 84, 84)
    obs, *_ = env.step(1)
    cur = obs.reshape(4, 84, 84)
    np.testing.assert_array_equal(cur[:3], prev[1:])  # the stack shifts by one frame
    env.close()


def test_export_equals_the_sb3_q_network(sb3_dqn, frames):
    model = export_dqn_cnn(sb3_dqn, GAME)
    kinds = [(ly.kind, ly.n_in, ly.n_out) for ly in model.config.layers]
    assert kinds == [("conv2d", 28224, 12800), ("conv2d", 12800, 5184), ("conv2d", 5184, 3136),
                     ("dense", 3136, 512), ("dense", 512, 4)]
    net = DeltaNetwork(model, mode="float", delta=False, batch=len(frames))
    q = net.step(net.quantize_obs(frames.astype(np.float64)))
    with torch.no_grad():
        ref = sb3_dqn.policy.q_net(torch.as_tensor(
            frames.reshape(-1, 4, 84, 84).astype(np.float32))).numpy()
    np.testing.assert_allclose(q, ref, rtol=1e-4, atol=1e-6)  # float twin: float tolerance
    np.testing.assert_array_equal(np.argmax(q, 1), np.argmax(ref, 1))


def test_conv_pruning_is_lane_balanced(sb3_dqn):
    model = prune_oneshot(export_dqn_cnn(sb3_dqn, GAME), 0.79, lanes=4)
    for i, p in enumerate(model.params):
        m = np.asarray(p.mask).reshape(p.mask.shape[0], -1)
        ok, why = check_balance(m, 4)
        assert ok, f"layer {i}: {why}"
        if i < 4:  # layers with >= 4 rows per lane reach the target closely
            assert abs((1 - m.mean()) - 0.79) < 0.05


def test_quantized_pixels_are_exact(sb3_dqn, frames):
    model = export_dqn_cnn(sb3_dqn, GAME)
    q = quantize_atari(model, frames[::4])
    net = DeltaNetwork(q, mode="fixed", batch=len(frames))
    np.testing.assert_array_equal(net.quantize_obs(frames.astype(np.float64)),
                                  frames.astype(np.int64))
    # the fixed-point network (1/255 folded into conv1) stays close to the float one
    a = DeltaNetwork(model, mode="float", delta=False, batch=len(frames))
    b = DeltaNetwork(q, mode="fixed", delta=False, batch=len(frames))
    qa = a.step(a.quantize_obs(frames.astype(np.float64)))
    qb = b.outputs_float(b.step(b.quantize_obs(frames.astype(np.float64))))
    assert np.abs(qa - qb).max() < 0.05 * np.abs(qa).max()
    # bit-accurate delta == bit-accurate dense on every step (wrapping accumulators)
    d = DeltaNetwork(q, mode="fixed", delta=True)
    e = DeltaNetwork(q, mode="fixed", delta=False)
    for f in frames[:6]:
        x = d.quantize_obs(f[None].astype(np.float64))
        np.testing.assert_array_equal(d.step(x), e.step(x))


def test_record_frames_shape(sb3_dqn):
    fr = record_frames(export_dqn_cnn(sb3_dqn, GAME), episodes=1, max_steps=20, max_frames=10)
    assert fr.shape == (10, 28224) and fr.dtype == np.uint8


def test_atari_trains_with_dqn_only():
    with pytest.raises(ValueError, match="DQN"):
        check_env_algo(GAME, "ppo")
    with pytest.raises(ValueError, match="unknown Atari game"):
        check_env_algo("NoSuchGameNoFrameskip-v4", "dqn")
    hp = hyperparams(GAME, "dqn")
    assert hp["net_arch"] == "NatureCNN" and hp["kwargs"]["buffer_size"] == 100_000


def test_atari_training_resumes_from_a_checkpoint(tmp_path):
    out = tmp_path / "b.npz"
    small = {"buffer_size": 500, "learning_starts": 100}
    train(GAME, "dqn", 300, 0, out, progress=False, checkpoint_every=200, overrides=small,
          log=lambda *a: None)
    steps, _, rb = latest_checkpoint(tmp_path / "b.ckpt")
    assert steps == 300 and rb is not None
    logs = []
    m = train(GAME, "dqn", 500, 0, out, resume=True, progress=False, checkpoint_every=200,
              overrides=small, log=logs.append)
    assert any("resuming" in s for s in logs)
    assert load_model(out).meta["provenance"]["steps"] == 500
    assert m.config.layers[0].kind == "conv2d"


def test_a_packed_checkpoint_travels_and_resumes(tmp_path):
    """scripts/atari_device.py: a checkpoint packed down to its Q network (what a borrowed GPU
    machine can send back) unpacks into a checkpoint with the same Q values and step count,
    and training resumes from it, refilling the replay buffer first."""
    import importlib.util

    import torch
    from stable_baselines3 import DQN

    spec = importlib.util.spec_from_file_location(
        "atari_device", Path(__file__).resolve().parents[1] / "scripts" / "atari_device.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    small = {"buffer_size": 500, "learning_starts": 100}
    train(GAME, "dqn", 200, 0, tmp_path / "a.npz", progress=False, checkpoint_every=200,
          overrides=small, log=lambda *a: None)
    _, zpath, _ = latest_checkpoint(tmp_path / "a.ckpt")
    assert tool.pack(zpath, tmp_path / "a.pt") == 200
    # the artifact's path packs its newest checkpoint: the same bytes
    assert tool.pack(tmp_path / "a.npz", tmp_path / "c" / "a.pt") == 200
    assert (tmp_path / "c" / "a.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()
    assert (tmp_path / "a.pt").stat().st_size < zpath.stat().st_size / 1.9
    # the run's --hyperparams travel with it and are the unpacked run's
    assert torch.load(tmp_path / "a.pt", weights_only=True)["overrides"] == small
    dest = tool.unpack(tmp_path / "a.pt", GAME, tmp_path / "b.npz", 0)
    a, b = DQN.load(zpath, device="cpu"), DQN.load(dest, device="cpu")
    x = torch.randint(0, 256, (2, 4, 84, 84)).float()
    assert b.num_timesteps == 200
    assert torch.equal(a.q_net(x), b.q_net(x)) and torch.equal(b.q_net_target(x), b.q_net(x))
    logs = []
    train(GAME, "dqn", 400, 0, tmp_path / "b.npz", resume=True, progress=False,
          checkpoint_every=200, overrides=small, log=logs.append)
    assert any("refilling one for 100 steps" in s for s in logs), logs
    assert load_model(tmp_path / "b.npz").meta["provenance"]["steps"] == 400
    # torch's fused Adam, from scratch, after unpacking and after resuming
    resumed = DQN.load(tmp_path / "b.sb3.zip", device="cpu")
    assert all(m.policy.optimizer.defaults["fused"] for m in (a, b, resumed))
    # the resumed run keeps the small buffer: the test leaves megabytes on disk, not gigabytes
    assert sum(p.stat().st_size for p in tmp_path.rglob("*")) < 400e6


def test_exported_dqn_plans_on_the_core(sb3_dqn):
    """An exported Nature-CNN lays out on the event-driven core: every conv input with a
    kernel position on the output grid has a key, and a full step's schedule is consistent."""
    from deltanet.pysim import DeltaNetwork
    from deltanet.pysim.corecycles import CoreCycleModel

    conv = export_dqn_cnn(sb3_dqn, GAME)
    cm = CoreCycleModel(conv, 4, 8)
    assert [g.conv for g in cm.plan.geometry] == [True, True, True, False, False]
    assert (cm.plan.keys(0) != 0).mean() > 0.9
    net = DeltaNetwork(conv)
    x = net.quantize_obs(np.random.default_rng(0).integers(0, 255, (1, conv.config.n_in)))
    net.step(x)
    sch = cm.schedule(net.last_events, True)
    assert sch.cycles > cm.plan.init_steps and sch.rounds[:4] == list(cm.plan.rows[:4])


def test_distillation_sees_images_as_the_network_does(sb3_dqn):
    """The pruning ladder's distillation on a Nature-CNN: its own env hands the network
    channels-first frames (as SB3 wraps the training env), and a distillation step trains."""
    from deltanet.prune import Distiller, _Session

    ss = _Session()
    ss.model, ss.env_id, ss.vn_src = sb3_dqn, GAME, None
    dist = Distiller(ss, seed=3)
    dist.collect(16)
    x = np.concatenate([x for x, _ in dist.states])
    assert x.shape[1:] == (4, 84, 84) and x.dtype == np.uint8
    saved = {k: v.clone() for k, v in sb3_dqn.policy.state_dict().items()}
    from deltanet.export import policy_linears

    first = policy_linears(sb3_dqn)[0].weight  # prune half of the first conv: now they differ

    def apply():
        with torch.no_grad():
            first[: first.shape[0] // 2].zero_()

    apply()
    before = [p.detach().clone() for p in dist.student.parameters()]
    loss = dist.train(apply, steps=2)
    dist.close()
    changed = any(not torch.equal(a, b) for a, b in zip(before, dist.student.parameters()))
    still_pruned = not first[: first.shape[0] // 2].any()
    sb3_dqn.policy.load_state_dict(saved)
    assert np.isfinite(loss) and loss > 0 and dist.centred
    assert changed and still_pruned


def test_bench_atari_curve_and_plot(tmp_path):
    """scripts/bench_atari.py: the pruned model's points along the threshold (dense updates,
    the bench's threshold, the sweep) are ordered by threshold, tabled and plotted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"mean_return": 10.0, "std_return": 1.0, "mean_length": 100, "reduction": 3.0,
           "significant_mults_per_step": 5.0, "per_layer_significant": [5.0]}
    rows = {name: dict(row) for name in bench.ROW_ORDER}
    rows["constant"]["action"] = "FIRE"
    rows["pruned"].update(reduction=6.0, mean_return=11.0)
    rows["combined"].update(reduction=30.0, mean_return=9.5)
    r = {"game": "Breakout", "env_id": GAME, "episodes": 2, "max_steps": 1000,
         "threshold": 0.001, "train_steps": 1000, "pruning": "test", "sparsity": 0.5,
         "sparsity_per_layer": [0.5], "layers": ["dense 4->2"], "dense_per_layer": [8],
         "pruned_weights_per_layer": [4], "formats": {"input": "-", "weights": [],
                                                      "activations": []},
         "rows": rows, "sweep": [{"threshold": 0.01, "mean_return": 7.0, "std_return": 1.0,
                                  "mean_length": 90, "reduction": 80.0},
                                 {"threshold": 0.003, "mean_return": 9.0, "std_return": 1.0,
                                  "mean_length": 90, "reduction": 50.0}]}
    assert bench.curve_points(r) == [(0.0, 6.0, 11.0), (0.001, 30.0, 9.5), (0.003, 50.0, 9.0),
                                     (0.01, 80.0, 7.0)]
    text = bench.markdown([r])
    assert "| 0.003 | 9.0 | 50.0x |" in text and "(atari.png)" in text
    assert "| best constant (FIRE) | 10.0 +/- 1.0 | 100 |" in text
    assert "dead ReLUs" not in text
    rows["dense"]["per_layer_events"] = [30.0, 0.0]  # layer 0 never outputs a non-zero
    assert "layer 0 outputs zeros on every step" in bench.markdown([r])
    rows["dense"]["per_layer_events"] = [30.0, 2.0]
    bench.plot([r], tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "against pruning sparsity" not in text
    bench.plot_sparsity([r], tmp_path / "s.png")  # no curve: no figure
    assert not (tmp_path / "s.png").exists()
    pt = {"sparsity": 0.0, "finetune_steps": 0, "mean_return": 10.0, "std_return": 1.0,
          "mean_length": 100}
    r["sparsity_curve"] = [pt, {**pt, "sparsity": 0.5, "finetune_steps": 60000,
                                "mean_return": 8.0}]
    text = bench.markdown([r])
    assert "| 0.500 | - | 60,000 | 8.0 +/- 1.0 | 80% | 100 |" in text
    bench.plot_sparsity([r], tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the calibrated row: its column in the layer table, and its three measurements
    r["calibrated"] = {
        "settings": {"episodes": 20, **bench.CALIB}, "thresholds": [0.02],
        "evaluations": 9, "search_seconds": 600.0, "search_stopped": "every layer frozen",
        "reference": {"select": 20.0, "holdout": 10.0},
        "select": {"mean_return": 19.0, "reduction": 60.0},
        "holdout": {"mean_return": 9.6, "reduction": 61.0},
        "mean_return": 9.7, "std_return": 2.0, "reduction": 62.5,
        "significant_mults_per_step": 0.128, "per_layer_significant": [0.128]}
    text = bench.markdown([r])
    assert "| layer | dense | pruned (weights) | pruned | delta | combined | calibrated |" in text
    assert "| **reduction** | 1x |" in text and "(paper 20-150x) | 62.5x |" in text
    assert "| selection (20, seeds 100,000+) | 20.0 | 19.0 | 95% | 60.0x |" in text
    assert "| held out (20, seeds 200,000+) | 10.0 | 9.6 | 96% | 61.0x |" in text
    assert "| **this section's (2, seeds 0+)** | 10.0 | **9.7 +/- 2.0** | **97%** | " \
           "**62.5x** |" in text
    bench.plot([r], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_atari_constant_baseline_plays_the_agents_protocol(sb3_dqn):
    """scripts/bench_atari.py's best-constant baseline: holding one action with the seeded
    epsilon-greedy coins plays exactly the games of a network that always picks that action
    (run_episodes), and the best action is the one with the highest mean score."""
    import importlib.util

    from deltanet.pysim import LayerParams

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = export_dqn_cnn(sb3_dqn, GAME)
    last = model.params[-1]
    bias = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)  # always LEFT (action 3)
    model = model.replace(params=[*model.params[:-1],
                                  LayerParams(np.zeros_like(last.weight), bias, last.mask)])
    agent = bench.run_episodes(model, 2, 0, mode="float", delta=False, progress=False,
                               env_kwargs={"max_steps": 80}, epsilon=0.3)
    held = bench.baseline_scores(GAME, 2, 80, 3, 0.3)
    np.testing.assert_array_equal(agent.returns, held["returns"])
    assert list(agent.lengths) == [80, 80] and held["mean_length"] == 80
    best = bench.best_constant(GAME, 2, 80, 0.3)
    others = [bench.baseline_scores(GAME, 2, 80, a, 0.3)["mean_return"] for a in range(4)]
    assert best["mean_return"] == max(others)
    assert best["action"] == ["NOOP", "FIRE", "RIGHT", "LEFT"][int(np.argmax(others))]


def test_bench_atari_sparsity_points_dedupe_sort_and_cache(tmp_path, monkeypatch):
    """scripts/bench_atari.py's score-against-sparsity points: the dense agent, the bench's
    pruned model and the curve models, each model once (the pruned one is a copy of a curve
    one), sorted by sparsity, and cached by checksum (a second call evaluates nothing)."""
    import importlib.util
    import shutil

    from deltanet import bundled_model

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    (tmp_path / "curve").mkdir()
    dense = load_model(bundled_model("cartpole_dense"))
    shutil.copy(bundled_model("cartpole_dense"), tmp_path / "breakout_dqn.npz")
    from deltanet.pysim import save_model

    save_model(prune_oneshot(dense, 0.9, lanes=4), tmp_path / "curve" / "breakout_a.npz")
    save_model(prune_oneshot(dense, 0.5, lanes=4), tmp_path / "curve" / "breakout_b.npz")
    shutil.copy(tmp_path / "curve" / "breakout_a.npz", tmp_path / "breakout_pruned.npz")
    played = bench.run_episodes

    def capped(model, episodes, seed, env_kwargs, **kw):  # CartPole: the cap as max_steps
        return played(model, episodes, seed, max_steps=env_kwargs["max_steps"], **kw)

    monkeypatch.setattr(bench, "run_episodes", capped)
    pts = bench.sparsity_points("breakout", 2, 50, 0.05)
    assert [p["model"] for p in pts] == ["breakout_dqn.npz", "curve/breakout_b.npz",
                                         "breakout_pruned.npz"]
    assert [p["sparsity"] for p in pts] == sorted(p["sparsity"] for p in pts)
    assert pts[0]["sparsity"] == 0.0 and pts[-1]["sparsity"] > pts[1]["sparsity"] > 0.4
    assert all(p["mean_length"] == 50 for p in pts)  # CartPole lasts: the 50-step cap

    def no_work(*args, **kwargs):
        raise AssertionError("a cached point was evaluated again")

    monkeypatch.setattr(bench, "run_episodes", no_work)
    assert bench.sparsity_points("breakout", 2, 50, 0.05) == pts
    # the bench's dense row is the agent's point over these games: taken, not played again
    (tmp_path / "sparsity_breakout.json").unlink()
    monkeypatch.setattr(bench, "run_episodes", capped)
    row = {"mean_return": 123.0, "std_return": 4.0, "mean_length": 50.0}
    again = bench.sparsity_points("breakout", 2, 50, 0.05, dense_row=row)
    assert again[0]["mean_return"] == 123.0 and again[0]["seconds"] == 0.0
    def played_points(ps):
        return [{k: v for k, v in q.items() if k != "seconds"} for q in ps]

    assert played_points(again[1:]) == played_points(pts[1:])
    # a curve model renamed keeps its cached point, under its new name
    (tmp_path / "curve" / "breakout_b.npz").rename(tmp_path / "curve" / "breakout_c.npz")
    monkeypatch.setattr(bench, "run_episodes", no_work)
    renamed = bench.sparsity_points("breakout", 2, 50, 0.05, dense_row=row)
    assert [p["model"] for p in renamed] == ["breakout_dqn.npz", "curve/breakout_c.npz",
                                             "breakout_pruned.npz"]
    # the curve of a fresh result: the points measured here, then the ones measured before
    # on models not here - the result's own and the committed ones of the same float agent
    # (not another agent's), each model once
    gone = {**renamed[1], "model": "curve/breakout_gone.npz", "sparsity": 0.3}
    other = {**gone, "model": "curve/other_agent.npz"}
    r = {"game": "Breakout", "models": "w:aaaa-bbbb", "sparsity_curve": [gone]}
    committed = [{"game": "Breakout", "models": "w:aaaa-cccc",
                  "sparsity_curve": [gone, {**renamed[2], "sparsity": 0.99}]},
                 {"game": "Breakout", "models": "w:dddd-cccc", "sparsity_curve": [other]},
                 {"game": "Pong", "models": "w:aaaa-cccc", "sparsity_curve": [other]}]
    merged = bench.merged_curve(r, renamed, committed)
    assert [p["model"] for p in merged] == ["breakout_dqn.npz", "curve/breakout_gone.npz",
                                            "curve/breakout_c.npz", "breakout_pruned.npz"]
    assert bench.merged_curve({**r, "sparsity_curve": []}, renamed, committed) == merged
    # a policy pruned in two gradual passes: its point counts both passes' fine-tuning steps
    twice = prune_oneshot(dense, 0.7, lanes=4)
    prov = twice.meta["provenance"]
    meta = {**twice.meta, "provenance": {**prov, "pruning": {
        **prov["pruning"], "finetune_steps": 240_000,
        "previous": {**prov["pruning"], "finetune_steps": 400_000}}}}
    save_model(twice.replace(meta=meta), tmp_path / "curve" / "breakout_d.npz")
    monkeypatch.setattr(bench, "run_episodes", capped)
    (pt,) = [q for q in bench.sparsity_points("breakout", 2, 50, 0.05, dense_row=row)
             if q["model"] == "curve/breakout_d.npz"]
    assert pt["finetune_steps"] == 640_000 and pt["finetune_passes"] == [400_000, 240_000]
    assert "| 400,000 + 240,000 |" in bench._sparsity_row(pt, 1.0)
    assert f"| {renamed[0]['finetune_steps']:,} |" in bench._sparsity_row(renamed[0], 1.0)


def test_bench_atari_rows_are_kept_by_what_their_model_computes(tmp_path, monkeypatch):
    """scripts/bench_atari.py's bench rows (played): a row is played once per model, mode,
    delta and thresholds and kept on disk with the games' settings; a re-pruned agent re-plays
    only the rows of its new model, and a row equals a fresh run_episodes summary."""
    import importlib.util

    from deltanet import bundled_model

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    real = bench.run_episodes
    calls = []

    def capped(model, episodes, seed, env_kwargs, **kw):  # CartPole: the cap as max_steps
        calls.append(model)
        return real(model, episodes, seed, max_steps=env_kwargs["max_steps"], **kw)

    monkeypatch.setattr(bench, "run_episodes", capped)
    m = load_model(bundled_model("cartpole"))
    kept = bench.row_store("breakout", 2, 40, 0.05)
    row = bench.played(kept, m, "fixed", True)
    want = real(m, 2, 0, max_steps=40, mode="fixed", delta=True, progress=False,
                epsilon=0.05).summary()
    assert row["returns"] == want["returns"] and row["steps"] == want["steps"] == 80
    assert row["significant_mults_per_step"] == want["significant_mults_per_step"]
    assert row["per_layer_significant"] == [q["significant_mults_per_step"]
                                            for q in want["per_layer"]]
    again = bench.row_store("breakout", 2, 40, 0.05)  # from disk
    assert bench.played(again, m, "fixed", True) == row and len(calls) == 1
    bench.played(again, m, "fixed", False)  # dense updates: another row
    n = len(m.config.layers)
    bench.played(again, m.replace(config=m.config.with_thresholds([0.5] * n)), "fixed", True)
    assert len(calls) == 3
    other = bench.row_store("breakout", 3, 40, 0.05)  # other games: nothing kept from those
    bench.played(other, m, "fixed", True)
    assert len(calls) == 4 and bench.played(again, m, "fixed", True) == row


def test_bench_atari_reuses_this_machines_run_then_the_committed_results(tmp_path, monkeypatch):
    """scripts/bench_atari.py --reuse: a game's results come from runs/atari/bench_<game>.json,
    else from the committed atari.json (a fresh checkout has no runs/); other settings or
    missing sweep thresholds are measured again, except that a game whose agent is missing
    keeps its results whatever their settings."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs, out = tmp_path / "runs" / "atari", tmp_path / "benchmarks" / "results"
    runs.mkdir(parents=True)
    out.mkdir(parents=True)
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "RUNS", runs)
    monkeypatch.setattr(bench, "OUT", out)
    settings = {"episodes": 10, "max_steps": 4500, "threshold": 0.001, "epsilon": 0.05}
    committed = {"game": "Breakout", **settings, "sweep": [{"threshold": 0.01}], "from": "c"}
    (out / "atari.json").write_text(json.dumps([{"game": "Enduro"}, committed]))
    r, where, note = bench.reusable("breakout", settings, [0.003, 0.01])
    assert r["from"] == "c" and where == Path("benchmarks/results/atari.json")
    assert note == " (swept only [0.01])"
    assert bench.reusable("breakout", settings, [0.003]) is None  # 0.01 was not asked for
    assert bench.reusable("freeway", settings, [0.01]) is None
    # the agent is missing: results played greedily or over other games are kept, and the
    # note says so
    for other in ({"epsilon": 0.0}, {"episodes": 20}):
        r, _, note = bench.reusable("breakout", {**settings, **other}, [0.01])
        assert r["from"] == "c" and note == " (its agent is missing: kept as played)"
    # the agent is here: measure again, since the committed result names no models
    save_model(load_model(MODELS_DIR / "cartpole_dense.npz"), runs / "breakout_dqn.npz")
    assert bench.reusable("breakout", {**settings, "episodes": 20}, [0.01]) is None
    assert bench.reusable("breakout", {**settings, "epsilon": 0.0}, [0.01]) is None
    assert bench.reusable("breakout", settings, [0.01]) is None
    # this machine's run comes first, when it was measured on these models
    here = bench.models_key("breakout")
    assert here.endswith("-oneshot")
    (runs / "bench_breakout.json").write_text(
        json.dumps({**committed, "from": "runs", "models": here}))
    r, where, note = bench.reusable("breakout", settings, [0.01])
    assert r["from"] == "runs" and where == Path("runs/atari/bench_breakout.json") and note == ""
    # the agent re-exported with other provenance (e.g. from its packed checkpoint on another
    # machine): the same weights, the same key
    dqn = load_model(runs / "breakout_dqn.npz")
    save_model(dqn.replace(meta={**dqn.meta, "provenance": {"train_seconds": 9.1}}),
               runs / "breakout_dqn.npz")
    assert load_model(runs / "breakout_dqn.npz").meta["checksum"] != dqn.meta["checksum"]
    assert bench.models_key("breakout") == here
    # a re-pruned agent is measured again
    save_model(load_model(MODELS_DIR / "cartpole.npz"), runs / "breakout_pruned.npz")
    assert bench.models_key("breakout") != here
    assert bench.reusable("breakout", settings, [0.01]) is None


def test_bench_atari_kept_evaluations_survive_a_restart_for_the_same_settings(tmp_path):
    """scripts/bench_atari.py's KeptEvals: every evaluation added is on disk at once; a new
    search with the same settings starts from them, one with other settings from nothing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_atari", Path(__file__).resolve().parents[1] / "scripts" / "bench_atari.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path, settings = tmp_path / "calib_enduro_evals.json", {"models": "w:a-b", "episodes": 20}
    kept = bench.KeptEvals(path, settings)
    kept["model:100000:0.0,0.0"] = {"mean_return": 5.0}
    assert bench.KeptEvals(path, settings) == {"model:100000:0.0,0.0": {"mean_return": 5.0}}
    assert bench.KeptEvals(path, {**settings, "models": "w:a-c"}) == {}

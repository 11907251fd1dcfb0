"""The RL pipeline's plumbing with tiny budgets: train -> prune -> quantize -> calibrate -> eval.

These check that the stages connect and refuse bad input clearly; they do not check rewards
(see scripts/bench_reduction.py for that).
"""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
from deltanet.pysim import load_model

from deltanet.cli import main
from deltanet.envs import make_env
from deltanet.prune import (
    balanced_mask,
    check_balance,
    compute_masks,
    cubic_sparsity,
    finetune_passes,
    lane_balance,
    prune_oneshot,
)


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    out = d / "cp_dense.npz"
    rc = main(["train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "1024", "--seed",
               "3", "--out", str(out), "--checkpoint-every", "512", "--no-progress"])
    assert rc == 0
    return d, out


def test_train_prune_quantize_calibrate_eval(trained, capsys):
    d, dense = trained
    m = load_model(dense)
    prov = m.meta["provenance"]
    assert prov["algo"] == "PPO" and prov["seed"] == 3 and prov["steps"] >= 1024
    assert "versions" in prov and "hyperparams" in prov
    assert (d / prov["sb3_zip"]).exists()
    pruned, quant, final = d / "p.npz", d / "q.npz", d / "c.npz"
    rc, out, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", "0.5",
                           "--finetune-steps", "512", "--out", pruned, "--no-progress")
    assert rc == 0, err
    p = load_model(pruned)
    # the pruning's own sparsity (before the clean-up removed the units nothing reads)
    assert abs(p.meta["provenance"]["pruning"]["sparsity"] - 0.5) < 0.02
    assert "clean-up removed" in out and "cleanup" in p.meta["provenance"]
    assert p.meta["provenance"]["pruning"]["target"] == 0.5
    rc, out, err = run_cli(capsys, "quantize", "--model", pruned, "--out", quant,
                           "--episodes", "3")
    assert rc == 0, err
    assert "rel RMS" in out
    q = load_model(quant)
    assert all(ly.weight_fmt.width <= 8 for ly in q.config.layers)
    assert all(ly.out_fmt.width <= 16 for ly in q.config.layers)
    assert np.array_equal([pp.mask for pp in q.params][1], [pp.mask for pp in p.params][1])
    rc, out, err = run_cli(capsys, "calibrate", "--model", quant, "--out", final,
                           "--episodes", "20", "--max-evals", "6")
    assert rc == 0, err
    # 1,024 PPO steps do not solve CartPole: the thresholds are judged against a failing policy
    assert "below CartPole-v1's reward_threshold 475 (gymnasium)" in " ".join(out.split())
    c = load_model(final)
    assert "calibration" in c.meta["provenance"]
    rc, out, err = run_cli(capsys, "eval", "--model", final, "--episodes", "2",
                           "--no-progress")
    assert rc == 0, err


def test_unsolved_note_follows_gymnasiums_reward_threshold():
    """The note names the return and the task's solved level; a solved task, a task without a
    reward_threshold (Atari) and an id gymnasium cannot look up get none."""
    from deltanet.envs import unsolved_note

    note = unsolved_note("MountainCar-v0", -200.0)
    assert "-200.00" in note and "MountainCar-v0's reward_threshold -110" in note
    assert unsolved_note("MountainCar-v0", -110.0) is None  # at the threshold: solved
    assert unsolved_note("BreakoutNoFrameskip-v4", 1.0) is None
    assert unsolved_note("no_such_module:Task-v0", 1.0) is None and unsolved_note(None, 1) is None


def test_resume_continues_from_checkpoint(trained, capsys):
    d, dense = trained
    ckpts = sorted((d / "cp_dense.ckpt").glob("model_*.zip"))
    assert ckpts, "no checkpoint written"
    rc, out, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--algo", "ppo", "--steps",
                           "1536", "--seed", "3", "--out", dense, "--resume", "--no-progress")
    assert rc == 0, err
    assert "resuming" in out
    assert load_model(dense).meta["provenance"]["steps"] >= 1536
    assert load_model(dense).meta["provenance"]["resumed"] is True


def test_resume_off_policy_keeps_replay_buffer(tmp_path, capsys):
    out = tmp_path / "dqn.npz"
    args = ["train", "--env", "CartPole-v1", "--algo", "dqn", "--net", "16", "--seed", "0",
            "--out", out, "--checkpoint-every", "1000", "--no-progress"]
    rc, _, err = run_cli(capsys, *args, "--steps", "1000")
    assert rc == 0, err
    assert list((tmp_path / "dqn.ckpt").glob("replay_*.pkl"))
    rc, text, err = run_cli(capsys, *args, "--steps", "1500", "--resume")
    assert rc == 0, err
    assert "resuming" in text
    assert load_model(out).meta["provenance"]["steps"] >= 1500


def test_train_time_limit_checkpoints_and_a_replay_less_resume_refills(tmp_path, capsys):
    """--time-limit stops a long run early with a checkpoint and an exported policy; a
    checkpoint whose replay buffer stayed behind (too large to move) resumes with an empty
    buffer refilled for learning_starts steps before learning goes on."""
    from stable_baselines3 import DQN

    from deltanet.train import latest_checkpoint

    out = tmp_path / "dqn.npz"
    args = ["train", "--env", "CartPole-v1", "--algo", "dqn", "--net", "16", "--seed", "0",
            "--out", out, "--checkpoint-every", "1000000", "--no-progress"]
    rc, text, err = run_cli(capsys, *args, "--steps", "1000000", "--time-limit", "2")
    assert rc == 0, err
    assert "time limit of 2 s reached" in text
    done, zpath, rb = latest_checkpoint(tmp_path / "dqn.ckpt")
    assert 0 < done < 1_000_000 and rb is not None
    assert load_model(out).meta["provenance"]["steps"] == done
    rb.unlink()
    rc, text, err = run_cli(capsys, *args, "--steps", str(done + 300), "--resume")
    assert rc == 0, err
    assert "has no replay buffer beside it: refilling one for 1,000 steps" in text
    resumed = DQN.load(tmp_path / "dqn.sb3.zip", device="cpu")
    assert resumed.num_timesteps >= done + 300
    assert resumed.learning_starts == done + 1000  # rl-zoo3's CartPole DQN: learning_starts 1000


def test_train_refuses_a_gpu_it_cannot_see(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    rc, _, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--algo", "ppo", "--out",
                         tmp_path / "m.npz", "--device", "cuda")
    assert rc != 0
    assert err.strip().splitlines() == ["deltanet train: error: --device cuda: torch sees no "
                                        "CUDA device on this machine"]
    assert not list(tmp_path.iterdir())


def test_train_keeps_the_best_validated_policy(tmp_path, capsys):
    """The exported policy is the checkpoint with the best validation mean (SB3's
    EvalCallback on seeds VALIDATION_SEED+), recorded in the provenance; --keep last exports
    the final one; every evaluation is printed."""
    import json

    from stable_baselines3 import PPO

    from deltanet.export import export_sb3
    from deltanet.train import VALIDATION_SEED

    out = tmp_path / "cp.npz"
    args = ["train", "--env", "CartPole-v1", "--algo", "ppo", "--net", "8", "--seed", "1",
            "--steps", "3000", "--checkpoint-every", "1000", "--eval-episodes", "2",
            "--no-progress"]
    rc, text, err = run_cli(capsys, *args, "--out", out)
    assert rc == 0, err
    lines = [ln for ln in text.splitlines() if ln.startswith("validation ")]
    assert len(lines) == 3, text  # at 1,000, 2,000 and 3,000 steps (PPO rollouts: 4 x 256)
    means = [float(ln.split("episodes ")[1].split(" ")[0]) for ln in lines]
    best = json.loads((tmp_path / "cp.ckpt" / "best.json").read_text())
    assert best["mean_return"] == pytest.approx(max(means), abs=0.005)
    assert best["seeds"] == f"{VALIDATION_SEED}..{VALIDATION_SEED + 1}"
    prov = load_model(out).meta["provenance"]
    assert prov["selected"]["policy_steps"] == best["steps"]
    # the artifact is the best checkpoint's policy, bit for bit
    want = export_sb3(PPO.load(tmp_path / "cp.ckpt" / "best.zip", device="cpu"),
                      "CartPole-v1", {})
    got = load_model(out)
    for i in range(len(want.params)):
        np.testing.assert_array_equal(got.float_weight(i), want.float_weight(i))
    last = tmp_path / "last.npz"
    rc, _, err = run_cli(capsys, *args, "--out", last, "--keep", "last")
    assert rc == 0, err
    assert "selected" not in load_model(last).meta["provenance"]


@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(64, 64), (64, 4), (2, 64), (30, 7)])
def test_balanced_pruning_balances_every_column(lanes, shape):
    w = np.random.default_rng(lanes).normal(size=shape)
    m = balanced_mask(w, 0.75, lanes)
    ok, why = check_balance(m, lanes)
    assert ok, why
    n_out = shape[0]
    k = max(1, round(0.25 * -(-n_out // lanes)))
    for lane in range(lanes):
        rows = m[lane::lanes]
        if rows.shape[0]:
            assert np.all(rows.sum(axis=0) == min(k, rows.shape[0]))
    if n_out % lanes == 0:
        assert lane_balance(m, lanes) == 1.0


@pytest.mark.parametrize("lanes", [2, 4])
def test_whole_column_pruning_of_narrow_layers(lanes):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 64))
    m = balanced_mask(w, 0.9, lanes, whole_columns=True)
    assert check_balance(m, lanes)[0]
    cols = m.any(axis=0)
    assert cols.sum() == round(0.1 * 64) and np.all(m[:, cols])  # kept columns stay whole
    assert set(np.flatnonzero(cols)) == set(np.argsort(-np.abs(w).sum(axis=0))[:6])
    wide = rng.normal(size=(64, 64))  # rows_max > 1: the usual per-lane rule
    assert np.array_equal(balanced_mask(wide, 0.9, lanes, whole_columns=True),
                          balanced_mask(wide, 0.9, lanes))


def test_output_layer_sparsity():
    rng = np.random.default_rng(1)
    ws = [rng.normal(size=(64, 4)), rng.normal(size=(64, 64)), rng.normal(size=(2, 64))]
    ms = compute_masks(ws, 0.9, lanes=4, whole_columns=True, out_sparsity=0.97)
    assert [int(m.sum()) for m in ms] == [32, 512, 4]
    assert all(check_balance(m, 4)[0] for m in ms)
    with pytest.raises(ValueError, match="per-layer"):
        compute_masks(ws, 0.9, "global", out_sparsity=0.97)


def test_keep_mask_nonzero_restores_balance(trained):
    from deltanet.pysim import LayerParams

    from deltanet.quantize import keep_mask_nonzero

    _, dense = trained
    m = prune_oneshot(load_model(dense), 0.75, lanes=4)
    p0 = m.params[1]
    w = np.array(p0.weight, copy=True)
    r, c = np.argwhere(p0.mask)[0]
    w[r, c] = 1e-9  # kept, but rounds to zero
    m = m.replace(params=[m.params[0], LayerParams(w, p0.bias, p0.mask), *m.params[2:]])
    assert not check_balance(m.nonzero(1, "fixed"), 4)[0]
    m2, n = keep_mask_nonzero(m)
    assert n[1] >= 1 and m2.meta["provenance"]["quantization"]["kept_weights_raised"] == n
    assert all(check_balance(m2.nonzero(i, "fixed"), 4)[0] for i in range(len(m2.params)))
    assert all(np.array_equal(m2.nonzero(i, "fixed"), m2.params[i].mask)
               for i in range(len(m2.params)))


def test_check_balance_detects_imbalance():
    m = np.zeros((8, 3), dtype=bool)
    m[0, 0] = m[2, 0] = True  # lane 0 holds 2 in column 0 with 2 lanes, lane 1 none
    ok, why = check_balance(m, 2)
    assert not ok and "column 0" in why


def test_masks_and_schedule():
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(64, 4)), rng.normal(size=(64, 64))]
    per = compute_masks(ws, 0.9, "per-layer")
    assert [round(1 - m.mean(), 2) for m in per] == [0.9, 0.9]
    glob = compute_masks(ws, 0.9, "global")
    assert abs(1 - sum(m.sum() for m in glob) / sum(w.size for w in ws) - 0.9) < 1e-3
    assert cubic_sparsity(0, 100, 0.9) == 0.0
    assert cubic_sparsity(100, 100, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(50, 100, 0.9) == pytest.approx(0.9 * (1 - 0.5 ** 3))


def test_oneshot_keeps_config(trained):
    _, dense = trained
    m = load_model(dense)
    p = prune_oneshot(m, 0.7, lanes=4)
    assert p.config == m.config
    assert all(check_balance(pp.mask, 4)[0] for pp in p.params)


class SequenceObs(gym.Env):
    """Observations of varying length (a gymnasium Sequence): no flat Box holds them."""

    observation_space = gym.spaces.Sequence(gym.spaces.Discrete(2))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return (0,), {}

    def step(self, action):
        return (0, 1), 0.0, True, False, {}


SEQUENCE_OBS = "DeltanetSequenceObs-v0"
if SEQUENCE_OBS not in gym.registry:
    gym.register(SEQUENCE_OBS, entry_point=SequenceObs, disable_env_checker=True)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--env", "NoSuchEnv-v9", "--algo", "ppo", "--steps", "100"], "NoSuchEnv-v9"),
    (["train", "--env", SEQUENCE_OBS, "--algo", "ppo", "--steps", "100"],
     "Sequence(Discrete(2), stack=False) is not a Box and does not flatten into one"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "-5"], "--steps"),
    (["train", "--env", "Pendulum-v1", "--algo", "dqn", "--steps", "100"], "Discrete action"),
    (["train", "--env", "CartPole-v1", "--algo", "sac", "--steps", "100"], "Box action"),
    (["train", "--env", "ALE/Pong-v5", "--algo", "dqn", "--steps", "100"],
     "use --env PongNoFrameskip-v4"),
    (["train", "--env", "Breakout-v4", "--algo", "dqn", "--steps", "100"],
     "use --env BreakoutNoFrameskip-v4"),
    (["train", "--env", "SpaceInvadersNoFrameskip-v0", "--algo", "dqn", "--steps", "100"],
     "use --env SpaceInvadersNoFrameskip-v4"),
    (["train", "--env", "CartPole-v1", "--algo", "dqn", "--hyperparams", "foo=1"],
     "--hyperparams foo: not a DQN argument deltanet lets you set; DQN takes batch_size,"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams", "batch_size=0"],
     "--hyperparams batch_size=0: batch_size takes an integer >= 1 (default 64)"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams", "gamma=abc"],
     "'abc' is not a Python literal"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams", "gamma"],
     "--hyperparams 'gamma': expected KEY=VALUE"),
    (["train", "--env", "CartPole-v1", "--algo", "sac", "--hyperparams", "tau=0"], "Box action"),
    (["train", "--env", "Pendulum-v1", "--algo", "sac", "--hyperparams", "tau=0"],
     "tau takes a number in (0, 1]"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams",
      "policy_kwargs.net_arch=[8]"], "policy_kwargs.net_arch: not a policy argument"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams",
      "policy_kwargs.optimizer_kwargs.eps=-1e-3e"], "not a Python literal"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--hyperparams",
      "policy_kwargs.optimizer_kwargs.eps=True"], "eps takes a finite number"),
])
def test_train_refuses_bad_arguments(argv, needle, tmp_path, capsys):
    rc, _, err = run_cli(capsys, *argv, "--out", tmp_path / "x.npz", "--no-progress")
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.npz").exists()


def test_train_hyperparams_reach_sb3_and_stay_with_a_resumed_run(tmp_path, capsys):
    """--hyperparams replace SB3 arguments and the policy's Adam arguments, are recorded in the
    provenance, and a resumed run keeps those it started with (and refuses others)."""
    from stable_baselines3 import DQN

    out = tmp_path / "cp.npz"
    base = ["train", "--env", "CartPole-v1", "--algo", "dqn", "--out", out,
            "--checkpoint-every", "300", "--eval-episodes", "0", "--no-progress"]
    rc, _, err = run_cli(capsys, *base, "--steps", "300", "--hyperparams", "learning_rate=5e-4",
                         "policy_kwargs.optimizer_kwargs.eps=3.125e-4", 'train_freq=[2,"step"]')
    assert rc == 0, err
    agent = DQN.load(tmp_path / "cp.sb3.zip", device="cpu")
    assert agent.policy.optimizer.defaults["eps"] == 3.125e-4 and agent.learning_rate == 5e-4
    assert agent.train_freq.frequency == 2
    want = {"learning_rate": 5e-4, "policy_kwargs.optimizer_kwargs.eps": 3.125e-4,
            "train_freq": [2, "step"]}
    assert load_model(out).meta["provenance"]["hyperparams_overrides"] == want
    rc, _, err = run_cli(capsys, *base, "--steps", "600", "--resume")
    assert rc == 0, err
    prov = load_model(out).meta["provenance"]
    assert prov["steps"] == 600 and prov["hyperparams_overrides"] == want
    assert prov["hyperparams"]["learning_rate"] == 5e-4
    assert DQN.load(tmp_path / "cp.sb3.zip").policy.optimizer.defaults["eps"] == 3.125e-4
    before = out.read_bytes()
    rc, _, err = run_cli(capsys, *base, "--steps", "900", "--resume", "--hyperparams",
                         "learning_rate=1e-3")
    assert rc == 2 and "a resumed run keeps them" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before


def test_train_refuses_a_replay_buffer_larger_than_memory():
    """An off-policy run whose replay buffer cannot fit this machine is refused before SB3
    allocates it (DQN on raw 96x96x3 frames: 55 GB for SB3's million entries)."""
    import gymnasium as gym

    from deltanet.train import check_replay_memory

    frames = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fits = max(1, int(have // (2 * 96 * 96 * 3)) // 2)
    check_replay_memory("X-v0", "dqn", {"buffer_size": fits}, frames)
    check_replay_memory("X-v0", "ppo", {"buffer_size": 10**12}, frames)  # on-policy: no buffer
    with pytest.raises(ValueError, match=r"X-v0: SAC's replay buffer of .* observations of "
                                         r"27,648 bytes needs .* GB, more than"):
        check_replay_memory("X-v0", "sac", {"buffer_size": 4 * fits}, frames)
    # optimize_memory_usage keeps one copy: twice the entries fit
    check_replay_memory("X-v0", "dqn", {"buffer_size": 2 * fits, "optimize_memory_usage": True},
                        frames)


def test_flat_observations_are_gymnasiums_one_hot_flattening():
    """Discrete parts of an observation reach the network one-hot (Blackjack's Tuple of three
    Discrete spaces: 32 + 11 + 2 inputs, one set in each part); Box envs are left alone."""
    env = make_env("Blackjack-v1", 0)()
    assert env.observation_space.shape == (45,) and env.observation_space.dtype == np.uint8
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        raw = env.unwrapped._get_obs()
        parts = np.split(obs, [32, 43])
        assert [int(np.flatnonzero(q)[0]) for q in parts] == [int(v) for v in raw]
        assert [int(q.sum()) for q in parts] == [1, 1, 1]
    assert make_env("CartPole-v1", 0)().observation_space.shape == (4,)


def test_an_env_without_a_step_limit_gets_one():
    """CliffWalking sets no step limit: a policy that walks into the wall would never end an
    episode (train's validation, eval and verify would hang), so its episodes stop after
    DEFAULT_MAX_EPISODE_STEPS; an env with its own limit keeps it."""
    from deltanet.sim.envs import DEFAULT_MAX_EPISODE_STEPS

    env = make_env("CliffWalking-v1", 0)()
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(0)  # up, forever: (3, 0) -> (0, 0) and into the wall
        steps += 1
        done = term or trunc
    assert not term and trunc and steps == DEFAULT_MAX_EPISODE_STEPS == 1000
    assert make_env("Taxi-v4", 0)().spec.max_episode_steps == 200


def quantize_and_verify(capsys, dense, *, episodes: int, lanes: int) -> dict:
    """Quantize the float artifact ``dense`` and verify it closed-loop on Verilator; verify's
    JSON report."""
    quant, report = dense.with_name("q_" + dense.name), dense.with_name("verify.json")
    rc, _, err = run_cli(capsys, "quantize", "--model", dense, "--out", quant)
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "verify", "--model", quant, "--episodes", str(episodes),
                           "--lanes", str(lanes), "--json", report)
    assert rc == 0, err + out
    return json.loads(report.read_text())


USER_ENVS = """
import gymnasium as gym
import numpy as np


class Matrix(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3, 4), np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.o = 0, self.np_random.uniform(-1, 1, (3, 4))
        return self.o, {}

    def step(self, action):
        reward = float(int(action) == int(self.o[0, 0] > 0))
        self.t, self.o = self.t + 1, self.np_random.uniform(-1, 1, (3, 4))
        return self.o, reward, False, self.t >= 20, {}


gym.register("DeltanetMatrix-v0", entry_point=Matrix)
"""


def test_an_env_from_the_users_own_module_runs_on_the_hardware(tmp_path, capsys, monkeypatch):
    """An env registered by a module of the user's, named ``module:Name-v0`` as gymnasium
    allows, trains and runs closed-loop on the generated Verilog: the simulator's process
    imports the module too (from PYTHONPATH), and its 3 x 4 matrix observations reach the
    network as 12 inputs."""
    (tmp_path / "user_envs.py").write_text(USER_ENVS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    dense = tmp_path / "m.npz"
    rc, _, err = run_cli(capsys, "train", "--env", "user_envs:DeltanetMatrix-v0", "--algo",
                         "ppo", "--steps", "256", "--eval-episodes", "0", "--out", dense,
                         "--no-progress")
    assert rc == 0, err
    assert load_model(dense).config.n_in == 12
    v = quantize_and_verify(capsys, dense, episodes=2, lanes=2)
    assert v["mismatches"] == 0 and v["steps"] == 40, v


def test_discrete_observations_train_and_verify_on_the_hardware(tmp_path, capsys):
    """A task with Discrete observations (FrozenLake: 16 states) trains on their one-hot
    vectors, quantizes, and runs closed-loop on the generated Verilog bit for bit."""
    dense = tmp_path / "fl.npz"
    rc, _, err = run_cli(capsys, "train", "--env", "FrozenLake-v1", "--algo", "dqn", "--steps",
                         "600", "--seed", "1", "--out", dense, "--no-progress")
    assert rc == 0, err
    m = load_model(dense)
    assert m.config.n_in == 16 and m.meta["observation_space"]["shape"] == [16]
    v = quantize_and_verify(capsys, dense, episodes=3, lanes=3)
    assert v["mismatches"] == 0 and v["steps"] >= 3, v


@pytest.mark.parametrize("sparsity", ["1.0", "-0.1", "1.5"])
def test_prune_refuses_sparsity_outside_range(sparsity, trained, tmp_path, capsys):
    _, dense = trained
    rc, _, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", sparsity,
                         "--out", tmp_path / "p.npz")
    assert rc == 2 and "[0, 1)" in err


def test_prune_per_layer_sparsities(trained, tmp_path, capsys):
    """--sparsity S0,S1,...: each layer pruned to its own target (here with fine-tuning, the
    hidden layers lane-balanced and the output layer kept dense); wrong counts and
    contradictions are one-line errors."""
    _, dense = trained
    out = tmp_path / "p.npz"
    rc, _, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", "0.25,0.75,0",
                         "--balanced-lanes", "4", "--finetune-steps", "256", "--no-cleanup",
                         "--out", out, "--no-progress")
    assert rc == 0, err
    st = load_model(out).meta["provenance"]["pruning"]
    assert st["target"] == [0.25, 0.75, 0.0] and st["balanced"]
    assert st["per_layer_sparsity"] == [0.25, 0.75, 0.0]
    assert "previous" not in st  # pruned from a dense policy: no history
    # a second gradual pass from the pruned policy keeps the first one's record
    again = tmp_path / "p2.npz"
    rc, _, err = run_cli(capsys, "prune", "--model", out, "--sparsity", "0.25,0.75,0",
                         "--balanced-lanes", "4", "--finetune-steps", "128", "--no-cleanup",
                         "--out", again, "--no-progress")
    assert rc == 0, err
    st2 = load_model(again).meta["provenance"]["pruning"]
    assert st2["finetune_steps"] == 128 and st2["source"] == str(out)
    assert st2["previous"] == st
    assert finetune_passes(st2) == [256, 128] and finetune_passes({}) == []
    for extra, needle in ((["--sparsity", "0.5,0.5"], "3 layers"),
                          (["--sparsity", "0.5,0.5,0", "--global"], "per-layer scope"),
                          (["--sparsity", "0.5,0.5,0", "--out-sparsity", "0.5"], "last of"),
                          (["--sparsity", "0.5,1,0"], "[0, 1)")):
        rc, _, err = run_cli(capsys, "prune", "--model", dense, *extra, "--out",
                             tmp_path / "x.npz")
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.npz").exists()


def test_train_says_when_whole_rollouts_exceed_the_steps(tmp_path, capsys):
    """PPO collects whole rollouts (CartPole, rl-zoo3: 8 envs x 32 steps = 256) before it
    checks the budget: 300 steps train 512, and train says so; the artifact records 512."""
    rc, out, err = run_cli(capsys, "train", "--env", "CartPole-v1", "--algo", "ppo", "--steps",
                           "300", "--out", tmp_path / "cp.npz", "--eval-episodes", "0",
                           "--no-progress")
    assert rc == 0, err
    assert "whole rollouts of 256 env steps (8 envs x n_steps 32): it trains 512" in out
    assert load_model(tmp_path / "cp.npz").meta["provenance"]["steps"] == 512


def test_prune_keeps_the_best_validated_policy(trained, tmp_path, monkeypatch, capsys):
    """Fine-tuning that loses the policy returns the one-shot pruning it started from (the
    final masks on the dense weights, as `--finetune-steps 0` gives them); one that keeps
    improving returns its final policy. The validation returns are scripted here (they come
    from held-out episodes); the provenance records the choice."""
    import stable_baselines3.common.evaluation as evaluation

    _, dense = trained
    oneshot = tmp_path / "oneshot.npz"
    rc, _, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", "0.6",
                         "--finetune-steps", "0", "--no-cleanup", "--out", oneshot)
    assert rc == 0, err
    for returns, kept_first in (([9.0, 5.0, 5.0, 5.0, 5.0, 4.0], True),
                                ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], False)):
        script = iter(returns)
        seen = []

        def scripted(model, env, n_eval_episodes, **kw):
            seen.append(n_eval_episodes)
            return [next(script)] * n_eval_episodes, [1] * n_eval_episodes

        monkeypatch.setattr(evaluation, "evaluate_policy", scripted)
        out = tmp_path / f"p{int(kept_first)}.npz"
        rc, text, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", "0.6",
                                "--finetune-steps", "1024", "--eval-episodes", "3",
                                "--no-cleanup", "--out", out, "--no-progress")
        assert rc == 0, err
        assert seen == [3] * 6  # the one-shot start, 4 checks with final masks, the end
        sel = load_model(out).meta["provenance"]["pruning"]["selected"]
        assert sel["validation_mean_return"] == max(returns)
        assert sel["final_validation_mean_return"] == returns[-1]
        a, b = load_model(out), load_model(oneshot)
        same = [np.array_equal(pa.mask, pb.mask) and np.array_equal(
            np.where(pa.mask, pa.weight, 0), np.where(pb.mask, pb.weight, 0))
            for pa, pb in zip(a.params, b.params)]  # one-shot keeps the values under its mask
        if kept_first:
            assert sel["finetune_step"] == 0 and "keeping the best" in text and all(same)
        else:
            assert sel["finetune_step"] >= 1024 and "keeping the best" not in text
            assert not all(same)
    rc, _, err = run_cli(capsys, "prune", "--model", dense, "--sparsity", "0.6",
                         "--finetune-steps", "0", "--eval-episodes", "3", "--out",
                         tmp_path / "x.npz")
    assert rc == 2 and "needs fine-tuning" in err and not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("cmd", [
    ["prune", "--sparsity", "0.5"], ["quantize"], ["calibrate"], ["eval"]])
def test_missing_model_file(cmd, tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    argv = cmd[:1] + ["--model", missing] + cmd[1:]
    if cmd[0] != "eval":
        argv += ["--out", tmp_path / "o.npz"]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and "nope.npz" in err


def test_calibrate_refuses_too_few_episodes(trained, tmp_path, capsys):
    _, dense = trained
    rc, _, err = run_cli(capsys, "calibrate", "--model", dense, "--out", tmp_path / "c.npz",
                         "--episodes", "5")
    assert rc == 2 and "--episodes" in err


def test_prune_without_sb3_model_explains(trained, tmp_path, capsys):
    _, dense = trained
    m = load_model(dense)
    from deltanet.pysim import save_model

    other = tmp_path / "copy.npz"
    save_model(m, other)  # its SB3 zip is not beside the copy
    rc, _, err = run_cli(capsys, "prune", "--model", other, "--sparsity", "0.5",
                         "--out", tmp_path / "p.npz")
    assert rc == 2 and "SB3" in err


def test_sweep_writes_results_and_skips_finished_points(trained, tmp_path, capsys):
    _, dense = trained
    args = ["sweep", "--model", dense, "--thresholds", "0", "0.1", "--sparsities", "0", "0.5",
            "--episodes", "2", "--workers", "1", "--out", tmp_path / "sw", "--no-progress"]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err
    lines = (tmp_path / "sw" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert (tmp_path / "sw" / "pareto.png").stat().st_size > 0
    assert len((tmp_path / "sw" / "results.csv").read_text().splitlines()) == 5
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "0 points to run, 4 already done" in out


def test_sweep_refuses_bad_sparsity(trained, tmp_path, capsys):
    _, dense = trained
    rc, _, err = run_cli(capsys, "sweep", "--model", dense, "--thresholds", "0",
                         "--sparsities", "1.2", "--out", tmp_path / "sw")
    assert rc == 2 and "[0, 1)" in err


def test_constant_q_network_spots_a_collapsed_dqn(tmp_path, capsys):
    """deltanet.train.constant_q_network: a fresh DQN's Q-values differ between replayed
    observations; once a hidden layer is dead (ReLU zero on every input) they are the same for
    all of them, and the checkpoint log warns. Other algorithms are never flagged."""
    import torch
    from stable_baselines3 import DQN, PPO

    from deltanet.train import constant_q_network, make_checkpoint_callback

    dqn = DQN("MlpPolicy", "CartPole-v1", buffer_size=1000, learning_starts=10**9, seed=0,
              device="cpu")
    assert not constant_q_network(dqn)  # an empty buffer: nothing to compare
    dqn.learn(200)
    assert not constant_q_network(dqn)
    hidden = dqn.policy.q_net.q_net[2]  # the second hidden layer, before its ReLU
    with torch.no_grad():
        hidden.weight.zero_()
        hidden.bias.fill_(-1.0)
    assert constant_q_network(dqn)
    capsys.readouterr()
    cb = make_checkpoint_callback(tmp_path, 100)
    cb.init_callback(dqn)
    cb.num_timesteps = dqn.num_timesteps  # what the callback reads from the model in training
    cb.save()
    out = capsys.readouterr().out
    assert "checkpoint 200 steps: warning: the Q network gives the same values" in out
    assert (tmp_path / "model_200.zip").exists()
    assert not constant_q_network(PPO("MlpPolicy", "CartPole-v1", n_steps=64, device="cpu"))

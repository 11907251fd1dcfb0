"""Hyper-parameters from rl-zoo3's shipped YAML files (issue 12, part 1)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from deltanet.pysim import load_model

from deltanet.cli import main
from deltanet.train import ALGO_DEFAULTS, hyperparams
from deltanet.zoo import (
    ZOO_VERSION,
    NnName,
    parse_expr,
    schedule,
    zoo_folder,
    zoo_hyperparams,
    zoo_version,
)

needs_zoo = pytest.mark.skipif(zoo_folder() is None, reason="rl_zoo3 is not installed "
                                                            "(make install)")


def yaml_entry(algo, env):
    with open(zoo_folder() / f"{algo}.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)[env]


@needs_zoo
def test_the_installed_zoo_is_the_pinned_one():
    assert zoo_version() == ZOO_VERSION


@needs_zoo
@pytest.mark.parametrize("env,algo", [("CartPole-v1", "ppo"), ("MountainCar-v0", "dqn"),
                                      ("Pendulum-v1", "sac"), ("LunarLander-v3", "dqn")])
def test_hyperparams_are_the_yaml_files(env, algo):
    want = yaml_entry(algo, env)
    lines = []
    hp = hyperparams(env, algo, log=lines.append)
    assert hp["source"] == f"rl-zoo3 {ZOO_VERSION} {algo}.yml {env}"
    assert lines[0] == f"hyper-parameters: rl-zoo3 {ZOO_VERSION} {algo}.yml {env}"
    assert hp["steps"] == int(want["n_timesteps"])
    assert hp["n_envs"] == want.get("n_envs", 1)
    reserved = {"n_timesteps", "n_envs", "policy", "policy_kwargs", "normalize"}
    assert hp["kwargs"] == {k: v for k, v in want.items() if k not in reserved}
    if "policy_kwargs" in want:
        assert hp["net_arch"] == parse_expr(want["policy_kwargs"])["net_arch"]
    assert hp["normalize"] is None


@needs_zoo
def test_normalize_entry_and_tanh_default_become_vecnormalize_and_relu():
    hp = hyperparams("MountainCar-v0", "ppo")
    assert yaml_entry("ppo", "MountainCar-v0")["normalize"] is True
    assert hp["normalize"] == {"gamma": 0.99}
    assert any("nn.Tanh" in n and "ReLU" in n for n in hp["notes"])


def test_unknown_env_gets_the_defaults_and_says_so():
    lines = []
    hp = hyperparams("FrozenLake-v1", "ppo", log=lines.append)
    assert hp["source"].startswith("algorithm defaults")
    assert lines[0].startswith("hyper-parameters: algorithm defaults (")
    d = ALGO_DEFAULTS["ppo"]
    assert (hp["steps"], hp["n_envs"], hp["net_arch"], hp["kwargs"]) == \
        (d["steps"], d["n_envs"], d["net_arch"], d["kwargs"])


@needs_zoo
def test_entry_needing_a_wrapper_is_not_used():
    hp = hyperparams("CarRacing-v3", "ppo")
    assert hp["source"].startswith("algorithm defaults") and "env_wrapper" in hp["source"]


def test_lunarlander_v3_falls_back_to_a_v2_entry():
    table = {"LunarLander-v2": {"n_timesteps": 1e5, "policy": "MlpPolicy",
                                "learning_rate": 6.3e-4,
                                "policy_kwargs": "dict(net_arch=[256, 256])"}}
    hp = zoo_hyperparams("LunarLander-v3", "dqn", table, "9.9")
    assert hp["source"] == "rl-zoo3 9.9 dqn.yml LunarLander-v2"
    assert any("no LunarLander-v3 entry" in n for n in hp["notes"])
    assert hp["kwargs"] == {"learning_rate": 6.3e-4} and hp["net_arch"] == [256, 256]
    table["LunarLander-v3"] = {"n_timesteps": 2e5, "policy": "MlpPolicy"}
    assert zoo_hyperparams("LunarLander-v3", "dqn", table, "9.9")["steps"] == 200_000


def test_an_env_takes_the_newest_earlier_version_of_its_task():
    """Hopper-v5 (gymnasium 1.x) has no entry: the newest earlier one, v4, not v2 nor a
    later v6, nor another task's."""
    e = {"policy": "MlpPolicy"}
    table = {"Hopper-v2": {**e, "n_timesteps": 2e5}, "Hopper-v4": {**e, "n_timesteps": 4e5},
             "Hopper-v6": {**e, "n_timesteps": 6e5}, "HopperBulletEnv-v0": e,
             "Hopper-v10": {**e, "n_timesteps": 1e7}}
    hp = zoo_hyperparams("Hopper-v5", "sac", table, "9.9")
    assert hp["source"] == "rl-zoo3 9.9 sac.yml Hopper-v4" and hp["steps"] == 400_000
    assert any("no Hopper-v5 entry: using the Hopper-v4 entry" in n for n in hp["notes"])
    assert zoo_hyperparams("Hopper-v11", "sac", table, "9.9")["steps"] == 10_000_000
    assert zoo_hyperparams("Hopper-v1", "sac", table, "9.9") is None
    assert zoo_hyperparams("Walker2d-v5", "sac", table, "9.9") is None


def test_parse_expr_reads_the_small_expressions():
    assert parse_expr("dict(log_std_init=-3.67, net_arch=[64, 64], use_expln=True, )") == \
        {"log_std_init": -3.67, "net_arch": [64, 64], "use_expln": True}
    v = parse_expr("dict(activation_fn=nn.ReLU, net_arch=dict(pi=[256], vf=[256]))")
    assert v["activation_fn"] == "ReLU" and isinstance(v["activation_fn"], NnName)
    assert v["net_arch"] == {"pi": [256], "vf": [256]}
    assert parse_expr("{'norm_obs': False, 'norm_reward': True}") == \
        {"norm_obs": False, "norm_reward": True}
    assert parse_expr("[1, 'episode']") == [1, "episode"]


@pytest.mark.parametrize("text,needle", [
    ("dict(optimizer_class=RMSpropTFLike)", "name 'RMSpropTFLike' is not allowed"),
    ("__import__('os').system('true')", "is not allowed (only dict(...))"),
    ("dict(net_arch=[64, 64]) | {}", "BinOp is not allowed"),
    ("dict(net_arch=[64] * 2)", "BinOp is not allowed"),
    ("dict(**x)", "key=value arguments only"),
    ("dict(activation_fn=th.nn.ReLU)", "only nn.<Activation>"),
    ("lambda: 0", "Lambda is not allowed"),
    ("dict(net_arch=[64, 64]", "not an expression"),
])
def test_bad_policy_kwargs_are_refused(text, needle):
    with pytest.raises(ValueError, match="allowed: dict") as e:
        parse_expr(text, "policy_kwargs")
    assert needle in str(e.value)
    table = {"CartPole-v1": {"policy": "MlpPolicy", "policy_kwargs": text}}
    with pytest.raises(ValueError, match="rl-zoo3 1.0 ppo.yml CartPole-v1 policy_kwargs"):
        zoo_hyperparams("CartPole-v1", "ppo", table, "1.0")


def test_activation_is_always_relu_and_other_classes_are_refused():
    table = {"Pendulum-v1": {"policy": "MlpPolicy",
                             "policy_kwargs": "dict(activation_fn=nn.Tanh, net_arch=[8])"}}
    hp = zoo_hyperparams("Pendulum-v1", "sac", table, "1.0")
    assert "activation_fn" not in hp["policy_kwargs"]
    assert any("nn.Tanh -> nn.ReLU" in n for n in hp["notes"])
    table["Pendulum-v1"]["policy_kwargs"] = "dict(optimizer_class=nn.Adam)"
    with pytest.raises(ValueError, match="only activation_fn may name"):
        zoo_hyperparams("Pendulum-v1", "sac", table, "1.0")


def test_lin_schedules():
    f = schedule("lin_0.001", "learning_rate")
    assert f(1.0) == pytest.approx(0.001) and f(0.5) == pytest.approx(0.0005)
    assert schedule(3e-4) == 3e-4
    with pytest.raises(ValueError, match="lin_<number>"):
        zoo_hyperparams("CartPole-v1", "ppo", {"CartPole-v1": {"learning_rate": "lin_x"}}, "1")


@needs_zoo
def test_tiny_training_run_says_its_source(tmp_path, capsys):
    out = tmp_path / "cp.npz"
    assert main(["train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "256",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"hyper-parameters: rl-zoo3 {ZOO_VERSION} ppo.yml CartPole-v1" in text
    prov = load_model(out).meta["provenance"]
    assert prov["hyperparams_source"] == f"rl-zoo3 {ZOO_VERSION} ppo.yml CartPole-v1"
    assert prov["hyperparams"]["learning_rate"] == "lin_0.001" and prov["n_envs"] == 8


@needs_zoo
def test_vecnormalize_training_is_folded_into_the_input_map(tmp_path, capsys):
    """MountainCar-v0 PPO trains inside VecNormalize (rl-zoo's normalize: true); the artifact
    computes SB3's action from the raw observation."""
    import gymnasium as gym
    from deltanet.pysim import DeltaNetwork
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    out = tmp_path / "mc.npz"
    assert main(["train", "--env", "MountainCar-v0", "--algo", "ppo", "--steps", "512",
                 "--net", "16", "16", "--out", str(out), "--no-progress"]) == 0
    assert "VecNormalize" in capsys.readouterr().out
    m = load_model(out)
    vn_file = tmp_path / m.meta["provenance"]["vecnormalize"]["file"]
    vn = VecNormalize.load(str(vn_file), DummyVecEnv([lambda: gym.make("MountainCar-v0")]))
    agent = PPO.load(tmp_path / "mc.sb3.zip", device="cpu")
    rng = np.random.default_rng(0)
    obs = np.stack([rng.uniform(-1.2, 0.6, 300), rng.uniform(-0.07, 0.07, 300)], axis=1)
    obs = obs[np.all(np.abs(vn.normalize_obs(obs)) < vn.clip_obs, axis=1)]  # SB3 clips there
    want = agent.predict(vn.normalize_obs(obs), deterministic=True)[0]
    got = DeltaNetwork(m, mode="float", delta=False, batch=len(obs)).act(obs)
    assert len(obs) > 50 and np.mean(got == want) == 1.0


def test_sac_with_gsde_gets_a_linear_mean():
    """rl-zoo3's SAC entries with use_sde clip the mean with a Hardtanh, which an artifact
    cannot hold: train sets clip_mean 0.0 and says so (MountainCarContinuous-v0 failed to
    export without it)."""
    from deltanet.train import hyperparams

    hp = hyperparams("MountainCarContinuous-v0", "sac")
    assert hp["kwargs"].get("use_sde") is True
    assert hp["policy_kwargs"]["clip_mean"] == 0.0
    assert any("clip_mean" in n for n in hp["notes"])

"""`deltanet import`: SB3, PyTorch and ONNX policies -> float artifacts, with parity checked on
>= 1,000 observations from real episodes (float twin vs the source framework: identical
discrete actions, continuous actions within 1e-5, outputs within float tolerance), and the
refusals."""

from __future__ import annotations

import itertools
import json
import warnings
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
import torch
from deltanet.pysim import DeltaNetwork, load_model
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from torch import nn

from deltanet.atari import make_train_env
from deltanet.cli import main
from deltanet.envs import make_env
from deltanet.importers import ImportRefused, import_policy

N_OBS = 1000
ATARI = "BreakoutNoFrameskip-v4"
RELU = {"activation_fn": nn.ReLU, "net_arch": [32, 32]}
ALGOS = {"PPO": PPO, "A2C": A2C, "DQN": DQN, "SAC": SAC, "TD3": TD3}
TRAIN = {"PPO": {"n_steps": 256, "batch_size": 64, "n_epochs": 2},
         "A2C": {"n_steps": 8},
         "DQN": {"learning_starts": 200, "buffer_size": 2000, "train_freq": 4},
         "SAC": {"learning_starts": 100, "buffer_size": 2000},
         "TD3": {"learning_starts": 100, "buffer_size": 2000}}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread, as `deltanet train` uses: tiny networks run slower on more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def episode_obs(env_id, act, n=N_OBS, seed=0, explore=0.3, **env_kwargs):
    """At least ``n`` observations from whole episodes of ``env_id`` (reset seeds seed, seed+1,
    ...), actions from ``act(obs)`` or, with probability ``explore``, random."""
    env = make_env(env_id, seed, **env_kwargs)()
    rng = np.random.default_rng(seed)
    out, ep = [], 0
    while len(out) < n:
        obs, _ = env.reset(seed=seed + ep)
        ep += 1
        done = False
        while not done:
            out.append(obs)
            a = env.action_space.sample() if rng.random() < explore else act(obs)
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
    env.close()
    return np.stack(out)


def float_twin(model, obs, chunk=250):
    """(actions, last-layer outputs) of the imported model's float dense twin."""
    acts, outs = [], []
    for k in range(0, len(obs), chunk):
        x = obs[k:k + chunk].reshape(len(obs[k:k + chunk]), -1).astype(np.float64)
        net = DeltaNetwork(model, mode="float", delta=False, batch=len(x))
        acts.append(net.act(x))
        outs.append(np.asarray(net.last_outputs, dtype=np.float64))
    return np.concatenate(acts), np.concatenate(outs)


def check_parity(model, obs, ref_actions, ref_outputs, *, rtol=1e-5, atol=1e-5):
    assert len(obs) >= N_OBS
    acts, outs = float_twin(model, obs)
    np.testing.assert_allclose(outs, ref_outputs, rtol=rtol, atol=atol)
    if model.config.decoder.kind == "argmax":
        np.testing.assert_array_equal(acts, np.asarray(ref_actions).reshape(acts.shape))
    else:
        np.testing.assert_allclose(acts, np.asarray(ref_actions).reshape(acts.shape),
                                   rtol=0, atol=1e-5)


def sb3_outputs(agent, obs) -> np.ndarray:
    """The network output SB3's deterministic predict decodes (logits, Q-values, the action
    mean, or the pre-tanh mean of SAC/TD3)."""
    pol = agent.policy
    obs_t = pol.obs_to_tensor(obs)[0]
    with torch.no_grad():
        if isinstance(agent, (PPO, A2C)):
            feat = pol.extract_features(obs_t, pol.pi_features_extractor)
            y = pol.action_net(pol.mlp_extractor.forward_actor(feat))
        elif isinstance(agent, DQN):
            y = pol.q_net(obs_t)
        elif isinstance(agent, SAC):
            y = pol.actor.get_action_dist_params(obs_t)[0]
        else:
            a = pol.actor
            y = a.mu[:-1](a.extract_features(obs_t, a.features_extractor))
    return y.numpy().astype(np.float64)


def sb3_agent(algo, env_id, steps, seed=0, **kw):
    torch.manual_seed(seed)
    agent = ALGOS[algo]("MlpPolicy", env_id, device="cpu", seed=seed, policy_kwargs=dict(RELU),
                        **{**TRAIN[algo], **kw})
    if steps:
        agent.learn(steps)
    return agent


# ---- stable-baselines3 ----------------------------------------------------------------------
@pytest.mark.parametrize("algo, env_id, steps", [
    ("PPO", "CartPole-v1", 512), ("PPO", "Pendulum-v1", 512), ("A2C", "CartPole-v1", 400),
    ("A2C", "Pendulum-v1", 400), ("DQN", "CartPole-v1", 600), ("SAC", "Pendulum-v1", 200),
    ("TD3", "Pendulum-v1", 200)])
def test_sb3_parity(tmp_path, algo, env_id, steps):
    agent = sb3_agent(algo, env_id, steps)
    if algo in ("PPO", "A2C") and env_id == "Pendulum-v1":
        torch.manual_seed(1)  # means beyond the bounds on many steps: the clip must match too
        nn.init.normal_(agent.policy.action_net.weight, std=2.0)
    zpath = tmp_path / f"{algo}.zip"
    agent.save(zpath)
    model = import_policy(zpath, env_id=env_id, log=lambda *a: None)
    want = {"CartPole-v1": "argmax"}.get(env_id, "tanh" if algo in ("SAC", "TD3") else "clip")
    assert model.config.decoder.kind == want
    assert model.meta["env_id"] == env_id and model.meta["provenance"]["algo"] == algo
    agent = ALGOS[algo].load(zpath, device="cpu")  # the source as read back from the file
    obs = episode_obs(env_id, lambda o: agent.predict(o, deterministic=True)[0])
    ref = agent.predict(obs, deterministic=True)[0]
    if want == "clip":
        assert np.mean(np.abs(ref) == 2.0) > 0.1  # the clip binds on many observations
    check_parity(model, obs, ref, sb3_outputs(agent, obs))


def test_sb3_vecnormalize_is_folded_into_the_input_map(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("CartPole-v1", 1, seed=0), norm_reward=False)
    agent = PPO("MlpPolicy", venv, device="cpu", seed=0, policy_kwargs=dict(RELU), **TRAIN["PPO"])
    agent.learn(512)
    agent.save(tmp_path / "ppo.zip")
    venv.save(tmp_path / "vn.pkl")
    venv.training = False
    logs = []
    model = import_policy(tmp_path / "ppo.zip", env_id="CartPole-v1",
                          vecnormalize=tmp_path / "vn.pkl", log=logs.append)
    rec = model.meta["provenance"]["vecnormalize"]
    # CartPole's velocities are unbounded: the clip at +-10 std can bind there; said and kept
    assert rec["clip_exact"] is False and {1, 3} <= set(rec["clip_may_bind"])
    assert any("clip" in s for s in logs)
    np.testing.assert_allclose(model.config.input_offset, venv.obs_rms.mean)
    obs = episode_obs("CartPole-v1",
                      lambda o: agent.predict(venv.normalize_obs(o), deterministic=True)[0])
    norm = venv.normalize_obs(obs)
    assert np.all(np.abs(norm) < venv.clip_obs)  # no clip bound on these episodes
    check_parity(model, obs, agent.predict(norm, deterministic=True)[0],
                 sb3_outputs(agent, norm))


def test_sb3_dqn_cnn_policy_on_atari_frames(tmp_path):
    venv = make_train_env(ATARI, 1, 0)
    agent = DQN("CnnPolicy", venv, buffer_size=1000, learning_starts=10**9, device="cpu",
                seed=0)
    agent.save(tmp_path / "dqn.zip")
    venv.close()
    model = import_policy(tmp_path / "dqn.zip", env_id=ATARI, log=lambda *a: None)
    assert [ly.kind for ly in model.config.layers] == ["conv2d"] * 3 + ["dense"] * 2
    assert model.config.input_scale[0] == pytest.approx(1 / 255)  # SB3's image /255
    frames = episode_obs(ATARI, None, explore=1.0, max_steps=250)  # 4 truncated games
    assert frames.shape[1:] == (4 * 84 * 84,)
    chw = frames.reshape(-1, 4, 84, 84)
    check_parity(model, frames, agent.predict(chw, deterministic=True)[0],
                 sb3_outputs(agent, chw), rtol=1e-4, atol=1e-5)


class TinyImages(gym.Env):
    """Random 6 x 5 RGB frames, channels last (as CarRacing's 96 x 96 x 3); 2 actions."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 255, (6, 5, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (6, 5, 3), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        frame = self.np_random.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        return frame, float(action), False, self.t >= 50, {}


TINY_IMAGES = "DeltanetTinyImages-v0"
if TINY_IMAGES not in gym.registry:
    gym.register(TINY_IMAGES, entry_point=TinyImages)


def test_sb3_policy_on_channels_last_images(tmp_path):
    """SB3 transposes H x W x C images to C x H x W before its policy sees them, so the
    exported network takes them channel-first; deltanet's envs present them so (an MLP would
    otherwise read every pixel value in the wrong place, with the input count unchanged)."""
    from stable_baselines3.common.env_util import make_vec_env

    env = make_env(TINY_IMAGES, 0)()
    assert env.observation_space.shape == (3, 6, 5)
    o, _ = env.reset(seed=3)
    raw, _ = TinyImages().reset(seed=3)
    np.testing.assert_array_equal(o, raw.transpose(2, 0, 1))
    agent = PPO("MlpPolicy", make_vec_env(TINY_IMAGES, 1, seed=0), device="cpu", seed=0,
                policy_kwargs=dict(RELU), **TRAIN["PPO"])
    agent.learn(256)
    assert agent.observation_space.shape == (3, 6, 5)  # SB3 wrapped it: VecTransposeImage
    agent.save(tmp_path / "ppo.zip")
    model = import_policy(tmp_path / "ppo.zip", env_id=TINY_IMAGES, log=lambda *a: None)
    obs = episode_obs(TINY_IMAGES, lambda o: agent.predict(o, deterministic=True)[0])
    hwc = obs.transpose(0, 2, 3, 1)  # what the env itself returned
    check_parity(model, obs, agent.predict(hwc, deterministic=True)[0], sb3_outputs(agent, obs))


class Grid(gym.Env):
    """Observations in a MultiDiscrete or MultiBinary space; a reward for action 1 when the
    first value is set."""

    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"]}  # SB3's make_vec_env asks for it

    def __init__(self, space=None, render_mode=None):
        self.observation_space = space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t, self.o = 0, self.observation_space.sample()
        return self.o, {}

    def step(self, action):
        reward = float(int(action) == int(self.o[0] > 0))
        self.t, self.o = self.t + 1, self.observation_space.sample()
        return self.o, reward, False, self.t >= 50, {}


for _name, _space in (("DeltanetMultiDiscrete-v0", gym.spaces.MultiDiscrete([3, 5, 2])),
                      ("DeltanetMultiBinary-v0", gym.spaces.MultiBinary(6))):
    if _name not in gym.registry:
        gym.register(_name, entry_point=Grid, kwargs={"space": _space})


@pytest.mark.parametrize("algo, env_id, n_in", [("PPO", "Taxi-v4", 500), ("DQN", "Taxi-v4", 500),
                                               ("PPO", "DeltanetMultiDiscrete-v0", 10),
                                               ("A2C", "DeltanetMultiBinary-v0", 6)])
def test_sb3_policy_on_discrete_observations(tmp_path, algo, env_id, n_in):
    """SB3 feeds Discrete, MultiDiscrete and MultiBinary observations to its policy as (one-hot)
    floats and deltanet's envs observe them as gymnasium's flattening, the same vector, so an
    agent trained on the raw space (Taxi's 500 state numbers; 3 + 5 + 2 one-hot inputs; 6 bits)
    imports as an ``n_in``-input network that acts as SB3 does."""
    from stable_baselines3.common.env_util import make_vec_env

    torch.manual_seed(0)
    agent = ALGOS[algo]("MlpPolicy", make_vec_env(env_id, 1, seed=0), device="cpu", seed=0,
                        policy_kwargs=dict(RELU), **TRAIN[algo])
    agent.learn(512)
    space = agent.observation_space
    assert not isinstance(space, gym.spaces.Box)
    agent.save(tmp_path / "agent.zip")
    model = import_policy(tmp_path / "agent.zip", env_id=env_id, log=lambda *a: None)
    assert model.config.n_in == n_in

    def raw(flat):  # the raw observation SB3 saw, from the flat one deltanet's env gives
        return np.asarray(gym.spaces.unflatten(space, flat))

    obs = episode_obs(env_id, lambda o: int(agent.predict(raw(o), deterministic=True)[0]))
    assert obs.shape[1] == n_in and obs.dtype == np.uint8
    states = np.stack([raw(o) for o in obs])
    check_parity(model, obs, agent.predict(states, deterministic=True)[0],
                 sb3_outputs(agent, states))


def test_sb3_refuses_tanh_hidden_layers(tmp_path):
    agent = PPO("MlpPolicy", "CartPole-v1", device="cpu", seed=0)  # SB3's default: Tanh
    agent.save(tmp_path / "tanh.zip")
    with pytest.raises(ImportRefused) as e:
        import_policy(tmp_path / "tanh.zip", env_id="CartPole-v1")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "tanh.zip") in msg
    assert "policy.mlp_extractor.policy_net.1: Tanh" in msg and "activation_fn=nn.ReLU" in msg


def test_sb3_refuses_the_wrong_env(tmp_path):
    sb3_agent("DQN", "CartPole-v1", 0).save(tmp_path / "dqn.zip")
    with pytest.raises(ImportRefused, match=r"observes \[4\] but MountainCar-v0 .* \[2\]"):
        import_policy(tmp_path / "dqn.zip", env_id="MountainCar-v0")
    sb3_agent("DQN", "MountainCar-v0", 0).save(tmp_path / "mc.zip")
    with pytest.raises(ImportRefused, match="action space Discrete.* MountainCarContinuous-v0"):
        import_policy(tmp_path / "mc.zip", env_id="MountainCarContinuous-v0")


# ---- PyTorch --------------------------------------------------------------------------------
def mlp(sizes, *, bn=False, tanh=False, seed=0):
    torch.manual_seed(seed)
    mods = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if bn:
                mods.append(nn.BatchNorm1d(b))
            mods.append(nn.ReLU())
    if tanh:
        mods.append(nn.Tanh())
    net = nn.Sequential(*mods)
    for m in net:
        if isinstance(m, nn.BatchNorm1d):  # eval statistics that are not the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


def torch_out(net, obs, shape=None):
    x = torch.as_tensor(obs, dtype=torch.float32)
    if shape is not None:
        x = x.reshape(len(obs), *shape)
    with torch.no_grad():
        return net(x).numpy().astype(np.float64)


def cartpole_obs(net, shape=None):
    return episode_obs("CartPole-v1", lambda o: int(np.argmax(torch_out(net, o[None], shape))))


class Chain(nn.Module):
    """A module whose forward is a chain (traced with torch.fx)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 32))
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.body(torch.flatten(x, 1))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(x + torch.relu(self.a(x)))


def test_torch_sequential_saved_whole(tmp_path):
    net = mlp([4, 32, 32, 2])
    torch.save(net, tmp_path / "net.pt")
    model = import_policy(tmp_path / "net.pt", env_id="CartPole-v1")
    obs = cartpole_obs(net)
    out = torch_out(net, obs)
    check_parity(model, obs, out.argmax(1), out)


def test_torch_chain_module_traced(tmp_path):
    torch.manual_seed(1)
    net = Chain().eval()
    torch.save(net, tmp_path / "chain.pt")
    model = import_policy(tmp_path / "chain.pt", env_id="CartPole-v1")
    assert [ly.activation for ly in model.config.layers] == ["relu", "identity"]
    obs = cartpole_obs(net)
    out = torch_out(net, obs)
    check_parity(model, obs, out.argmax(1), out)


def test_torch_state_dict_with_spec_and_batchnorm_folded(tmp_path):
    net = mlp([4, 32, 32, 2], bn=True)
    torch.save({f"policy.{k}": v for k, v in net.state_dict().items()}, tmp_path / "sd.pt")
    spec = {"prefix": "policy.", "layers": [
        {"type": "Linear", "in_features": 4, "out_features": 32},
        {"type": "BatchNorm1d", "num_features": 32}, {"type": "ReLU"},
        {"type": "Linear", "in_features": 32, "out_features": 32},
        {"type": "BatchNorm1d", "num_features": 32}, {"type": "ReLU"},
        {"type": "Linear", "in_features": 32, "out_features": 2}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    model = import_policy(tmp_path / "sd.pt", env_id="CartPole-v1", spec=tmp_path / "spec.json")
    assert len(model.config.layers) == 3  # the BatchNorms live in the Linear layers
    obs = cartpole_obs(net)
    out = torch_out(net, obs)
    check_parity(model, obs, out.argmax(1), out)


def test_torch_conv_batchnorm2d_with_input_shape(tmp_path):
    # CartPole's 4 values seen as a 1x2x2 image: conv + BatchNorm2d + flatten + linear
    torch.manual_seed(2)
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(nn.Conv2d(1, 8, 2, padding=1), bn, nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 3 * 3, 2)).eval()
    torch.save(net, tmp_path / "conv.pt")
    model = import_policy(tmp_path / "conv.pt", env_id="CartPole-v1", input_shape=(1, 2, 2))
    assert [ly.kind for ly in model.config.layers] == ["conv2d", "dense"]
    obs = cartpole_obs(net, (1, 2, 2))
    out = torch_out(net, obs, (1, 2, 2))
    check_parity(model, obs, out.argmax(1), out)


def test_torch_tanh_output_is_a_squashed_continuous_policy(tmp_path):
    net = mlp([3, 32, 1], tanh=True)
    torch.save(net, tmp_path / "pend.pt")
    model = import_policy(tmp_path / "pend.pt", env_id="Pendulum-v1")
    assert model.config.decoder.kind == "tanh"
    obs = episode_obs("Pendulum-v1", lambda o: 2.0 * torch_out(net, o[None])[0])
    act = 2.0 * torch_out(net, obs)  # Pendulum's bounds are [-2, 2]
    check_parity(model, obs, act, torch_out(net[:-1], obs))


@pytest.mark.parametrize("build, env_id, match", [
    (lambda: mlp([4, 32, 2]), "Pendulum-v1",
     "takes 4 inputs but Pendulum-v1 observations have 3 values"),
    (lambda: mlp([4, 32, 2]), None, "--env is required for torch"),
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), "CartPole-v1",
     r"1: Tanh activation is not representable.*supported: Linear"),
    (lambda: nn.Sequential(nn.LSTM(4, 8)), "CartPole-v1", "0: LSTM is a recurrent layer"),
    (lambda: Residual(), "CartPole-v1", r"x feeds 2 operations \(a, add\): a branch"),
    (lambda: mlp([4, 32, 2]).state_dict(), "CartPole-v1",
     "holds a state_dict: give its layers with --spec"),
    (lambda: nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.BatchNorm1d(2)), "CartPole-v1",
     "folded into the Linear/Conv2d right before it"),
])
def test_torch_refusals(tmp_path, build, env_id, match):
    torch.save(build(), tmp_path / "bad.pt")
    with pytest.raises(ImportRefused, match=match) as e:
        import_policy(tmp_path / "bad.pt", env_id=env_id)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "bad.pt"))


# ---- ONNX -----------------------------------------------------------------------------------
@pytest.fixture
def onnx_export():
    pytest.importorskip("onnx")

    def export(net, shape, path):
        with warnings.catch_warnings():  # the TorchScript exporter (deprecated; the new one
            warnings.simplefilter("ignore", DeprecationWarning)  # needs onnxscript)
            torch.onnx.export(net, (torch.zeros(1, *shape),), path, dynamo=False,
                              input_names=["obs"], output_names=["out"],
                              dynamic_axes={"obs": {0: "batch"}, "out": {0: "batch"}})
        return path

    return export


@cache
def ort_session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ort_run(path, obs, shape):
    """The ONNX model's outputs as onnxruntime computes them (the source framework)."""
    sess = ort_session(path)
    x = np.asarray(obs, dtype=np.float32).reshape(len(obs), *shape)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)


def test_onnx_from_torch_gemm(tmp_path, onnx_export):
    net = mlp([4, 32, 32, 2], bn=True)
    path = onnx_export(net, (4,), tmp_path / "p.onnx")
    model = import_policy(path, env_id="CartPole-v1")
    obs = cartpole_obs(net)
    out = ort_run(path, obs, (4,))
    check_parity(model, obs, out.argmax(1), out)


def test_onnx_from_torch_conv(tmp_path, onnx_export):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 8, 2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Flatten(), nn.Linear(72, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    path = onnx_export(net, (1, 2, 2), tmp_path / "c.onnx")
    model = import_policy(path, env_id="CartPole-v1")  # the graph declares 1x2x2 inputs
    assert [ly.kind for ly in model.config.layers] == ["conv2d", "dense", "dense"]
    obs = cartpole_obs(net, (1, 2, 2))
    out = ort_run(path, obs, (1, 2, 2))
    check_parity(model, obs, out.argmax(1), out)


def _graph(nodes, inits, opset=17, n_in=3, n_out=1):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["b", n_in])],
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, ["b", n_out])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def test_onnx_matmul_add_reshape_tanh(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    rng = np.random.default_rng(4)
    w1, b1 = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=16).astype(np.float32)
    w2, b2 = rng.normal(size=(16, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["obs", "w1"], ["h1"]),
             helper.make_node("Add", ["b1", "h1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]),
             helper.make_node("Reshape", ["h3", "flat"], ["h4"]),
             helper.make_node("Identity", ["h4"], ["h5"]),
             helper.make_node("MatMul", ["h5", "w2"], ["h6"]),
             helper.make_node("Add", ["h6", "b2"], ["h7"]),
             helper.make_node("Tanh", ["h7"], ["act"])]
    m = _graph(nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2,
                       "flat": np.array([0, -1], dtype=np.int64)})
    onnx.save(m, tmp_path / "mm.onnx")
    model = import_policy(tmp_path / "mm.onnx", env_id="Pendulum-v1")
    assert model.config.decoder.kind == "tanh" and model.meta["provenance"]["opset"] == 17
    obs = episode_obs("Pendulum-v1", lambda o: 2.0 * ort_run(tmp_path / "mm.onnx", o[None],
                                                             (3,))[0])
    y = ort_run(tmp_path / "mm.onnx", obs, (3,))
    pre = np.maximum(obs @ w1.astype(np.float64) + b1, 0) @ w2 + b2
    np.testing.assert_allclose(np.tanh(pre), y, rtol=1e-5, atol=1e-6)
    check_parity(model, obs, 2.0 * y, pre)


@pytest.mark.parametrize("nodes, match", [
    (lambda h: [h.make_node("Gemm", ["obs", "w"], ["z"], transB=1),
                h.make_node("Sigmoid", ["z"], ["act"])],
     r"node 'act' \(Sigmoid\) is not supported; supported \(opsets 9 to 28\): Gemm"),
    (lambda h: [h.make_node("Gemm", ["obs", "w"], ["z"], transB=1),
                h.make_node("LSTM", ["z", "w", "w"], ["act"], hidden_size=1)],
     r"\(LSTM\) is not supported"),
    (lambda h: [h.make_node("Gemm", ["obs", "sq"], ["z"], transB=1),
                h.make_node("Add", ["z", "obs"], ["act"])],
     "a branch"),
])
def test_onnx_refusals(tmp_path, nodes, match):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    w = np.ones((1, 3), dtype=np.float32)
    m = _graph(nodes(helper), {"w": w, "sq": np.eye(3, dtype=np.float32)},
               n_out=3 if "branch" in match else 1)
    onnx.save(m, tmp_path / "bad.onnx")
    with pytest.raises(ImportRefused, match=match) as e:
        import_policy(tmp_path / "bad.onnx", env_id="Pendulum-v1")
    assert "\n" not in str(e.value) and str(tmp_path / "bad.onnx") in str(e.value)


def test_onnx_refuses_an_unsupported_opset(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    m = _graph([helper.make_node("Relu", ["obs"], ["act"])], {}, opset=7, n_out=3)
    onnx.save(m, tmp_path / "old.onnx")
    with pytest.raises(ImportRefused, match="opset 7 is not supported; supported: opsets 9"):
        import_policy(tmp_path / "old.onnx", env_id="Pendulum-v1")


# ---- the command ----------------------------------------------------------------------------
def test_cli_import_then_eval(tmp_path, capsys):
    sb3_agent("PPO", "CartPole-v1", 256).save(tmp_path / "ppo.zip")
    out = tmp_path / "m.npz"
    assert main(["import", str(tmp_path / "ppo.zip"), "--out", str(out),
                 "--env", "CartPole-v1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_model(out).meta["provenance"]["format"] == "sb3"
    assert main(["eval", "--model", str(out), "--episodes", "2", "--mode", "float",
                 "--no-progress", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["episodes"] == 2
    bare = tmp_path / "bare.npz"  # no --env: imported, names no env, says so
    assert main(["import", str(tmp_path / "ppo.zip"), "--out", str(bare)]) == 0
    assert "no --env" in capsys.readouterr().out and load_model(bare).meta["env_id"] is None
    q = tmp_path / "q.npz"
    assert main(["quantize", "--model", str(out), "--out", str(q), "--episodes", "2"]) == 0
    assert main(["eval", "--model", str(q), "--episodes", "1", "--no-progress"]) == 0


@pytest.mark.parametrize("algo, env_id", [("DQN", "CartPole-v1"), ("PPO", "Taxi-v4")])
def test_cli_import_then_prune_with_the_sb3_agent(tmp_path, capsys, algo, env_id):
    """`prune --sb3 agent.zip` fine-tunes the imported agent itself: a zip of any name (no
    replay buffer beside it is looked for), and an agent trained on a raw Discrete space (set
    up on the flat one-hot Box of deltanet's env)."""
    from stable_baselines3.common.env_util import make_vec_env

    agent = ALGOS[algo]("MlpPolicy", make_vec_env(env_id, 1, seed=0), device="cpu", seed=0,
                        policy_kwargs=dict(RELU), **TRAIN[algo])
    agent.learn(300)
    agent.save(tmp_path / "agent.zip")
    dense, pruned = tmp_path / "m.npz", tmp_path / "p.npz"
    assert main(["import", str(tmp_path / "agent.zip"), "--env", env_id, "--out",
                 str(dense)]) == 0
    assert main(["prune", "--model", str(dense), "--sb3", str(tmp_path / "agent.zip"),
                 "--sparsity", "0.5", "--finetune-steps", "256", "--eval-episodes", "2",
                 "--out", str(pruned), "--no-progress"]) == 0, capsys.readouterr().err
    m = load_model(pruned)
    assert m.config.n_in == load_model(dense).config.n_in
    assert m.meta["provenance"]["pruning"]["finetune_steps"] >= 256


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    agent = PPO("MlpPolicy", "CartPole-v1", device="cpu", seed=0)  # Tanh: refused
    agent.save(tmp_path / "tanh.zip")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    torch.save(mlp([4, 8, 2]), tmp_path / "net.pt")
    cases = [
        (["tanh.zip", "--env", "CartPole-v1"], "Tanh hidden activation"),
        (["junk.onnx", "--env", "CartPole-v1"], "not an ONNX model"),
        (["junk.zip"], "not a stable-baselines3 zip"),
        (["missing.zip"], "no such file"),
        (["net.pt"], "--env is required for torch"),
        (["net.pt", "--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["net.pt", "--env", "CartPole-v1", "--input-shape", "2", "2"], "give N or C H W"),
        (["tanh.zip", "--format", "onnx", "--env", "CartPole-v1"], "not an ONNX model"),
    ]
    for argv, want in cases:
        out = tmp_path / "out" / "m.npz"
        argv = [str(tmp_path / argv[0])] + argv[1:]
        assert main(["import", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("deltanet import: error: "), err
        assert want in err, err
        assert not (tmp_path / "out").exists()  # nothing written, not even the folder

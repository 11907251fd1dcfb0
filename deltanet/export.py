"""Float networks -> deltanet :class:`pysim.Model`: the one conversion path.

Every network that enters deltanet - the training export (:func:`export_sb3`), the Atari export
(:func:`deltanet.atari.export_dqn_cnn`) and the importers (:mod:`deltanet.importers`) - is first
described as a *chain*: a list of framework-neutral ops applied one after the other to one
observation,

* :class:`Dense` (``y = W x + b``), :class:`Conv` (2-D, square kernel, one stride and one zero
  padding for both axes, CHW maps),
* :class:`Relu`, :class:`Flatten` (CHW order, so a no-op on the flat vectors deltanet uses),
* :class:`Affine` (``y = x * scale + shift`` per feature or channel: an eval-mode BatchNorm),
  which is folded into the Dense/Conv right before it,

and :func:`chain_to_model` turns a chain into a float model: one layer per Dense/Conv, a ReLU
after it becomes the layer's activation, anything else is refused with a message naming the op.
Fixed-point formats are placeholders until ``deltanet quantize`` chooses them.

PyTorch modules become ops through :func:`torch_op` (used for SB3 policies here and for plain
PyTorch policies by the importer); :func:`sb3_actor` finds the modules that SB3's deterministic
``predict`` runs, with the decoder and input scaling that match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deltanet.pysim import Conv2dLayer, Decoder, DenseLayer, LayerParams, Model, NetworkConfig
from deltanet.pysim.config import default_acc_bits
from deltanet.pysim.fixed import fmt

from .envs import space_to_dict

__all__ = ["SB3_ALGOS", "TORCH_SUPPORTED", "Affine", "Conv", "Dense", "Flatten", "Relu",
           "Sb3Actor", "chain_to_model", "decoder_for", "export_sb3", "model_meta",
           "module_leaves", "policy_linears", "sb3_actor", "torch_chain", "torch_op"]

#: What a PyTorch policy may contain (the refusal messages quote it).
TORCH_SUPPORTED = ("Linear, Conv2d (square kernel, equal strides and paddings, no dilation or "
                   "groups), ReLU, Flatten, Identity, Dropout (identity in eval), BatchNorm1d/2d "
                   "(eval statistics, folded into the Linear/Conv2d right before it)")
#: SB3 algorithms whose deterministic policy can be exported.
SB3_ALGOS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")


# ---- the chain -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Dense:
    """``y = weight @ x + bias``; weight (n_out, n_in), bias (n_out,) or None (zeros)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    name: str = "dense"


@dataclass(frozen=True, eq=False)
class Conv:
    """2-D cross-correlation (PyTorch's): weight (out_ch, in_ch, k, k), bias (out_ch,)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    name: str = "conv"


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = x * scale + shift`` per feature (dense) or per channel (conv): eval BatchNorm."""

    scale: np.ndarray
    shift: np.ndarray
    name: str = "batchnorm"


@dataclass(frozen=True)
class Relu:
    name: str = "relu"


@dataclass(frozen=True)
class Flatten:
    """CHW maps -> one vector (``size``: the number of values it must give, None: any)."""

    name: str = "flatten"
    size: int | None = None


@dataclass
class _Pending:
    """A layer being assembled: its op, float weights and activation."""

    op: object
    weight: np.ndarray
    bias: np.ndarray
    in_shape: tuple
    out_shape: tuple
    activation: str = "identity"


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def chain_to_model(chain, in_shape, decoder: Decoder, *, meta: dict, input_scale=(),
                   input_offset=(), input_fmt="SQ8.8", weight_fmt="SQ2.6", act_fmt="SQ8.8",
                   acc_bits: int | None = None) -> Model:
    """A float :class:`pysim.Model` computing ``chain`` on an observation of ``in_shape``
    (``(n,)``, or ``(C, H, W)`` in CHW order, flattened like ``nn.Flatten``).

    The observation enters as ``x = (obs - input_offset) * input_scale``. Formats are
    placeholders (``acc_bits`` None: wide enough never to overflow). ValueError naming the op
    for anything not representable."""
    shape = tuple(int(v) for v in in_shape)
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"input shape {shape} is not a positive shape")
    done: list[_Pending] = []
    prev = None  # the op before this one
    for op in chain:
        if isinstance(op, Dense):
            w = np.asarray(op.weight, dtype=np.float64)
            if len(shape) != 1:
                raise ValueError(f"{op.name}: a Linear layer on {_shape_text(shape)} maps needs "
                                 "a Flatten before it")
            if w.ndim != 2 or w.shape[1] != shape[0]:
                raise ValueError(f"{op.name}: Linear weight {w.shape} does not take the "
                                 f"{shape[0]} values before it")
            b = _bias(op, w.shape[0])
            done.append(_Pending(op, w, b, shape, (w.shape[0],)))
            shape = (w.shape[0],)
        elif isinstance(op, Conv):
            w = np.asarray(op.weight, dtype=np.float64)
            if len(shape) != 3:
                raise ValueError(f"{op.name}: a Conv2d needs CxHxW maps, it gets "
                                 f"{_shape_text(shape)} values")
            if w.ndim != 4 or w.shape[1] != shape[0] or w.shape[2] != w.shape[3]:
                raise ValueError(f"{op.name}: Conv2d weight {w.shape} does not fit the "
                                 f"{_shape_text(shape)} maps before it (square kernels only)")
            c, h, wd = shape
            k, s, p = w.shape[2], int(op.stride), int(op.padding)
            if k > min(h, wd) + 2 * p:
                raise ValueError(f"{op.name}: kernel {k} larger than the padded "
                                 f"{h + 2 * p}x{wd + 2 * p} input")
            out = (w.shape[0], (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1)
            done.append(_Pending(op, w, _bias(op, w.shape[0]), shape, out))
            shape = out
        elif isinstance(op, Affine):
            last = done[-1] if done else None
            if last is None or prev is not last.op:
                raise ValueError(f"{op.name}: a BatchNorm is folded into the Linear/Conv2d "
                                 f"right before it; here it follows "
                                 f"{getattr(prev, 'name', 'the observation')}")
            n = last.out_shape[0]
            sc = np.asarray(op.scale, dtype=np.float64).reshape(-1)
            sh = np.asarray(op.shift, dtype=np.float64).reshape(-1)
            if sc.shape != (n,) or sh.shape != (n,):
                what = "channels" if len(last.out_shape) == 3 else "outputs"
                raise ValueError(f"{op.name}: BatchNorm over {sc.size} features after a layer "
                                 f"with {n} {what}")
            bshape = (n,) + (1,) * (last.weight.ndim - 1)
            last.weight = last.weight * sc.reshape(bshape)  # float64 until the model is built
            last.bias = last.bias * sc + sh
            op = last.op  # a later BatchNorm may fold too
        elif isinstance(op, Relu):
            if not done:
                raise ValueError(f"{op.name}: a ReLU on the observation itself is not "
                                 "representable (deltanet applies ReLU after a layer)")
            done[-1].activation = "relu"  # ReLU after ReLU, Flatten or BatchNorm: the same
        elif isinstance(op, Flatten):
            if op.size is not None and op.size != math.prod(shape):
                raise ValueError(f"{op.name}: reshapes to {op.size} values but the "
                                 f"{_shape_text(shape)} maps before it have {math.prod(shape)}")
            shape = (math.prod(shape),)  # CHW order = deltanet's flat order: nothing to do
        else:
            raise TypeError(f"unknown op {op!r}")
        prev = op
    if not done:
        raise ValueError("the network has no Linear or Conv2d layer")
    wf, af, in_f = fmt(weight_fmt), fmt(act_fmt), fmt(input_fmt)
    layers, params, prev_f = [], [], in_f
    for d in done:
        if isinstance(d.op, Conv):
            c, h, w = d.in_shape
            k = d.weight.shape[2]
            fan_in = c * k * k
            ab = acc_bits or default_acc_bits(prev_f, wf, fan_in)
            layer = Conv2dLayer(c, h, w, d.weight.shape[0], k, int(d.op.stride),
                                int(d.op.padding), wf, af, ab, d.activation)
        else:
            ab = acc_bits or default_acc_bits(prev_f, wf, d.in_shape[0])
            layer = DenseLayer(d.in_shape[0], d.out_shape[0], wf, af, ab, d.activation)
        layers.append(layer)
        w = d.weight.astype(np.float32)
        params.append(LayerParams(w, d.bias.astype(np.float32), np.ones_like(w, dtype=bool)))
        prev_f = af
    cfg = NetworkConfig(in_f, tuple(layers), decoder, tuple(input_scale), tuple(input_offset))
    return Model(cfg, tuple(params), dict(meta))


def _bias(op, n: int) -> np.ndarray:
    if op.bias is None:
        return np.zeros(n)
    b = np.asarray(op.bias, dtype=np.float64).reshape(-1)
    if b.shape != (n,):
        raise ValueError(f"{op.name}: bias of {b.size} values for {n} outputs")
    return b


def model_meta(env_id, observation_space, action_space, provenance=None) -> dict:
    """The ``meta`` of a model: env id, spaces (gymnasium spaces or their dicts), provenance."""
    def as_dict(space):
        return space if isinstance(space, dict) or space is None else space_to_dict(space)

    return {"env_id": env_id, "observation_space": as_dict(observation_space),
            "action_space": as_dict(action_space), "provenance": dict(provenance or {})}


# ---- PyTorch modules -> ops ----------------------------------------------------------------
def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _pair(v, what: str, name: str) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise ValueError(f"{name}: Conv2d {what} {tuple(v)} differs between the axes; "
                         "supported: one value for both")
    return int(a)


def torch_op(name: str, m):
    """One PyTorch module as a chain op (None: an identity), or ValueError naming ``name``."""
    from torch import nn

    if isinstance(m, nn.Linear):
        return Dense(_np(m.weight), None if m.bias is None else _np(m.bias), name)
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise ValueError(f"{name}: Conv2d padding {m.padding!r} ({m.padding_mode}) is not "
                             "supported; supported: an integer zero padding")
        if m.groups != 1 or _pair(m.dilation, "dilation", name) != 1:
            raise ValueError(f"{name}: Conv2d with groups={m.groups}, dilation={m.dilation} is "
                             "not supported; supported: groups=1, dilation=1")
        _pair(m.kernel_size, "kernel_size", name)
        return Conv(_np(m.weight), None if m.bias is None else _np(m.bias),
                    _pair(m.stride, "stride", name), _pair(m.padding, "padding", name), name)
    if isinstance(m, nn.ReLU):
        return Relu(name)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"{name}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) "
                             "is not supported; supported: Flatten() (start_dim=1, end_dim=-1)")
        return Flatten(name)
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return None
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None or m.running_var is None:
            raise ValueError(f"{name}: {type(m).__name__} without running statistics "
                             "(track_running_stats=False) normalises with batch statistics; "
                             "supported: BatchNorm with eval-mode running statistics")
        s = 1.0 / np.sqrt(_np(m.running_var) + float(m.eps))
        gamma = _np(m.weight) if m.weight is not None else np.ones_like(s)
        beta = _np(m.bias) if m.bias is not None else np.zeros_like(s)
        return Affine(gamma * s, beta - _np(m.running_mean) * gamma * s, name)
    kind = type(m).__name__
    if isinstance(m, (nn.Tanh, nn.Sigmoid, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Softplus,
                      nn.Hardtanh, nn.Softmax, nn.LogSoftmax, nn.SELU, nn.Mish, nn.PReLU)):
        hint = " (train with activation_fn=nn.ReLU)" if kind == "Tanh" else ""
        raise ValueError(f"{name}: {kind} activation is not representable{hint}; "  # noqa: TRY004
                         f"deltanet layers use ReLU or no activation; supported: "
                         f"{TORCH_SUPPORTED}")
    if isinstance(m, nn.RNNBase):
        raise ValueError(f"{name}: {kind} is a recurrent layer, not representable; "  # noqa: TRY004
                         f"supported: {TORCH_SUPPORTED}")
    raise ValueError(f"{name}: {kind} is not supported; supported: {TORCH_SUPPORTED}")


def module_leaves(name: str, m):
    """(name, module) of a module with nn.Sequential containers expanded in order."""
    from torch import nn

    if isinstance(m, nn.Sequential):
        for k, c in m.named_children():
            yield from module_leaves(f"{name}.{k}" if name else k, c)
    else:
        yield name, m


def torch_chain(named_modules) -> tuple[list, list]:
    """Ops of ``(name, module)`` pairs applied in order (nn.Sequential expanded), and the
    PyTorch module of every Dense/Conv op (in the model's layer order)."""
    ops, mods = [], []
    for name, m in named_modules:
        for leaf_name, leaf in module_leaves(name, m):
            op = torch_op(leaf_name, leaf)
            if op is not None:
                ops.append(op)
                if isinstance(op, (Dense, Conv)):
                    mods.append(leaf)
    return ops, mods


# ---- stable-baselines3 -----------------------------------------------------------------------
@dataclass
class Sb3Actor:
    """The path of SB3's deterministic ``predict``: modules in order, the input shape the
    network sees (CHW for images), the ``/255`` of image preprocessing (or 1) and the
    decoder."""

    algo: str
    modules: list      # (name, module) in order
    in_shape: tuple
    image_scale: float
    decoder: Decoder


def _features(fe, where: str) -> list:
    from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

    if type(fe) is FlattenExtractor:
        return [(f"{where}.flatten", fe.flatten)]
    if type(fe) is NatureCNN:
        return [(f"{where}.cnn", fe.cnn), (f"{where}.linear", fe.linear)]
    raise ValueError(f"{where}: features extractor {type(fe).__name__} is not supported; "
                     "supported: FlattenExtractor (MlpPolicy), NatureCNN (CnnPolicy)")


def decoder_for(sb3_model, action_space) -> Decoder:
    """argmax (Discrete); tanh squash into the bounds (SAC, TD3, DDPG, gSDE with
    squash_output); else clip to the bounds (PPO, A2C), as SB3's ``predict`` does."""
    from gymnasium import spaces

    algo = type(sb3_model).__name__
    if isinstance(action_space, spaces.Discrete):
        return Decoder("argmax")
    if not isinstance(action_space, spaces.Box):
        raise ValueError(f"action space {action_space} is not supported; "  # noqa: TRY004
                         "supported: Discrete, Box")
    low = np.asarray(action_space.low, dtype=np.float64).ravel()
    high = np.asarray(action_space.high, dtype=np.float64).ravel()
    squash = algo in ("SAC", "TD3", "DDPG") or bool(getattr(sb3_model.policy, "squash_output",
                                                            False))
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"action space {action_space} has infinite bounds; the "
                         f"{'tanh' if squash else 'clip'} decoder needs finite ones")
    return Decoder("tanh" if squash else "clip", tuple(low), tuple(high))


def flat_space_objects(sb3_path, env_space) -> dict:
    """``custom_objects`` for SB3's ``load`` that let an agent trained on a raw Discrete,
    MultiDiscrete or MultiBinary observation space run on deltanet's env of the same task,
    whose observations are that space flattened (:func:`sim.envs.flat_observations`): the
    agent is set up on the flat Box, which its policy sees as the same (one-hot) input vector.
    ``{}`` for an agent trained on a Box, or on a space the env does not flatten to
    ``env_space``."""
    import zipfile

    from gymnasium import spaces
    from stable_baselines3.common.save_util import json_to_data

    with zipfile.ZipFile(sb3_path) as z:
        data = json_to_data(z.read("data").decode())
    saved = data.get("observation_space")
    if not isinstance(saved, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return {}
    if spaces.flatten_space(saved).shape != env_space.shape:
        return {}
    return {"observation_space": env_space}


def sb3_actor(sb3_model) -> Sb3Actor:
    """What SB3's ``predict(obs, deterministic=True)`` computes, as modules and a decoder."""
    from gymnasium import spaces
    from stable_baselines3.common.distributions import (
        CategoricalDistribution,
        DiagGaussianDistribution,
        StateDependentNoiseDistribution,
    )
    from stable_baselines3.common.preprocessing import is_image_space
    from torch import nn

    pol = sb3_model.policy
    algo = type(sb3_model).__name__
    if algo not in SB3_ALGOS:
        raise ValueError(f"algorithm {algo} is not supported; supported: {', '.join(SB3_ALGOS)}")
    obs_space = pol.observation_space
    # SB3 feeds Discrete / MultiDiscrete / MultiBinary observations to the policy as (one-hot)
    # floats: gymnasium's flattening of them, which is what deltanet's envs observe
    flat = isinstance(obs_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))
    if not (flat or isinstance(obs_space, spaces.Box)):
        raise ValueError(f"observation space {obs_space} is not supported (a "
                         "MultiInputPolicy?); supported: Box, Discrete, MultiDiscrete, "
                         "MultiBinary observations")
    if algo in ("PPO", "A2C"):
        ok = (CategoricalDistribution, DiagGaussianDistribution, StateDependentNoiseDistribution)
        if not isinstance(pol.action_dist, ok):
            raise ValueError(f"policy.action_dist: {type(pol.action_dist).__name__} is not "
                             "supported; supported: Categorical (Discrete), DiagGaussian or "
                             "gSDE (Box)")
        for i, m in enumerate(pol.mlp_extractor.policy_net):
            if isinstance(m, nn.Tanh):
                raise ValueError(  # noqa: TRY004 - the CLI reports ValueErrors in one line
                    f"policy.mlp_extractor.policy_net.{i}: Tanh hidden activation (the default "
                    f"of SB3's {algo} MlpPolicy) is not representable; train with "
                    "policy_kwargs=dict(activation_fn=nn.ReLU); supported: ReLU")
        mods = _features(pol.pi_features_extractor, "policy.pi_features_extractor")
        mods += [("policy.mlp_extractor.policy_net", pol.mlp_extractor.policy_net),
                 ("policy.action_net", pol.action_net)]
    elif algo == "DQN":
        q = pol.q_net
        mods = _features(q.features_extractor, "policy.q_net.features_extractor")
        mods += [("policy.q_net.q_net", q.q_net)]
    elif algo == "SAC":
        actor = pol.actor
        if isinstance(actor.mu, nn.Sequential) and any(isinstance(m, nn.Hardtanh)
                                                       for m in actor.mu):
            raise ValueError("policy.actor.mu.1: Hardtanh (SAC's gSDE clip_mean) is not "
                             "representable; train with policy_kwargs=dict(clip_mean=0.0) or "
                             "without use_sde; supported: a Linear mean")
        mods = _features(actor.features_extractor, "policy.actor.features_extractor")
        mods += [("policy.actor.latent_pi", actor.latent_pi), ("policy.actor.mu", actor.mu)]
    else:  # TD3, DDPG: mu ends with the Tanh that squashes the action
        actor = pol.actor
        mu = list(actor.mu)
        if not mu or not isinstance(mu[-1], nn.Tanh):
            raise ValueError("policy.actor.mu does not end with the Tanh squash of TD3's actor")
        mods = _features(actor.features_extractor, "policy.actor.features_extractor")
        mods += [(f"policy.actor.mu.{i}", m) for i, m in enumerate(mu[:-1])]
    image = bool(pol.normalize_images) and is_image_space(obs_space)
    in_shape = ((int(spaces.flatdim(obs_space)),) if flat
                else tuple(int(v) for v in obs_space.shape))
    return Sb3Actor(algo, mods, in_shape, 1.0 / 255.0 if image else 1.0,
                    decoder_for(sb3_model, pol.action_space))


def policy_linears(sb3_model) -> list:
    """The Linear / Conv2d modules that map an observation to the deterministic action, in the
    order of the exported model's layers (what pruning masks)."""
    return torch_chain(sb3_actor(sb3_model).modules)[1]


def export_sb3(sb3_model, env_id: str | None, provenance: dict | None = None, *,
               observation_space=None, obs_offset=None, obs_scale=None,
               **fmt_kwargs) -> Model:
    """SB3 model -> float :class:`pysim.Model` computing its deterministic ``predict``.

    ``observation_space`` (a space or its dict) is recorded in the meta (default: the
    policy's). ``obs_offset`` / ``obs_scale`` (per observation value) are an affine map applied
    to the observation before the policy sees it (VecNormalize), composed with SB3's ``/255``
    for images. ``fmt_kwargs``: placeholder formats for :func:`chain_to_model`."""
    actor = sb3_actor(sb3_model)
    ops, _ = torch_chain(actor.modules)
    n = math.prod(actor.in_shape)
    offset = np.zeros(n) if obs_offset is None else np.asarray(obs_offset, dtype=np.float64)
    scale = np.ones(n) if obs_scale is None else np.asarray(obs_scale, dtype=np.float64)
    scale = scale * actor.image_scale
    identity = not offset.any() and bool(np.all(scale == 1.0))
    meta = model_meta(env_id, observation_space or sb3_model.observation_space,
                      sb3_model.action_space, provenance)
    return chain_to_model(ops, actor.in_shape, actor.decoder, meta=meta,
                          input_scale=() if identity else tuple(scale),
                          input_offset=() if identity else tuple(offset), **fmt_kwargs)

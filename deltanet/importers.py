"""Bring your own policy: stable-baselines3, PyTorch and ONNX policies as deltanet float models.

:func:`import_policy` reads a trained policy and returns a float :class:`pysim.Model` (formats
are placeholders until ``deltanet quantize``) that computes the same deterministic action. Each
format is translated into the framework-neutral chain of :mod:`deltanet.export` and converted by
its :func:`~deltanet.export.chain_to_model`, the one path the training export uses too.

* **stable-baselines3** ``.zip`` (PPO, A2C, DQN, SAC, TD3, DDPG; MlpPolicy and CnnPolicy): the
  modules SB3's ``predict(obs, deterministic=True)`` runs (:func:`deltanet.export.sb3_actor`):
  the features extractor (flatten or NatureCNN), then the actor / Q-network; decoder argmax
  (Discrete), clip into the bounds (PPO/A2C Box) or tanh squash into the bounds (SAC, TD3,
  gSDE with ``squash_output``). SB3's ``/255`` of images is the input scale.
* **PyTorch**: a module saved whole (``torch.save(module)``, loaded with
  ``weights_only=False``: import only files you trust), or a ``state_dict`` plus a JSON layer
  spec (:data:`SPEC_HELP`). ``nn.Sequential`` containers are read in order; any other module
  is traced with ``torch.fx`` and must be a chain (no branch, no residual).
* **ONNX**: one input, one output, a chain of the nodes in :data:`ONNX_SUPPORTED`, ``ai.onnx``
  opsets :data:`ONNX_OPSETS`.

For PyTorch and ONNX the spaces come from ``--env``: Discrete actions are the argmax of the
outputs; Box actions are the outputs clipped into the env's bounds, or, when the network ends
with a Tanh, ``low + (tanh(y) + 1) * (high - low) / 2`` (which is the network's own output when
the bounds are [-1, 1]).

VecNormalize statistics (a ``.pkl`` saved by SB3) are folded into the input affine map,
``x = (obs - mean) / sqrt(var + eps)``; its clip to +-``clip_obs`` is not representable, so the
provenance records whether it can bind (observation values whose bounds lie beyond the clip).

Every refusal is a :class:`ImportRefused` (a ValueError): one line naming the file, the layer
or node, what it is and what is supported.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
from gymnasium import spaces

from deltanet.pysim import Decoder, NetworkConfig

from .atari import FRAME_STACK, is_atari
from .envs import check_model_fits_env, make_env, space_to_dict
from .export import (
    TORCH_SUPPORTED,
    Affine,
    Conv,
    Dense,
    Flatten,
    Relu,
    chain_to_model,
    export_sb3,
    model_meta,
    module_leaves,
    sb3_actor,
    torch_chain,
)
from .options import one_line
from .versions import versions

__all__ = ["FORMATS", "ONNX_OPSETS", "ONNX_SUPPORTED", "SPEC_HELP", "SPEC_LAYERS",
           "ImportRefused", "detect_format", "import_policy", "load_vecnormalize"]

FORMATS = ("sb3", "torch", "onnx")
#: ``ai.onnx`` opsets read (the supported ops' semantics are the same across these).
ONNX_OPSETS = (9, 28)
ONNX_SUPPORTED = ("Gemm (transA=0), MatMul + Add (bias), Conv (2-D, square kernel, equal "
                  "strides and pads, no dilation or groups), Relu, Flatten (axis 1), Reshape "
                  "(flatten only), Identity, BatchNormalization (inference, folded into the "
                  "Gemm/MatMul/Conv before it), Tanh (last node only: squashed actions)")
#: Layer types of a spec and the constructor arguments each takes.
SPEC_LAYERS = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"),
    "BatchNorm1d": ("num_features", "eps"),
    "BatchNorm2d": ("num_features", "eps"),
    "ReLU": (), "Flatten": (), "Identity": (), "Tanh": (),
}
SPEC_HELP = """\
layer spec (--spec, for a PyTorch state_dict): JSON
  {"layers": [{"type": "Linear", "in_features": 4, "out_features": 64},
              {"type": "ReLU"},
              {"type": "Linear", "in_features": 64, "out_features": 2}],
   "input_shape": [4],       (optional; default: the env's observation shape)
   "prefix": "net."}         (optional; stripped from the state_dict keys)
  The layers form an nn.Sequential, so the state_dict keys are "0.weight", "0.bias",
  "2.weight", ... (BatchNorm also "i.running_mean", "i.running_var"). Types and their
  arguments (PyTorch's names and defaults): Linear(in_features, out_features, bias),
  Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias),
  BatchNorm1d/BatchNorm2d(num_features, eps), ReLU, Flatten, Identity, Tanh (last only)."""


class ImportRefused(ValueError):
    """A policy that cannot be imported: one line naming the file and the problem."""


def _refuse(path, text: str):
    raise ImportRefused(one_line(f"{path}: {text}"))


def detect_format(path) -> str:
    """``sb3`` (.zip), ``onnx`` (.onnx) or ``torch`` (.pt, .pth); ValueError otherwise."""
    suffix = Path(path).suffix.lower()
    known = {".zip": "sb3", ".onnx": "onnx", ".pt": "torch", ".pth": "torch"}
    if suffix not in known:
        _refuse(path, f"cannot tell the format from the suffix {suffix or '(none)'!r}; give "
                      "--format sb3|torch|onnx (.zip, .pt/.pth and .onnx are recognised)")
    return known[suffix]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


# ---- the env ------------------------------------------------------------------------------
class _Env:
    """One env of ``env_id``, for its spaces and the final model/env check; ``close()`` it."""

    def __init__(self, env_id: str):
        self.env = make_env(env_id, 0)()
        self.id = env_id
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.obs_shape = tuple(int(v) for v in self.observation_space.shape or ())

    def check(self, model, where) -> None:
        check_model_fits_env(model.replace(meta={**model.meta, "path": str(where)}), self.env)

    def close(self) -> None:
        self.env.close()


def _decoder(env: _Env, squash: bool, where):
    act = env.action_space
    if isinstance(act, spaces.Discrete):
        if squash:
            _refuse(where, f"the network ends with a Tanh but {env.id} has Discrete actions "
                           "(argmax of the outputs); remove the Tanh")
        return Decoder("argmax")
    if not isinstance(act, spaces.Box):
        _refuse(where, f"{env.id} action space {act} is not supported; supported: Discrete, Box")
    low = np.asarray(act.low, dtype=np.float64).ravel()
    high = np.asarray(act.high, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        _refuse(where, f"{env.id} action bounds are not finite; the decoder clips or squashes "
                       "into them")
    return Decoder("tanh" if squash else "clip", tuple(low), tuple(high))


def _obs_space_meta(env: _Env) -> dict:
    if is_atari(env.id):  # the eval env's flat CHW frames, as the Atari export writes them
        return {"type": "Box", "shape": [math.prod(env.obs_shape)], "low": [0.0],
                "high": [255.0], "layout": f"{FRAME_STACK}x84x84 CHW uint8 frames"}
    return space_to_dict(env.observation_space)


def _check_first_layer(ops, in_shape, env: _Env, where) -> None:
    """The input the network's first layer takes against the env's observations."""
    n = math.prod(env.obs_shape)
    if math.prod(in_shape) != n:
        _refuse(where, f"input shape {list(in_shape)} has {math.prod(in_shape)} values but "
                       f"{env.id} observations have {n}")
    for op in ops:
        if isinstance(op, Dense):
            k = np.asarray(op.weight).shape[1]
            if k != n:
                _refuse(where, f"the network takes {k} inputs but {env.id} observations have "
                               f"{n} values")
            return
        if isinstance(op, Conv):
            c = np.asarray(op.weight).shape[1]
            if len(in_shape) != 3 or in_shape[0] != c:
                _refuse(where, f"{op.name}: the first Conv2d takes {c}-channel CxHxW maps but "
                               f"the input shape is {list(in_shape)} ({env.id} observations "
                               f"{list(env.obs_shape)}); give --input-shape C H W")
            return


# ---- VecNormalize --------------------------------------------------------------------------
def load_vecnormalize(path, n_obs: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(offset, scale, record) of a VecNormalize pickle: ``x = (obs - offset) * scale``.

    ``record`` (for the provenance) says whether SB3's clip to +-clip_obs can bind: for every
    observation value whose bounds (the pickled observation space) lie beyond the clip."""
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        with open(path, "rb") as f:
            vn = pickle.load(f)  # the user's own statistics file
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything
        _refuse(path, f"not a VecNormalize pickle ({type(e).__name__}: {e})")
    if not isinstance(vn, VecNormalize):
        _refuse(path, f"holds a {type(vn).__name__}, not a stable-baselines3 VecNormalize")
    if not vn.norm_obs:
        return np.zeros(n_obs), np.ones(n_obs), {"file": Path(path).name, "norm_obs": False}
    if isinstance(vn.obs_rms, dict):
        _refuse(path, "normalises Dict observations; supported: Box observations")
    mean = np.asarray(vn.obs_rms.mean, dtype=np.float64).ravel()
    var = np.asarray(vn.obs_rms.var, dtype=np.float64).ravel()
    if mean.size != n_obs:
        _refuse(path, f"statistics of {mean.size} observation values; the policy takes {n_obs}")
    scale = 1.0 / np.sqrt(var + float(vn.epsilon))
    clip = float(vn.clip_obs)
    space = getattr(vn, "observation_space", None)
    if isinstance(space, spaces.Box) and space.low.size == n_obs:
        lo = np.asarray(space.low, dtype=np.float64).ravel()
        hi = np.asarray(space.high, dtype=np.float64).ravel()
        with np.errstate(invalid="ignore", over="ignore"):
            reach = np.maximum(np.abs(lo - mean), np.abs(hi - mean)) * scale
        bind = np.flatnonzero(~(reach <= clip))
    else:
        bind = np.arange(n_obs)
    record = {"file": Path(path).name, "norm_obs": True, "clip_obs": clip,
              "epsilon": float(vn.epsilon), "clip_exact": bool(bind.size == 0),
              "clip_may_bind": [int(i) for i in bind]}
    if bind.size:
        record["note"] = (f"SB3 clips normalised observations to +-{clip:g}; this model does not "
                          f"clip, so it differs from SB3 where observation values "
                          f"{record['clip_may_bind']} lie more than {clip:g} standard "
                          f"deviations from their mean")
    return mean, scale, record


# ---- stable-baselines3 --------------------------------------------------------------------
_SB3_MODULES = {"stable_baselines3.dqn.policies": "DQN", "stable_baselines3.sac.policies": "SAC",
                "stable_baselines3.td3.policies": "TD3",
                "stable_baselines3.common.policies": "ActorCritic"}


def _sb3_algo(path) -> tuple[str, str]:
    """(algorithm, policy module) from the zip's ``data`` JSON, without loading it."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a third-party reader can raise anything
        _refuse(path, f"not a stable-baselines3 zip ({type(e).__name__}: {e})")
    pc = data.get("policy_class") if isinstance(data, dict) else None
    module = pc.get("__module__", "?") if isinstance(pc, dict) else "?"
    if "recurrent" in module:
        _refuse(path, f"policy from {module} is recurrent (LSTM), not representable; "
                      "supported: MlpPolicy / CnnPolicy of PPO, A2C, DQN, SAC, TD3")
    kind = _SB3_MODULES.get(module)
    if kind is None:
        _refuse(path, f"policy class from {module!r} is not supported; supported: MlpPolicy / "
                      "CnnPolicy of stable-baselines3 PPO, A2C, DQN, SAC, TD3")
    if kind == "ActorCritic":
        kind = "PPO" if "clip_range" in data else "A2C"
    if kind == "TD3" and data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0:
        kind = "DDPG"
    return kind, module


def _import_sb3(path, env: _Env | None, vecnormalize, log) -> tuple:
    import stable_baselines3 as sb3

    algo, module = _sb3_algo(path)
    try:
        agent = getattr(sb3, algo).load(path, device="cpu")
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a third-party reader can raise anything
        _refuse(path, f"stable-baselines3 cannot load it as {algo} ({type(e).__name__}: {e})")
    try:
        actor = sb3_actor(agent)
    except ValueError as e:
        _refuse(path, str(e))
    pol_shape = actor.in_shape
    obs_meta = None
    if env is not None:
        atari_flat = (is_atari(env.id) and len(env.obs_shape) == 1
                      and pol_shape == (FRAME_STACK, 84, 84)
                      and env.obs_shape[0] == math.prod(pol_shape))
        if env.obs_shape != pol_shape and not atari_flat:
            _refuse(path, f"the SB3 policy observes {list(pol_shape)} but {env.id} observations "
                          f"are {list(env.obs_shape)} (deltanet does not reorder them, e.g. "
                          "HWC -> CHW)")
        if agent.action_space != env.action_space:
            _refuse(path, f"the SB3 action space {agent.action_space} is not {env.id}'s "
                          f"{env.action_space}")
        obs_meta = _obs_space_meta(env)
    offset = scale = None
    prov = {"algo": algo, "policy": type(agent.policy).__name__, "policy_module": module,
            "activation": "relu"}
    if vecnormalize is not None:
        offset, scale, prov["vecnormalize"] = load_vecnormalize(vecnormalize, math.prod(pol_shape))
        if "note" in prov["vecnormalize"]:
            log(f"note: {prov['vecnormalize']['note']} (recorded in the provenance)")
    try:
        model = export_sb3(agent, env.id if env else None, prov, observation_space=obs_meta,
                           obs_offset=offset, obs_scale=scale)
    except ValueError as e:
        _refuse(path, str(e))
    return model, prov


# ---- PyTorch --------------------------------------------------------------------------------
def _spec_module(spec_path):
    """An nn.Sequential built from a layer spec, and the spec's dict."""
    from torch import nn

    try:
        spec = json.loads(Path(spec_path).read_text())
    except OSError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        _refuse(spec_path, f"not a JSON layer spec ({e})")
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) \
            or not spec["layers"]:
        _refuse(spec_path, 'needs {"layers": [...]} with at least one layer')
    unknown = set(spec) - {"layers", "input_shape", "prefix"}
    if unknown:
        _refuse(spec_path, f"unknown fields {sorted(unknown)}; known: layers, input_shape, "
                           "prefix")
    mods = []
    for i, entry in enumerate(spec["layers"]):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in SPEC_LAYERS:
            _refuse(spec_path, f"layer {i}: type {kind!r} is not supported; supported: "
                               f"{', '.join(SPEC_LAYERS)}")
        args = {k: v for k, v in entry.items() if k != "type"}
        bad = set(args) - set(SPEC_LAYERS[kind])
        if bad:
            _refuse(spec_path, f"layer {i} ({kind}): unknown arguments {sorted(bad)}; "
                               f"{kind} takes {', '.join(SPEC_LAYERS[kind]) or 'none'}")
        try:
            mods.append(getattr(nn, kind)(**args))
        except (TypeError, ValueError, RuntimeError) as e:
            _refuse(spec_path, f"layer {i} ({kind}): {e}")
    return nn.Sequential(*mods), spec


def _load_torch(path, spec_path):
    import torch
    from torch import nn

    spec = {}
    try:
        if spec_path is not None:
            module, spec = _spec_module(spec_path)
            sd = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(sd, dict):
                _refuse(path, f"holds a {type(sd).__name__}, not a state_dict (--spec is for "
                              "state_dicts; drop it to import a whole module)")
            prefix = spec.get("prefix", "")
            sd = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v
                  for k, v in sd.items()}
            module.load_state_dict(sd, strict=True)
        else:
            module = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, ImportRefused):
        raise
    except Exception as e:  # noqa: BLE001 - a third-party reader can raise anything
        hint = "" if spec_path else ("; a whole module needs its class importable here, else "
                                     "save its state_dict and give --spec")
        _refuse(path, f"cannot load it with torch ({type(e).__name__}: {e}){hint}")
    if isinstance(module, dict):
        _refuse(path, "holds a state_dict: give its layers with --spec SPEC.json (see --help)")
    if not isinstance(module, nn.Module):
        _refuse(path, f"holds a {type(module).__name__}, not a torch.nn.Module")
    return module.eval(), spec


def _fx_chain(module, where) -> list:
    """(name, module) pairs of a module whose traced forward is a chain of submodules and
    relu/flatten calls."""
    import torch
    import torch.nn.functional as F
    from torch import fx, nn

    try:
        gm = fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - a third-party reader can raise anything
        _refuse(where, f"{type(module).__name__}.forward cannot be traced with torch.fx "
                       f"({type(e).__name__}: {e}); save an nn.Sequential instead")
    out, cur = [], None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if cur is not None:
                _refuse(where, f"forward takes more than one input ({node.name}); supported: "
                               "one observation tensor")
            cur = node
            continue
        if node.op == "output":
            if node.args[0] is not cur:
                _refuse(where, "forward does not return the end of its chain")
            break
        if len(cur.users) != 1:
            users = ", ".join(u.name for u in cur.users)
            _refuse(where, f"{cur.name} feeds {len(cur.users)} operations ({users}): a branch, "
                           "a residual or a computed reshape (use nn.Flatten or "
                           "torch.flatten(x, 1)); supported: a chain")
        args = list(node.args) + list(node.kwargs.values())
        if not args or args[0] is not cur or any(isinstance(a, fx.Node) for a in args[1:]):
            _refuse(where, f"{node.name} ({node.target}) does not take only the previous "
                           "result (a branch or a residual); supported: a chain")
        if node.op == "call_module":
            out.append((str(node.target), gm.get_submodule(node.target)))
        elif node.op in ("call_function", "call_method") and node.target in (
                F.relu, torch.relu, "relu"):
            out.append((node.name, nn.ReLU()))
        elif node.op in ("call_function", "call_method") and node.target in (
                torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                _refuse(where, f"{node.name}: flatten(start_dim={start}, end_dim={end}) is not "
                               "supported; supported: flatten(x, 1)")
            out.append((node.name, nn.Flatten()))
        elif node.op in ("call_function", "call_method") and node.target in (torch.tanh, "tanh"):
            out.append((node.name, nn.Tanh()))
        else:
            _refuse(where, f"{node.name} ({getattr(node.target, '__name__', node.target)}) is "
                           f"not supported; supported: {TORCH_SUPPORTED}")
        cur = node
    return out


def _import_torch(path, env: _Env, spec_path, input_shape) -> tuple:
    from torch import nn

    module, spec = _load_torch(path, spec_path)
    where = path
    if isinstance(module, nn.Sequential):
        named = list(module_leaves("", module))
    else:
        named = [(n, m) for top, m0 in _fx_chain(module, where)
                 for n, m in module_leaves(top, m0)]
    squash = bool(named) and isinstance(named[-1][1], nn.Tanh)
    if squash:
        named = named[:-1]
    try:
        ops, _ = torch_chain(named)
    except ValueError as e:
        _refuse(where, str(e))
    shape = input_shape or spec.get("input_shape") or env.obs_shape
    prov = {"module": type(module).__name__, "spec": str(spec_path) if spec_path else None,
            "squashed_output": squash}
    return _chain_model(ops, shape, env, squash, prov, where)


def _chain_model(ops, in_shape, env: _Env, squash: bool, prov: dict, where):
    if not isinstance(in_shape, (list, tuple)) or not in_shape \
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                       for v in in_shape):
        _refuse(where, f"input shape {in_shape!r} is not a list of positive integers")
    in_shape = tuple(in_shape)
    _check_first_layer(ops, in_shape, env, where)
    decoder = _decoder(env, squash, where)
    prov = {**prov, "input_shape": list(in_shape), "activation": "relu"}
    meta = model_meta(env.id, _obs_space_meta(env), env.action_space, prov)
    try:
        model = chain_to_model(ops, in_shape, decoder, meta=meta)
    except ValueError as e:
        _refuse(where, str(e))
    return model, prov


# ---- ONNX -----------------------------------------------------------------------------------
def _onnx_chain(path) -> tuple[list, tuple | None, bool, dict]:
    """(ops, input shape from the graph or None, ends with Tanh, provenance)."""
    import onnx
    from onnx import numpy_helper

    try:
        m = onnx.load(str(path))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a third-party reader can raise anything
        _refuse(path, f"not an ONNX model ({type(e).__name__}: {e})")
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    lo, hi = ONNX_OPSETS
    if opset is None or not lo <= opset <= hi:
        _refuse(path, f"ai.onnx opset {opset} is not supported; supported: opsets {lo} to {hi}")
    g = m.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        _refuse(path, f"the graph has {len(inputs)} inputs and {len(g.output)} outputs; "
                      "supported: one observation input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    graph_shape = None
    if len(dims) >= 2 and all(d.HasField("dim_value") for d in dims[1:]):
        graph_shape = tuple(int(d.dim_value) for d in dims[1:])
    uses: dict[str, int] = {}
    for node in g.node:
        for x in node.input:
            uses[x] = uses.get(x, 0) + 1
    uses[g.output[0].name] = uses.get(g.output[0].name, 0) + 1
    cur = inputs[0].name
    rank = len(dims) - 1 if dims else None
    ops: list = []
    squash = False
    prev_layer = False  # the previous node made the last Dense/Conv op (an Add may fold into it)
    for node in g.node:
        name, op = node.name or node.output[0], node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        here = f"node {name!r} ({op})"
        if node.domain not in ("", "ai.onnx"):
            _refuse(path, f"{here} is from domain {node.domain!r}; supported: ai.onnx nodes "
                          f"{ONNX_SUPPORTED}")
        if op == "Constant":
            if "value" not in attrs:
                _refuse(path, f"{here}: only tensor constants ('value') are supported")
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"]).astype(np.float64)
            continue
        if squash:
            _refuse(path, f"{here} follows a Tanh; a Tanh is supported only as the last node")
        live = [x for x in node.input if x and x not in consts]
        if live != [cur] or (node.input[0] != cur and op != "Add"):
            _refuse(path, f"{here} takes {live or 'only constants'}, not just the running "
                          f"tensor {cur!r} (a branch, a residual or a computed shape?); "
                          f"supported: a chain of {ONNX_SUPPORTED}")
        if uses.get(cur, 0) != 1:
            users = ", ".join(n.op_type for n in g.node if cur in n.input)
            _refuse(path, f"tensor {cur!r} feeds {uses.get(cur, 0)} nodes ({users}): a branch, "
                          "a residual or a computed reshape (export with nn.Flatten); "
                          "supported: a chain")
        for extra in node.output[1:]:
            if extra and uses.get(extra):
                _refuse(path, f"{here}: its output {extra!r} is used; supported: the first "
                              "output only")

        def const(i, what, node=node, here=here):
            if len(node.input) <= i or not node.input[i]:
                return None
            if node.input[i] not in consts:
                _refuse(path, f"{here}: {what} {node.input[i]!r} is not a constant")
            return consts[node.input[i]]

        made_layer = False
        if op == "Gemm":
            if attrs.get("transA", 0):
                _refuse(path, f"{here}: transA=1 is not supported; supported: transA=0")
            b = const(1, "weight")
            w = b if attrs.get("transB", 0) else b.T
            c = const(2, "bias")
            if c is not None and c.size not in (1, w.shape[0]):
                _refuse(path, f"{here}: bias of shape {list(c.shape)} for {w.shape[0]} outputs")
            bias = None if c is None else np.broadcast_to(
                c.reshape(-1) * attrs.get("beta", 1.0), (w.shape[0],)).copy()
            ops.append(Dense(w * attrs.get("alpha", 1.0), bias, name))
            made_layer, rank = True, 1
        elif op == "MatMul":
            b = const(1, "weight")
            if b is None or b.ndim != 2:
                _refuse(path, f"{here}: needs a 2-D constant weight as its second input")
            ops.append(Dense(b.T, None, name))
            made_layer, rank = True, 1
        elif op == "Add":
            other = [x for x in node.input if x != cur]
            if not prev_layer or len(other) != 1:
                _refuse(path, f"{here}: an Add is supported only as the bias right after a "
                              "MatMul/Gemm/Conv")
            last = ops[-1]
            n = np.asarray(last.weight).shape[0]
            c = consts[other[0]]
            if c.size == 1:
                per = np.full(n, float(c.reshape(-1)[0]))
            elif c.size == n and (c.shape[-1] == n if isinstance(last, Dense)
                                  else c.ndim >= 3 and c.shape[-3:] == (n, 1, 1)):
                per = c.reshape(-1)
            else:
                _refuse(path, f"{here}: constant of shape {list(c.shape)} is not a bias of the "
                              f"{n} outputs before it")
            bias = (np.zeros(n) if last.bias is None else np.asarray(last.bias)) + per
            ops[-1] = (Dense(last.weight, bias, last.name) if isinstance(last, Dense) else
                       Conv(last.weight, bias, last.stride, last.padding, last.name))
            made_layer = True
        elif op == "Conv":
            w = const(1, "weight")
            if w is None or w.ndim != 4:
                _refuse(path, f"{here}: only 2-D convolutions with a constant weight")
            ks = list(attrs.get("kernel_shape", w.shape[2:]))
            strides = list(attrs.get("strides", [1, 1]))
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID") \
                    or attrs.get("group", 1) != 1 \
                    or any(d != 1 for d in attrs.get("dilations", [1, 1])) \
                    or ks[0] != ks[1] or strides[0] != strides[1] or len(set(pads)) != 1:
                _refuse(path, f"{here}: kernel {ks}, strides {strides}, pads {pads}, group "
                              f"{attrs.get('group', 1)}, dilations {attrs.get('dilations')}, "
                              f"auto_pad {attrs.get('auto_pad', 'NOTSET')} not supported; "
                              "supported: square kernel, equal strides, equal pads, group 1, "
                              "dilation 1")
            ops.append(Conv(w, const(2, "bias"), int(strides[0]), int(pads[0]), name))
            made_layer, rank = True, 3
        elif op == "Relu":
            ops.append(Relu(name))
        elif op == "Flatten":
            axis = attrs.get("axis", 1)
            if axis != 1 and not (rank is not None and axis == -rank):
                _refuse(path, f"{here}: axis {axis} is not supported; supported: axis 1 (keep "
                              "the batch axis)")
            ops.append(Flatten(name))
            rank = 1
        elif op == "Reshape":
            t = const(1, "shape")
            t = [int(v) for v in np.asarray(t).reshape(-1)] if t is not None else []
            zero_ok = not attrs.get("allowzero", 0)
            if len(t) != 2 or t[0] not in ((-1, 0) if zero_ok else (-1,)) + (
                    (batch,) if batch else ()) or not (t[1] == -1 or t[1] > 0):
                _refuse(path, f"{here}: target shape {t} is not a flatten; supported: "
                              "[batch, -1] or [batch, n]")
            ops.append(Flatten(name, None if t[1] == -1 else t[1]))
            rank = 1
        elif op == "Identity":
            pass
        elif op == "BatchNormalization":
            if attrs.get("training_mode", 0):
                _refuse(path, f"{here}: training_mode=1 is not supported; supported: inference")
            sc, bb, mean, var = (const(i, w) for i, w in
                                 enumerate(("scale", "bias", "mean", "var"), start=1))
            s = sc / np.sqrt(var + attrs.get("epsilon", 1e-5))
            ops.append(Affine(s, bb - mean * s, name))
        elif op == "Tanh":
            squash = True
        else:
            _refuse(path, f"{here} is not supported; supported (opsets {lo} to {hi}): "
                          f"{ONNX_SUPPORTED}")
        prev_layer = made_layer
        cur = node.output[0]
    if cur != g.output[0].name:
        _refuse(path, f"the graph output {g.output[0].name!r} is not the end of the chain "
                      f"({cur!r})")
    prov = {"opset": int(opset), "producer": f"{m.producer_name} {m.producer_version}".strip(),
            "squashed_output": squash}
    return ops, graph_shape, squash, prov


def _import_onnx(path, env: _Env, input_shape) -> tuple:
    ops, graph_shape, squash, prov = _onnx_chain(path)
    if input_shape and graph_shape and tuple(input_shape) != graph_shape:
        _refuse(path, f"--input-shape {list(input_shape)} is not the graph's input shape "
                      f"{list(graph_shape)}")
    shape = input_shape or graph_shape or env.obs_shape
    return _chain_model(ops, shape, env, squash, prov, path)


# ---- the entry point ------------------------------------------------------------------------
def import_policy(source, *, fmt: str | None = None, env_id: str | None = None,
                  spec=None, vecnormalize=None, input_shape=None, log=print):
    """Read ``source`` (``fmt``: sb3, torch or onnx; None: from the suffix) and return a float
    :class:`pysim.Model` for ``env_id``. ``spec``: layer spec of a PyTorch state_dict;
    ``vecnormalize``: a VecNormalize pickle folded into the input map; ``input_shape``: the
    network's input shape (PyTorch / ONNX; default from the graph, spec or env)."""
    source = Path(source)
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        _refuse(source, f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}")
    for p in (source, spec, vecnormalize):
        if p is not None and not Path(p).is_file():
            _refuse(p, "no such file" if not Path(p).exists() else "is not a file")
    if spec is not None and fmt != "torch":
        _refuse(spec, "--spec applies to PyTorch state_dicts (--format torch) only")
    if input_shape is not None and fmt == "sb3":
        _refuse(source, "--input-shape applies to PyTorch and ONNX models; an SB3 zip records "
                        "its observation shape")
    if env_id is None and fmt != "sb3":
        _refuse(source, f"--env is required for {fmt} models (the observation and action "
                        "spaces come from the env)")
    env = _Env(env_id) if env_id else None
    try:
        if fmt == "sb3":
            model, prov = _import_sb3(source, env, vecnormalize, log)
        else:
            if fmt == "torch":
                model, prov = _import_torch(source, env, spec, input_shape)
            else:
                model, prov = _import_onnx(source, env, input_shape)
            if vecnormalize is not None:
                off, sc, rec = load_vecnormalize(vecnormalize, model.config.n_in)
                if "note" in rec:
                    log(f"note: {rec['note']} (recorded in the provenance)")
                prov = {**prov, "vecnormalize": rec}
                cfg = model.config
                model = model.replace(config=NetworkConfig(
                    cfg.input_fmt, cfg.layers, cfg.decoder, tuple(sc), tuple(off)))
        prov = {**prov, "imported_from": source.name, "format": fmt,
                "source_sha256": _sha256(source), "versions": versions()}
        model = model.replace(meta={**model.meta, "provenance": prov})
        if env is not None:
            env.check(model, source)
    finally:
        if env is not None:
            env.close()
    return model

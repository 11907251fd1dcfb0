"""rl-zoo3's tuned hyper-parameters, read from the YAML files its package ships.

Where they come from
--------------------
The ``rl_zoo3`` package (``rl_zoo3/hyperparams/{ppo,a2c,dqn,sac,td3}.yml``) is read as data: the
files are found through the installed distribution, without importing ``rl_zoo3`` (its import
pulls in optuna, huggingface and more). rl_zoo3 2.7.0 asks for ``gymnasium<1.3`` while deltanet
pins gymnasium 1.4.0, so it cannot be a dependency pip resolves: the Makefile installs it with
``pip install --no-deps rl_zoo3==2.7.0`` (:data:`ZOO_VERSION`); only its YAML files are used.
Without it, every env gets the algorithm defaults and the source line says why.

Parsing (no ``eval``)
---------------------
The files are read with ``yaml.safe_load`` (``!!float 1e5`` is a standard tag). Two kinds of
values are small Python expressions in strings: ``policy_kwargs`` (``"dict(net_arch=[256,
256], activation_fn=nn.ReLU)"``) and ``normalize`` (``"{'norm_obs': True, 'norm_reward':
False}"``). :func:`parse_expr` reads them from Python's syntax tree, accepting only ``dict(k=v,
...)``, ``{'k': v}``, lists, tuples, numbers (with a sign), strings, True/False/None and
``nn.<Name>`` (a torch activation, see below); anything else (other names, calls, operators) is
refused with the text and what is allowed.

Mapping an entry to deltanet's training (:func:`zoo_hyperparams`)
--------------------------------------------------------------
* ``n_timesteps`` -> the training budget (``--steps`` overrides); ``n_envs`` (default 1);
* ``policy``: ``MlpPolicy`` only (deltanet exports MLPs; Atari has its own table);
* ``normalize``: ``true`` or a dict of VecNormalize options -> train with SB3's VecNormalize
  (``gamma`` taken from the entry's ``gamma``, as rl-zoo does); the statistics are folded into
  the artifact's input affine map on export (:func:`deltanet.importers.load_vecnormalize`);
* ``policy_kwargs``: ``net_arch`` is the net (``--net`` overrides); ``activation_fn`` always
  ends up ``nn.ReLU`` because deltanet runs ReLU hidden layers - an entry asking for another
  activation, or an algorithm whose SB3 default is Tanh (PPO, A2C) without one, is switched to
  ReLU and the notes say so; other keys (``log_std_init``, ``ortho_init``, ...) go to SB3;
* ``noise_type`` / ``noise_std`` (TD3): Gaussian or Ornstein-Uhlenbeck action noise;
* ``lin_X`` values of ``learning_rate``, ``clip_range``, ``clip_range_vf``: a schedule falling
  linearly from X to 0 (:func:`schedule`); every other key goes to the SB3 constructor;
* entries that need what deltanet does not reproduce (``env_wrapper``, ``frame_stack``,
  ``callback``, ``replay_buffer_class``, ``env_kwargs``, ``vec_env_wrapper``, or a policy other
  than ``MlpPolicy``) are not used: the env gets the algorithm defaults and the notes say why;
* an env without an entry of its own takes the entry of the newest earlier version of the
  same task (:func:`zoo_entry`: ``LunarLander-v3`` -> ``LunarLander-v2``, ``Hopper-v5`` ->
  ``Hopper-v4``, ``InvertedPendulum-v5`` -> ``InvertedPendulum-v2``: gymnasium renamed or
  revised them after rl-zoo3 tuned them), and the notes say so; an env without any gets the
  algorithm defaults.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import re
from functools import cache
from pathlib import Path

import yaml

#: the rl_zoo3 release the Makefile installs (with ``--no-deps``: only its YAML files are used)
ZOO_VERSION = "2.7.0"
ZOO_DIST = "rl_zoo3"
#: algorithms whose files are read
ZOO_ALGOS = ("ppo", "a2c", "dqn", "sac", "td3")
#: gymnasium ids whose entry may be filed under an older id (used only when the file has none
#: for the new one)
#: an env id's task name and version: ``Hopper-v5`` -> (``Hopper``, 5)
_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")
#: entry keys deltanet does not reproduce: such an entry is not used
UNSUPPORTED_KEYS = ("env_wrapper", "frame_stack", "callback", "replay_buffer_class",
                    "env_kwargs", "vec_env_wrapper", "eval_env_wrapper")
#: keys whose ``lin_X`` value is a linear schedule (as in rl-zoo)
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
#: VecNormalize options an entry's ``normalize`` dict may set
NORMALIZE_KEYS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")
#: algorithms whose SB3 MlpPolicy uses Tanh unless told otherwise
TANH_DEFAULT = ("ppo", "a2c")
#: longest expression string parsed
MAX_EXPR = 2000
ALLOWED = ("allowed: dict(key=value, ...), {'key': value}, [...], (...), numbers, strings, "
           "True/False/None, nn.<Activation>")


def _refuse(text: str):
    """A bad file or entry: ValueError, which the CLI prints as one line."""
    raise ValueError(text)


class NnName(str):
    """A ``nn.<Name>`` in a parsed expression (a torch.nn class named, not imported)."""


def parse_expr(text, what: str = "expression"):
    """The value of a small Python literal expression (see the module doc), without eval.

    ValueError naming ``what``, the text and what is allowed for anything else."""
    if not isinstance(text, str):
        return text
    if len(text) > MAX_EXPR:
        raise ValueError(f"{what}: longer than {MAX_EXPR} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{what} {text!r}: not an expression ({e.msg}); {ALLOWED}") from None

    def bad(node, why):
        raise ValueError(f"{what} {text!r}: {why}; {ALLOWED}")

    def val(node, depth=0):
        if depth > 20:
            bad(node, "nested too deeply")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (bool, int, float, str)) or node.value is None:
                return node.value
            bad(node, f"constant {node.value!r} is not allowed")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = val(node.operand, depth + 1)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad(node, "a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.List):
            return [val(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(val(e, depth + 1) for e in node.elts)
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                    bad(node, "dict keys must be strings")
                out[k.value] = val(v, depth + 1)
            return out
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "dict"):
                bad(node, f"call of {ast.unparse(node.func)!r} is not allowed (only dict(...))")
            if node.args or any(k.arg is None for k in node.keywords):
                bad(node, "dict(...) takes key=value arguments only")
            return {k.arg: val(k.value, depth + 1) for k in node.keywords}
        if isinstance(node, ast.Attribute):
            if (isinstance(node.value, ast.Name) and node.value.id == "nn"
                    and re.fullmatch(r"[A-Z][A-Za-z0-9]*", node.attr)):
                return NnName(node.attr)
            bad(node, f"name {ast.unparse(node)!r} is not allowed (only nn.<Activation>)")
        if isinstance(node, ast.Name):
            bad(node, f"name {node.id!r} is not allowed")
        bad(node, f"{type(node).__name__} is not allowed")

    return val(tree.body)


# ---- the files ------------------------------------------------------------------------------
def zoo_folder() -> Path | None:
    """The installed ``rl_zoo3/hyperparams`` folder (found without importing rl_zoo3)."""
    try:
        spec = importlib.util.find_spec(ZOO_DIST)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "hyperparams"
    return folder if folder.is_dir() else None


def zoo_version() -> str | None:
    try:
        return importlib.metadata.version(ZOO_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        _refuse(f"{path}: not a mapping of env ids to hyper-parameters")
    return data


def zoo_table(algo: str) -> dict | None:
    """``{env_id: entry}`` of ``<algo>.yml`` (a deep copy), or None without rl_zoo3."""
    folder = zoo_folder()
    if folder is None or not (folder / f"{algo}.yml").is_file():
        return None
    return copy.deepcopy(_load(str(folder / f"{algo}.yml")))


def zoo_entry(env_id: str, table: dict) -> tuple[str | None, dict | None, list]:
    """``(name the entry is filed under, entry, notes)``; ``(None, None, [])`` if none."""
    if env_id in table:
        return env_id, table[env_id], []
    m = _VERSIONED.match(env_id)
    if m is None:
        return None, None, []
    earlier = []
    for key in table:
        k = _VERSIONED.match(str(key))
        if k and k["name"] == m["name"] and int(k["version"]) < int(m["version"]):
            earlier.append((int(k["version"]), key))
    if not earlier:
        return None, None, []
    alias = max(earlier)[1]
    note = (f"no {env_id} entry: using the {alias} entry (an earlier version of the same task, "
            "tuned before gymnasium renamed or revised it)")
    return alias, table[alias], [note]


# ---- mapping an entry -----------------------------------------------------------------------
def schedule(value, key: str = "value"):
    """``lin_X`` -> a function of SB3's progress_remaining falling from X to 0; else value."""
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            start = float(value[4:])
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not lin_<number>") from None
        return lambda progress_remaining: progress_remaining * start
    return value


def _normalize(value, kwargs: dict, where: str):
    if isinstance(value, str):
        value = parse_expr(value, f"{where} normalize")
    if value is True:
        value = {}
    elif value is False or value is None:
        return None
    if not isinstance(value, dict):
        _refuse(f"{where} normalize: {value!r} is neither true/false nor a dict")
    unknown = sorted(set(value) - set(NORMALIZE_KEYS))
    if unknown:
        raise ValueError(f"{where} normalize: unknown VecNormalize options {unknown}; known: "
                         f"{list(NORMALIZE_KEYS)}")
    out = dict(value)
    if "gamma" in kwargs and "gamma" not in out:  # as rl-zoo: the return discount of the algo
        out["gamma"] = kwargs["gamma"]
    return out


def _policy_kwargs(value, algo: str, where: str, notes: list) -> tuple:
    """(net_arch or None, other policy kwargs) with the activation forced to ReLU."""
    pk = parse_expr(value, f"{where} policy_kwargs") if isinstance(value, str) else value
    pk = {} if pk is None else pk
    if not isinstance(pk, dict):
        _refuse(f"{where} policy_kwargs: {value!r} is not a dict; {ALLOWED}")
    pk = dict(pk)
    act = pk.pop("activation_fn", None)
    if act is not None and not isinstance(act, NnName):
        raise ValueError(f"{where} policy_kwargs: activation_fn {act!r} is not nn.<Activation>")
    if act is not None and act != "ReLU":
        notes.append(f"activation_fn nn.{act} -> nn.ReLU (deltanet runs ReLU hidden layers)")
    elif act is None and algo in TANH_DEFAULT:
        notes.append(f"activation nn.ReLU instead of SB3's default nn.Tanh for {algo.upper()} "
                     "(deltanet runs ReLU hidden layers)")
    for k, v in pk.items():
        if isinstance(v, NnName) or (isinstance(v, dict) and any(isinstance(x, NnName)
                                                                  for x in v.values())):
            raise ValueError(f"{where} policy_kwargs: {k}={v!r}: only activation_fn may name "
                             "an nn class")
    return pk.pop("net_arch", None), pk


def zoo_hyperparams(env_id: str, algo: str, table: dict | None = None,
                    version: str | None = None) -> dict | None:
    """Hyper-parameters for ``(env_id, algo)`` from rl-zoo3's file (``table``: that file's
    contents, default the installed one), or None when it has no usable entry; see the module
    doc. The result: ``source`` (one line), ``notes``, ``steps``, ``n_envs``, ``net_arch``
    (None: the default), ``policy_kwargs``, ``normalize`` (None or VecNormalize options),
    ``noise`` (None or ``{"type", "std"}``), ``kwargs`` (algorithm kwargs as in the file)
    and, when unusable, ``unusable`` (why)."""
    if table is None:
        table = zoo_table(algo)
        version = zoo_version()
        if table is None:
            return None
    name, entry, notes = zoo_entry(env_id, table)
    if entry is None:
        return None
    source = f"rl-zoo3 {version or '?'} {algo}.yml {name}"
    where = source
    if not isinstance(entry, dict):
        _refuse(f"{where}: entry is not a mapping")
    entry = dict(entry)
    blocked = [k for k in UNSUPPORTED_KEYS if k in entry]
    policy = entry.pop("policy", "MlpPolicy")
    if policy != "MlpPolicy":
        blocked.append(f"policy {policy}")
    if blocked:
        return {"source": source, "unusable": f"needs {', '.join(blocked)}, which deltanet "
                                               "does not reproduce (MlpPolicy on the plain env)"}
    steps = entry.pop("n_timesteps", None)
    n_envs = entry.pop("n_envs", 1)
    for key, v in (("n_timesteps", steps), ("n_envs", n_envs)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or v < 1 or v != int(v)):
            raise ValueError(f"{where}: {key} {v!r} is not a positive integer")
    normalize = entry.pop("normalize", False)
    noise_type = entry.pop("noise_type", None)
    noise_std = entry.pop("noise_std", None)
    net_arch, pk = _policy_kwargs(entry.pop("policy_kwargs", None), algo, where, notes)
    kwargs = entry  # everything else goes to the SB3 constructor
    if algo == "sac" and kwargs.get("use_sde") and pk.get("clip_mean", 2.0) != 0.0:
        # gSDE clips SAC's mean with a Hardtanh, which an artifact (Linear layers) cannot hold
        pk = {**pk, "clip_mean": 0.0}
        notes.append("clip_mean 0.0 with use_sde (SAC's Hardtanh mean clip is not "
                     "representable: deltanet exports a Linear mean)")
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    for k in SCHEDULE_KEYS:
        if k in kwargs:
            schedule(kwargs[k], f"{where} {k}")  # refuse a bad lin_ now
    noise = None
    if noise_type is not None:
        if noise_type not in ("normal", "ornstein-uhlenbeck"):
            raise ValueError(f"{where}: noise_type {noise_type!r}; known: normal, "
                             "ornstein-uhlenbeck")
        noise = {"type": noise_type, "std": float(noise_std if noise_std is not None else 0.1)}
    return {"source": source, "notes": notes, "steps": None if steps is None else int(steps),
            "n_envs": int(n_envs), "net_arch": net_arch, "policy_kwargs": pk,
            "normalize": _normalize(normalize, kwargs, where), "noise": noise,
            "kwargs": kwargs}

"""The model artifact: one ``.npz`` file (a zip of numpy arrays, no pickles).

Contents
--------
``meta``            uint8 array holding UTF-8 JSON (below).
``layer{i}.weight`` float32 (n_out, n_in) float weights (pruned entries may be non-zero; the
                    mask decides).
``layer{i}.bias``   float32 (n_out,).
``layer{i}.mask``   bool (n_out, n_in); False = pruned.

``meta`` JSON fields: ``schema`` ("deltanet-model"), ``schema_version`` (1), ``env_id``,
``observation_space`` / ``action_space`` (``{"type": "Box", "shape", "low", "high"}`` or
``{"type": "Discrete", "n"}``; infinite bounds written as the strings "inf"/"-inf"),
``network`` (:meth:`pysim.config.NetworkConfig.to_dict`), ``provenance`` (free-form: algorithm,
steps, seed, pruning, calibration, versions), ``arrays`` (name -> shape, dtype) and
``checksum`` ("sha256:<hex>" over the JSON without the checksum, keys sorted, then every array's
name and bytes in name order).

Writing is atomic: the file is written beside the target and renamed over it, so a crash never
leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic
from .config import NetworkConfig
from .model import LayerParams, Model

SCHEMA = "deltanet-model"
SCHEMA_VERSION = 1


class ModelFormatError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


def _clean(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _arrays(model: Model) -> dict:
    out = {}
    for i, p in enumerate(model.params):
        out[f"layer{i}.weight"] = np.ascontiguousarray(p.weight, dtype=np.float32)
        out[f"layer{i}.bias"] = np.ascontiguousarray(p.bias, dtype=np.float32)
        out[f"layer{i}.mask"] = np.ascontiguousarray(p.mask, dtype=bool)
    return out


def _checksum(meta: dict, arrays: dict) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return "sha256:" + h.hexdigest()


def model_meta(model: Model) -> dict:
    """The JSON metadata of ``model`` (without arrays), as written into the file."""
    m = model.meta
    arrays = _arrays(model)
    meta = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "env_id": m.get("env_id"),
        "observation_space": _clean(m.get("observation_space")),
        "action_space": _clean(m.get("action_space")),
        "network": model.config.to_dict(),
        "provenance": _clean(m.get("provenance", {})),
        "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()},
    }
    meta["checksum"] = _checksum(meta, arrays)
    return meta


def save_model(model: Model, path) -> Path:
    """Write ``model`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = _arrays(model)
    meta = model_meta(model)
    blob = np.frombuffer(json.dumps(meta, sort_keys=True, indent=1).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=blob, **arrays)
    write_bytes_atomic(path, buf.getvalue())
    return path


def _unclean_space(sp):
    if not isinstance(sp, dict):
        return sp
    out = dict(sp)
    for k in ("low", "high"):
        if k in out:
            out[k] = [float(v) for v in out[k]]
    return out


def load_model(path) -> Model:
    """Read and check a model file; raises :class:`ModelFormatError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "meta" not in names:
                raise ModelFormatError(f"{path}: not a deltanet model (no 'meta' entry)")
            arrays = {n: z[n] for n in names if n != "meta"}
            meta_bytes = z["meta"].tobytes()
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFormatError(f"{path}: unreadable or truncated model file ({e})") from None
    try:
        meta = json.loads(meta_bytes.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: model metadata is not valid JSON ({e})") from None
    if meta.get("schema") != SCHEMA:
        raise ModelFormatError(f"{path}: field 'schema' is {meta.get('schema')!r}, "
                               f"expected {SCHEMA!r}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ModelFormatError(f"{path}: field 'schema_version' is "
                               f"{meta.get('schema_version')!r}; this deltanet reads version "
                               f"{SCHEMA_VERSION}")
    want = _checksum(meta, arrays)
    if meta.get("checksum") != want:
        raise ModelFormatError(f"{path}: checksum mismatch (file says {meta.get('checksum')}, "
                               f"contents give {want}): the file is corrupted or was edited")
    try:
        config = NetworkConfig.from_dict(meta["network"])
    except (ValueError, KeyError) as e:
        raise ModelFormatError(f"{path}: field 'network': {e}") from None
    params = []
    for i in range(len(config.layers)):
        try:
            params.append(LayerParams(arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"],
                                      arrays[f"layer{i}.mask"]))
        except KeyError as e:
            raise ModelFormatError(f"{path}: missing array {e.args[0]!r}") from None
    info = {
        "env_id": meta.get("env_id"),
        "observation_space": _unclean_space(meta.get("observation_space")),
        "action_space": _unclean_space(meta.get("action_space")),
        "provenance": meta.get("provenance", {}),
        "checksum": meta["checksum"],
        "path": str(path),
    }
    try:
        return Model(config, tuple(params), info)
    except ValueError as e:
        raise ModelFormatError(f"{path}: {e}") from None

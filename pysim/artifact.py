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
name and bytes in name order). :data:`HEADER_SCHEMA` declares the fields, their types and ranges.

Writing is atomic: the file is written beside the target and renamed over it, so a crash never
leaves a half-written file in place of a good one.

Reading is strict and total: :func:`load_model` returns a model or raises one
:class:`ModelFormatError` naming the file, the member or field, the bad value and what is allowed;
no other exception, no hang. What a file can make the reader loop over or allocate is bounded
before it happens, in this order:

1. the zip: an end record at the very end of the file (no comment, no zip64), a central directory
   of at most ``MAX_MEMBERS`` entries, only the member names the writer uses, stored or deflated
   and not encrypted, each member's *declared* size within its bound (``MAX_META_BYTES``,
   ``MAX_ARRAY_BYTES``; ``MAX_DATA_BYTES`` in all) before it is inflated (a zip bomb is refused
   unread; a member that inflates past its declared size fails its CRC);
2. the members: ``.npy`` version 1.0/2.0, C order, exactly the writer's dtypes (little-endian
   float32, bool, uint8), as many data bytes as the header's shape needs (so reading them takes
   at most the declared sizes above, before the JSON header is trusted for anything);
3. the header JSON: UTF-8, no duplicate keys; ``schema``, ``schema_version`` and the checksum
   are checked as they always were;
4. then checks that do not rely on the checksum, so that a damaged file whose checksum was
   recomputed is still refused: the header against
   :data:`HEADER_SCHEMA` (types, required and unknown fields, ranges), the layer sizes against
   ``MAX_UNITS`` / ``MAX_WEIGHTS`` before the network config allocates anything, the config's own
   checks, thresholds within the input format's largest delta, decoder bounds ordered, and the
   arrays (set, shapes, dtypes, finite values, 0/1 masks) against the config and ``arrays``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import reprlib
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from .atomic import write_bytes_atomic
from .config import ACTIVATIONS, DECODERS, LAYER_KINDS, NetworkConfig, layer_from_dict
from .fixed import MAX_WIDTH
from .model import LayerParams, Model

SCHEMA = "deltanet-model"
SCHEMA_VERSION = 1

# ---- bounds on what a model file may ask for (all checked before the allocation they bound) ----
MAX_LAYERS = 64              # layers of one network
MAX_UNITS = 1 << 24          # inputs or outputs of one layer (and any one array dimension)
MAX_WEIGHTS = 1 << 24        # weights of all layers together (64 MiB of float32)
MAX_META_BYTES = 8 << 20     # the JSON header (the largest bundled one, Atari, is 0.65 MB)
MAX_NPY_HEADER = 4096        # one member's .npy header (numpy writes 128 bytes)
MAX_MEMBERS = 1 + 3 * MAX_LAYERS
MAX_ARRAY_BYTES = 4 * MAX_WEIGHTS                 # data of one array
MAX_DATA_BYTES = 9 * MAX_WEIGHTS                  # all arrays: weights + biases + masks
MAX_DIRECTORY_BYTES = 256 * MAX_MEMBERS           # the zip central directory
INPUT_SCALE_RANGE = (2.0 ** -64, 2.0 ** 64)       # input_scale entries: positive, finite
REAL_LIMIT = float(np.finfo(np.float32).max)      # |input_offset|, |decoder low/high|

_NPY_DTYPES = {"meta": np.dtype("<u1"), "weight": np.dtype("<f4"), "bias": np.dtype("<f4"),
               "mask": np.dtype("|b1")}
_HEADER_DTYPES = {"weight": "float32", "bias": "float32", "mask": "bool"}
_ARRAY_NAME = r"layer(0|[1-9][0-9]{0,5})\.(weight|bias|mask)"   # i < 10**6; MAX_LAYERS decides
_MEMBER_RE = re.compile(rf"(?:meta|{_ARRAY_NAME})\.npy")
_END = struct.Struct("<4s4H2LH")   # zip end record: signature ... comment length
_ZIP64_LOCATOR = 20                # bytes of the zip64 locator that would precede it
# What zipfile/zlib raise on damaged input (the encrypted flag: RuntimeError; an unknown method:
# NotImplementedError); caught only around the zip read.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               ValueError, NotImplementedError, RuntimeError, struct.error, OverflowError,
               KeyError, IndexError)


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


def weights_checksum(model: Model) -> str:
    """``sha256:<hex>`` over the network (:meth:`NetworkConfig.to_dict`) and the arrays only:
    what the model computes, whatever its provenance (a model re-exported from the same
    weights, e.g. from a packed checkpoint, keeps it while its file ``checksum`` changes)."""
    return _checksum({"network": model.config.to_dict()}, _arrays(model))


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


# ---- the header schema --------------------------------------------------------------------------
# Two project-specific rules on top of JSON Schema 2020-12: "integer" and "number" exclude
# booleans and "number" means a finite float64 (no NaN/inf, no integer beyond it); the keyword
# "reals" checks a (possibly long) list of
# numbers in one pass instead of one sub-validation per item.

def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    """A finite float64: JSON allows integers of any size, float() does not."""
    if _is_int(x):
        return -sys.float_info.max <= x <= sys.float_info.max
    return isinstance(x, float) and math.isfinite(x)


def _real_ok(v, lo, hi, inf_ok) -> bool:
    if inf_ok and isinstance(v, str) and v in ("inf", "-inf"):
        return True
    return _is_number(v) and (lo is None or v >= lo) and (hi is None or v <= hi)


def _reals(validator, spec, instance, schema):
    """Keyword ``reals``: every item is a finite number within ``minimum``/``maximum`` (either may
    be absent), or one of the strings "inf"/"-inf" where ``infinite`` is true."""
    if not isinstance(instance, list):
        return
    lo, hi, inf_ok = spec.get("minimum"), spec.get("maximum"), spec.get("infinite", False)
    if set(map(type, instance)) <= {float}:  # the usual case: one numpy pass
        a = np.asarray(instance, dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(a) & (a >= (-np.inf if lo is None else lo))
                               & (a <= (np.inf if hi is None else hi))))
        k = int(bad[0]) if bad.size else None
    else:
        k = next((k for k, v in enumerate(instance) if not _real_ok(v, lo, hi, inf_ok)), None)
    if k is not None:
        want = "a finite number" + ("" if lo is None and hi is None else
                                    f" in [{lo if lo is not None else '-inf'}, "
                                    f"{hi if hi is not None else 'inf'}]") + (
            ' or "inf"/"-inf"' if inf_ok else "")
        yield ValidationError(f"{_short(instance[k])} is not {want}", path=[k])


_Validator = validators.extend(
    Draft202012Validator,
    validators={"reals": _reals},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": lambda _, x: _is_int(x) and _is_number(x),
         "number": lambda _, x: _is_number(x)}),
)


def _reals_list(*, min_items=0, **spec):
    return {"type": "array", "minItems": min_items, "maxItems": MAX_UNITS, "reals": spec}


def _obj(properties, required=None):
    """A closed object: every field listed (required unless ``required`` says otherwise)."""
    return {"type": "object", "required": sorted(properties if required is None else required),
            "additionalProperties": False, "properties": properties}


def _if_tag(tag, value, then):
    return {"if": {"type": "object", "required": [tag], "properties": {tag: {"const": value}}},
            "then": then}


_FMT = {"type": "string", "maxLength": 40,
        "pattern": r"^[SU]Q-?[0-9]{1,3}\.-?[0-9]{1,3}(:[a-z_]{1,12}){0,2}$"}
_COUNT = {"type": "integer", "minimum": 1, "maximum": MAX_UNITS}
_LAYER_FIELDS = {
    "n_in": _COUNT, "n_out": _COUNT, "in_ch": _COUNT, "in_h": _COUNT, "in_w": _COUNT,
    "out_ch": _COUNT, "kernel": _COUNT, "stride": _COUNT,
    "padding": {"type": "integer", "minimum": 0, "maximum": MAX_UNITS},
    "weight_fmt": _FMT, "out_fmt": _FMT,
    "acc_bits": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH},
    "activation": {"enum": list(ACTIVATIONS)},
    "threshold": {"type": "number", "minimum": 0},
}


def _layer_schema(cls) -> dict:
    props = {name: _LAYER_FIELDS[name] for name in cls.__dataclass_fields__ if name != "kind"}
    return _obj({**props, "kind": {"const": cls.kind}})


_SHAPE = {"type": "array", "maxItems": 8, "items": {"type": "integer", "minimum": 0,
                                                    "maximum": MAX_UNITS}}
_BOUNDS = _reals_list(infinite=True)
_SPACE = {
    "type": ["object", "null"], "required": ["type"],
    "properties": {"type": {"enum": ["Box", "Discrete"]}},
    "allOf": [
        _if_tag("type", "Box", _obj({"type": {"const": "Box"}, "shape": _SHAPE, "low": _BOUNDS,
                                     "high": _BOUNDS, "layout": {"type": "string",
                                                                 "maxLength": 200}},
                                    required=["type", "shape", "low", "high"])),
        _if_tag("type", "Discrete", _obj({"type": {"const": "Discrete"}, "n": _COUNT})),
    ],
}
_LAYER = {
    "type": "object", "required": ["kind"],
    "properties": {"kind": {"enum": sorted(LAYER_KINDS)}},
    "allOf": [_if_tag("kind", kind, _layer_schema(cls)) for kind, cls in LAYER_KINDS.items()],
}
_NETWORK = _obj({
    "input_fmt": _FMT,
    "layers": {"type": "array", "minItems": 1, "maxItems": MAX_LAYERS, "items": _LAYER},
    "decoder": _obj({"kind": {"enum": list(DECODERS)},
                     "low": _reals_list(minimum=-REAL_LIMIT, maximum=REAL_LIMIT),
                     "high": _reals_list(minimum=-REAL_LIMIT, maximum=REAL_LIMIT)}),
    "input_scale": _reals_list(min_items=1, minimum=INPUT_SCALE_RANGE[0],
                               maximum=INPUT_SCALE_RANGE[1]),
    "input_offset": _reals_list(min_items=1, minimum=-REAL_LIMIT, maximum=REAL_LIMIT),
})
_ARRAYS = {
    "type": "object", "maxProperties": MAX_MEMBERS - 1,
    "propertyNames": {"pattern": f"^{_ARRAY_NAME}$"},
    "additionalProperties": _obj({"shape": {**_SHAPE, "maxItems": 4},
                                  "dtype": {"enum": sorted(set(_HEADER_DTYPES.values()))}}),
}
HEADER_SCHEMA = _obj({
    "schema": {"const": SCHEMA},
    "schema_version": {"const": SCHEMA_VERSION},
    "env_id": {"type": ["string", "null"], "maxLength": 200},
    "observation_space": _SPACE,
    "action_space": _SPACE,
    "network": _NETWORK,
    "provenance": {"type": "object"},
    "arrays": _ARRAYS,
    "checksum": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
})
_HEADER_VALIDATOR = _Validator(HEADER_SCHEMA)

_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 4
_REPR.maxstring = _REPR.maxother = 100
_REPR.maxlong = 40


def _short(v) -> str:
    """A one-line, bounded repr of a (possibly huge, hostile) value."""
    return _REPR.repr(v).replace("\n", "\\n")


def _field(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(header)"


def _describe(error: ValidationError) -> str:
    what, want, got = error.validator, error.validator_value, _short(error.instance)
    if what == "type":
        finite = " (finite)" if "number" in (want if isinstance(want, list) else [want]) else ""
        return f"{got} is not of type {want!r}{finite}"
    if what == "enum":
        return f"{got} is not one of {want!r}"
    if what == "const":
        return f"{got} is not {want!r}"
    if what in ("minimum", "maximum"):
        side = "below the minimum" if what == "minimum" else "above the maximum"
        return f"{got} is {side} {want}"
    if what in ("minItems", "maxItems", "minLength", "maxLength", "maxProperties"):
        unit = "characters" if what.endswith("Length") else "entries"
        bound = "at least" if what.startswith("min") else "at most"
        return f"{len(error.instance)} {unit}; {bound} {want}"
    if what == "pattern":
        return f"{got} does not match {want!r}"
    return error.message.replace("\n", " ")


# ---- reading ----------------------------------------------------------------------------
def _fail(path, where: str, problem: str) -> ModelFormatError:
    return ModelFormatError(f"{path}: {where}: {problem}")


def _check_end_record(path: Path, f) -> None:
    """Bound the zip directory before zipfile reads it: it loops over every entry it holds."""
    size = f.seek(0, io.SEEK_END)
    n = min(size, _END.size + _ZIP64_LOCATOR)
    f.seek(size - n)
    tail = f.read(n)
    # zipfile first looks for an end record without a comment in the last 22 bytes; demanding
    # exactly that (numpy writes no comment) makes this check and zipfile read the same record.
    if len(tail) < _END.size or not tail.startswith(b"PK\x05\x06", n - _END.size) \
            or not tail.endswith(b"\0\0"):
        raise ModelFormatError(f"{path}: unreadable or truncated model file: no zip end record "
                               f"at the end of its {size} bytes (truncated, or not an .npz)")
    entries, dir_size = _END.unpack_from(tail, len(tail) - _END.size)[4:6]
    if len(tail) == _END.size + _ZIP64_LOCATOR and tail[:4] == b"PK\x06\x07":
        raise _fail(path, "zip directory", "a zip64 end record; a model file never needs one")
    if entries > MAX_MEMBERS or dir_size > MAX_DIRECTORY_BYTES:
        raise _fail(path, "zip directory", f"{entries} entries in {dir_size} bytes; a model "
                    f"holds at most {MAX_MEMBERS} entries in {MAX_DIRECTORY_BYTES} bytes")


def _check_members(path: Path, infos) -> dict:
    """name -> ZipInfo of the members, after checking names, flags and declared sizes."""
    members, total = {}, 0
    for info in infos:
        name = info.filename
        m = _MEMBER_RE.fullmatch(name)
        if m is None or (m[1] is not None and int(m[1]) >= MAX_LAYERS):
            raise _fail(path, f"member {_short(name)}", f"unexpected; a model holds 'meta.npy' "
                        f"and 'layer<i>.weight/bias/mask.npy' with i < {MAX_LAYERS}")
        if name in members:
            raise _fail(path, f"member {name!r}", "appears twice")
        if info.flag_bits & 0x1:
            raise _fail(path, f"member {name!r}", "encrypted; model files are not encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(path, f"member {name!r}", f"compression method {info.compress_type}; "
                        f"expected {zipfile.ZIP_STORED} (stored) or {zipfile.ZIP_DEFLATED} "
                        f"(deflated)")
        limit = (MAX_META_BYTES if name == "meta.npy" else MAX_ARRAY_BYTES) + MAX_NPY_HEADER
        if info.file_size > limit:
            raise _fail(path, f"member {name!r}", f"declares {info.file_size} bytes "
                        f"uncompressed; at most {limit}")
        total += info.file_size
        members[name] = info
    limit = MAX_META_BYTES + MAX_DATA_BYTES + MAX_MEMBERS * MAX_NPY_HEADER
    if total > limit:
        raise _fail(path, "zip members", f"declare {total} bytes uncompressed in all; at most "
                    f"{limit}")
    if "meta.npy" not in members:
        raise ModelFormatError(f"{path}: not a deltanet model (no 'meta' entry)")
    return members


def _parse_npy(path: Path, member: str, kind: str, data: bytes) -> np.ndarray:
    """One ``.npy`` member's bytes -> array, checked against the writer's layout for ``kind``."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version in ((1, 0), (2, 0)):
            size = struct.unpack_from("<H" if version == (1, 0) else "<L", data, buf.tell())[0]
            if size > MAX_NPY_HEADER:
                raise ValueError(f"a header of {size} bytes; at most {MAX_NPY_HEADER}")
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                buf, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                buf, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
    except (ValueError, TypeError, SyntaxError, RecursionError, struct.error) as e:
        msg = str(e).replace("\n", " ")[:200]
        raise _fail(path, f"member {member!r}", f"not a valid .npy array ({msg})") from None
    want = _NPY_DTYPES[kind]
    if dtype.str != want.str:
        raise _fail(path, f"member {member!r}", f"dtype {_short(dtype.str)}; expected "
                    f"{want.str!r} ({want.name})")
    if fortran:
        raise _fail(path, f"member {member!r}", "Fortran order; expected C order")
    ndim = "1" if kind == "meta" else "at most 4"
    if not (len(shape) == 1 if kind == "meta" else len(shape) <= 4) \
            or any(d < 0 or d > MAX_UNITS for d in shape):
        raise _fail(path, f"member {member!r}", f"shape {_short(shape)}; expected {ndim} "
                    f"dimensions of 0..{MAX_UNITS}")
    count = math.prod(shape)
    have = len(data) - buf.tell()
    if count * want.itemsize != have:
        raise _fail(path, f"member {member!r}", f"{have} data bytes; shape {shape} of "
                    f"{want.name} needs {count * want.itemsize}")
    return np.frombuffer(data, dtype=want, count=count, offset=buf.tell()).reshape(shape).copy()


def _read_zip(path: Path) -> dict:
    """member name (without ``.npy``) -> array, for every member of the zip at ``path``."""
    try:
        with open(path, "rb") as f:
            _check_end_record(path, f)
            with zipfile.ZipFile(f) as zf:
                out = {}
                for name, info in _check_members(path, zf.infolist()).items():
                    with zf.open(info) as member:
                        data = member.read(info.file_size + 1)  # stops at the declared size
                    if len(data) != info.file_size:
                        raise _fail(path, f"member {name!r}", f"{len(data)} bytes, the zip "
                                    f"declares {info.file_size}")
                    stem = name[:-len(".npy")]
                    out[stem] = _parse_npy(path, name, stem.rpartition(".")[2], data)
                return out
    except ModelFormatError:
        raise
    except _ZIP_ERRORS as e:
        msg = str(e).replace("\n", " ")[:200]
        raise ModelFormatError(f"{path}: unreadable or truncated model file "
                               f"({type(e).__name__}: {msg})") from None


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {_short(dup)}")
    return out


def _decode_header(path: Path, blob: np.ndarray) -> dict:
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = str(e).replace("\n", " ")[:200]
        raise ModelFormatError(f"{path}: model metadata is not valid JSON ({msg})") from None
    if not isinstance(meta, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(meta), "number")
        raise _fail(path, "model metadata", f"a JSON {kind}; expected an object")
    return meta


def _check_signature(path: Path, meta: dict, arrays: dict) -> None:
    """The checks every earlier reader made, in the same order: schema, version, checksum."""
    if meta.get("schema") != SCHEMA:
        raise ModelFormatError(f"{path}: field 'schema' is {_short(meta.get('schema'))}, "
                               f"expected {SCHEMA!r}")
    version = meta.get("schema_version")
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise ModelFormatError(f"{path}: field 'schema_version' is {_short(version)}; this "
                               f"deltanet reads version {SCHEMA_VERSION}")
    try:
        want = _checksum(meta, arrays)
    except (TypeError, ValueError, RecursionError) as e:
        raise _fail(path, "model metadata", f"cannot be hashed ({e})") from None
    if meta.get("checksum") != want:
        raise ModelFormatError(f"{path}: checksum mismatch (file says "
                               f"{_short(meta.get('checksum'))}, contents give {want}): the file "
                               f"is corrupted or was edited")


def _network(path: Path, d: dict) -> NetworkConfig:
    """The network config of a schema-valid ``network`` field, sizes bounded before it is built."""
    layers = []
    for i, ld in enumerate(d["layers"]):
        try:
            layers.append(layer_from_dict(ld))
        except (ValueError, TypeError, OverflowError) as e:
            raise _fail(path, f"field 'network.layers[{i}]'", str(e)) from None
    total = 0
    for i, layer in enumerate(layers):
        for name in ("n_in", "n_out"):
            v = getattr(layer, name)
            if v > MAX_UNITS:
                raise _fail(path, f"field 'network.layers[{i}]'", f"{name} = {v}; at most "
                            f"{MAX_UNITS}")
        total += math.prod(layer.weight_shape)
    if total > MAX_WEIGHTS:
        raise _fail(path, "field 'network.layers'", f"{total} weights in all; at most "
                    f"{MAX_WEIGHTS}")
    try:
        config = NetworkConfig.from_dict(d)
    except (ValueError, TypeError, OverflowError) as e:
        raise _fail(path, "field 'network'", str(e).removeprefix("network: ")) from None
    for i, layer in enumerate(config.layers):
        f = config.in_fmt(i)
        where = f"field 'network.layers[{i}].threshold'"
        if f.frac_bits < 0:
            raise _fail(path, where, f"its input format {f} has {f.frac_bits} fraction bits; "
                        f"a threshold needs >= 0")
        limit = math.ldexp(1.0, f.int_bits)   # 2**width codes of the input format
        if layer.threshold > limit:
            raise _fail(path, where, f"{layer.threshold!r} is outside [0, {limit!r}] (the input "
                        f"format {f}'s largest delta, 2**{f.width} codes)")
    dec = config.decoder
    if dec.kind == "argmax" and (dec.low or dec.high):
        raise _fail(path, "field 'network.decoder'", f"argmax takes no bounds, got low "
                    f"{_short(list(dec.low))} and high {_short(list(dec.high))}")
    for k, (lo, hi) in enumerate(zip(dec.low, dec.high)):
        if lo > hi:
            raise _fail(path, "field 'network.decoder'", f"low[{k}] = {lo!r} > high[{k}] = "
                        f"{hi!r}; need low <= high")
    return config


def _check_arrays(path: Path, config: NetworkConfig, declared: dict, arrays: dict) -> tuple:
    """The layers' parameters, after checking the arrays against the config and ``arrays``."""
    want = {}
    for i, layer in enumerate(config.layers):
        for part, shape in (("weight", layer.weight_shape), ("bias", layer.bias_shape),
                            ("mask", layer.weight_shape)):
            want[f"layer{i}.{part}"] = (i, part, tuple(shape))
    missing = sorted(set(want) - set(arrays))
    if missing:
        raise ModelFormatError(f"{path}: missing array {missing[0]!r} (member "
                               f"'{missing[0]}.npy'), needed by field 'network'")
    extra = sorted(set(arrays) - set(want))
    if extra:
        raise _fail(path, f"member '{extra[0]}.npy'", f"unexpected; field 'network' has "
                    f"{len(config.layers)} layers")
    for name, (i, part, shape) in want.items():
        a = arrays[name]
        if a.shape != shape:
            raise _fail(path, f"member '{name}.npy'", f"layer {i} {part} shape {a.shape}, "
                        f"config (field 'network.layers[{i}]') says {shape}")
        if part == "mask":
            flat = a.view(np.uint8).reshape(-1)
            bad, what = np.flatnonzero(flat > 1), "a bool is stored as byte 0 or 1"
        else:
            flat = a.reshape(-1)
            bad, what = np.flatnonzero(~np.isfinite(flat)), "expected a finite float32"
        if bad.size:
            raise _fail(path, f"member '{name}.npy'", f"entry {bad[0]} (flat index) is "
                        f"{flat[bad[0]].item()!r}; {what}")
        header = {"shape": list(shape), "dtype": _HEADER_DTYPES[part]}
        if declared.get(name) != header:
            raise _fail(path, f"field 'arrays.{name}'", f"{_short(declared.get(name))}; the "
                        f"array is {header}")
    extra = sorted(set(declared) - set(want))
    if extra:
        raise _fail(path, f"field 'arrays.{extra[0]}'", f"unexpected; field 'network' has "
                    f"{len(config.layers)} layers")
    return tuple(LayerParams(arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"],
                             arrays[f"layer{i}.mask"]) for i in range(len(config.layers)))


def _unclean_space(sp):
    if not isinstance(sp, dict):
        return sp
    out = dict(sp)
    for k in ("low", "high"):
        if k in out:
            out[k] = [float(v) for v in out[k]]
    return out


def load_model(path) -> Model:
    """Read and check a model file; raises :class:`ModelFormatError` naming the problem.

    See the module docstring for what is checked, in which order, and the bounds."""
    path = Path(path)
    try:
        if not path.exists():
            raise ModelFormatError(f"{path}: no such model file")
        if not path.is_file():
            raise ModelFormatError(f"{path}: not a regular file (a directory or device?)")
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    arrays = _read_zip(path)
    meta = _decode_header(path, arrays.pop("meta"))
    _check_signature(path, meta, arrays)
    error = next(_HEADER_VALIDATOR.iter_errors(meta), None)
    if error is not None:
        raise _fail(path, f"field {_field(error.absolute_path)!r}", _describe(error))
    config = _network(path, meta["network"])
    params = _check_arrays(path, config, meta["arrays"], arrays)
    info = {
        "env_id": meta["env_id"],
        "observation_space": _unclean_space(meta["observation_space"]),
        "action_space": _unclean_space(meta["action_space"]),
        "provenance": meta["provenance"],
        "checksum": meta["checksum"],
        "path": str(path),
    }
    try:
        return Model(config, params, info)
    except ValueError as e:
        raise ModelFormatError(f"{path}: {e}") from None

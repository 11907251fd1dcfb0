"""Fuzzing the model reader: every damaged file is refused with one ModelFormatError naming the
file, or loads to a model that behaves exactly like the original; nothing hangs or blows up.

The damaged files start from the bundled CartPole model. Header damage is re-signed (the
checksum recomputed from the format documented in :mod:`pysim.artifact`, independently of its
code) so that the checks behind the checksum are what has to catch it. Each load runs under a
5 s alarm, so a hang fails the test instead of stalling it.
"""

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import signal
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from deltanet.pysim import ModelFormatError, artifact, load_model

from deltanet import MODELS_DIR

SEED = 14
ORIGINAL = MODELS_DIR / "cartpole.npz"
CONTINUOUS = MODELS_DIR / "pendulum.npz"
MB = 1 << 20


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` in the reader (nor
    its OSError handling: TimeoutError is one) can turn a hang into a clean error."""


@contextlib.contextmanager
def deadline(seconds=5):
    def ring(signum, frame):
        raise Hang(f"load_model still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def same_behaviour(a, b) -> bool:
    """Identical datapath: config, raw codes and the float parameters they come from."""
    if a.config.to_dict() != b.config.to_dict():
        return False
    pairs = list(zip(a.w_raw, b.w_raw)) + list(zip(a.b_raw, b.b_raw))
    for pa, pb in zip(a.params, b.params):
        pairs += [(pa.weight, pb.weight), (pa.bias, pb.bias), (pa.mask, pb.mask)]
    return all(x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
               for x, y in pairs)


def outcome(path, reference) -> str:
    """'error' (one clean ModelFormatError naming the file) or 'identical'; anything else raises
    or returns a description of what went wrong."""
    with deadline():
        try:
            model = load_model(path)
        except ModelFormatError as e:
            msg = str(e)
            if str(path) not in msg or "\n" in msg:
                return f"bad message {msg[:300]!r}"
            return "error"
    return "identical" if same_behaviour(model, reference) else "CHANGED behaviour, accepted"


def run_cases(tmp_path, category, cases, reference, *, expect=("error", "identical")):
    """Write and load every ``(name, write)`` case; fail listing the cases that misbehaved."""
    counts, failures = {}, []
    for i, (name, write) in enumerate(cases):
        path = tmp_path / f"{category}-{i:04d}.npz"
        write(path)
        try:
            got = outcome(path, reference)
        except (Exception, Hang) as e:  # noqa: BLE001 - collected, reported below by case
            got = f"{type(e).__name__}: {str(e)[:200]}"
        counts[got] = counts.get(got, 0) + 1
        if got not in expect:
            failures.append(f"{name}: {got}")
    print(f"\nfuzz {category}: {len(cases)} cases, {counts}")
    assert not failures, f"{len(failures)} of {len(cases)} {category} cases:\n" + "\n".join(
        failures[:30])
    return counts


# ---- building files --------------------------------------------------------------------------
def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def npy_raw(header, data: bytes) -> bytes:
    """A .npy 1.0 member with a hand-written header (for layouts numpy would not write)."""
    text = (header if isinstance(header, str) else repr(header)).encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def write_zip(path, members, method=zipfile.ZIP_DEFLATED):
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", method) as z:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name", wanted here
        for name, data in members:
            z.writestr(name, data)


def original_members() -> list:
    with zipfile.ZipFile(ORIGINAL) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def original_parts(src=ORIGINAL):
    """(header dict, arrays dict) of a bundled model, read without pysim."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    return json.loads(arrays.pop("meta").tobytes()), arrays


def sign(header: dict, arrays: dict) -> str:
    """The checksum as the module docstring defines it."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "checksum"},
                        sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return "sha256:" + h.hexdigest()


def write_model(path, header, arrays, *, resign=True, members=None):
    """Write header + arrays as a model file; ``members`` overrides single members' bytes."""
    if resign:
        header = {**header, "checksum": sign(header, arrays)}
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = {"meta.npy": npy(blob), **{f"{k}.npy": npy(v) for k, v in arrays.items()}}
    out.update(members or {})
    write_zip(path, out.items(), zipfile.ZIP_STORED)


def patch_directory(data: bytes, member: str, offset: int, fmt: str, value) -> bytes:
    """Overwrite one field of ``member``'s central directory entry (offset from its start)."""
    end = data.rindex(b"PK\x05\x06")
    start = struct.unpack_from("<L", data, end + 16)[0]
    while start < end:
        n, m, c = struct.unpack_from("<3H", data, start + 28)
        if data[start + 46:start + 46 + n] == member.encode():
            out = bytearray(data)
            struct.pack_into(fmt, out, start + offset, value)
            return bytes(out)
        start += 46 + n + m + c
    raise KeyError(member)


# ---- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    return load_model(ORIGINAL)


def test_bundled_models_load_unchanged():
    paths = sorted(MODELS_DIR.glob("*.npz")) + sorted((MODELS_DIR / "atari").glob("*.npz"))
    assert len(paths) >= 10
    for p in paths:
        header, arrays = original_parts(p)
        with deadline(30):
            m = load_model(p)
        assert m.meta["checksum"] == header["checksum"] == sign(header, arrays)
        assert m.config.to_dict() == header["network"]
        for i, prm in enumerate(m.params):
            for part in ("weight", "bias", "mask"):
                got, want = getattr(prm, part), arrays[f"layer{i}.{part}"]
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
        # and what the reader returns is what the writer writes
        assert artifact.model_meta(m)["checksum"] == header["checksum"]


def test_fuzz_byte_flips(tmp_path, reference):
    rng = np.random.default_rng(SEED)
    data = ORIGINAL.read_bytes()
    cases = []
    for k in range(160):
        flips = 1 if k < 120 else int(rng.integers(2, 9))
        out = bytearray(data)
        where = rng.integers(0, len(data), size=flips)
        for w in where:
            out[w] ^= int(rng.integers(1, 256))
        cases.append((f"flip {flips} bytes at {sorted(where.tolist())}",
                      lambda p, b=bytes(out): p.write_bytes(b)))
    # every byte of the zip end record and of the central directory entry of one member
    end = data.rindex(b"PK\x05\x06")
    for w in list(range(end, len(data))) + list(range(data.rindex(b"PK\x01\x02"), end))[::3]:
        out = bytearray(data)
        out[w] ^= 0xFF
        cases.append((f"invert byte {w} (directory)", lambda p, b=bytes(out): p.write_bytes(b)))
    counts = run_cases(tmp_path, "byte-flip", cases, reference)
    assert counts.get("error", 0) > len(cases) // 2


def test_fuzz_truncations(tmp_path, reference):
    rng = np.random.default_rng(SEED + 1)
    data = ORIGINAL.read_bytes()
    cuts = sorted({0, 1, 4, 21, 22, len(data) - 1, len(data) - 22, len(data) - 23,
                   *rng.integers(0, len(data), size=40).tolist()})
    cases = [(f"first {n} bytes", lambda p, n=n: p.write_bytes(data[:n])) for n in cuts]
    cases += [(f"without the first {n} bytes", lambda p, n=n: p.write_bytes(data[n:]))
              for n in (1, 30, 4096)]
    cases.append(("doubled", lambda p: p.write_bytes(data + data)))
    counts = run_cases(tmp_path, "truncation", cases, reference)
    assert counts.get("identical", 0) <= 1  # at most the appended copy, which zip ignores


def test_fuzz_zip_member_damage(tmp_path, reference):
    """Every member, every directory field zipfile acts on, plus garbage in its data."""
    rng = np.random.default_rng(SEED + 2)
    members = original_members()
    base = tmp_path / "base.npz"
    write_zip(base, members)
    data = base.read_bytes()
    fields = [  # (what, central directory offset, struct format, value)
        ("encrypted flag", 8, "<H", 0x1), ("strong-encryption flag", 8, "<H", 0x41),
        ("patch flag", 8, "<H", 0x20), ("method bzip2", 10, "<H", 12),
        ("method lzma", 10, "<H", 14), ("method 99", 10, "<H", 99), ("method stored", 10, "<H", 0),
        ("crc + 1", 16, "<L", None), ("compressed size 1", 20, "<L", 1),
        ("size 0", 24, "<L", 0), ("size - 1", 24, "<L", None), ("size + 1", 24, "<L", None),
        ("size 4 GB - 16", 24, "<L", 0xFFFFFFF0), ("local header offset + 1", 42, "<L", None),
    ]
    cases = []
    with zipfile.ZipFile(base) as z:
        infos = z.infolist()
    for info in infos:
        for what, off, fmt, value in fields:
            if value is None:
                now = {16: info.CRC, 24: info.file_size, 42: info.header_offset}[off]
                value = (now - 1) if what == "size - 1" else (now + 1) & 0xFFFFFFFF
            out = patch_directory(data, info.filename, off, fmt, value)
            cases.append((f"{info.filename}: {what}", lambda p, b=out: p.write_bytes(b)))
        # garbage inside the compressed data (past the local header)
        start = info.header_offset + 30 + len(info.filename)
        for _ in range(2):
            out = bytearray(data)
            w = int(rng.integers(start, start + info.compress_size))
            n = int(rng.integers(1, 16))
            out[w:w + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            cases.append((f"{info.filename}: {n} garbage bytes at {w}",
                          lambda p, b=bytes(out): p.write_bytes(b)))
    counts = run_cases(tmp_path, "zip-member", cases, reference)
    assert counts.get("error", 0) >= len(cases) - len(infos) * 2


def test_fuzz_member_sets(tmp_path, reference):
    """Members removed, renamed, duplicated or added, re-signed where that is possible."""
    members = original_members()
    names = [n for n, _ in members]
    cases = []
    for k, name in enumerate(names):
        rest = [m for m in members if m[0] != name]
        cases.append((f"without {name}", lambda p, r=rest: write_zip(p, r)))
        for new in (name[:-4], name + ".bak", name.replace(".npy", ".npz"), "../" + name,
                    name.upper(), name.replace("layer", "layer0") if k else "META.npy"):
            renamed = [(new if n == name else n, d) for n, d in members]
            cases.append((f"{name} renamed {new}", lambda p, r=renamed: write_zip(p, r)))
        cases.append((f"{name} twice", lambda p, r=members + [(name, members[k][1])]:
                      write_zip(p, r)))
    for extra in ("extra.npy", "layer3.weight.npy", "layer64.bias.npy", "layer99999.mask.npy",
                  "layer0.weight.npy/", "dir/layer0.weight.npy", "layer0.scale.npy"):
        cases.append((f"added {extra}",
                      lambda p, e=extra: write_zip(p, members + [(e, npy(np.zeros(3)))])))
    header, arrays = original_parts()
    for drop in ("layer2", "layer0.mask", "layer1.bias"):
        kept = {k: v for k, v in arrays.items() if not k.startswith(drop)}
        h = {**header, "arrays": {k: v for k, v in header["arrays"].items() if k in kept}}
        cases.append((f"re-signed without {drop}", lambda p, h=h, a=kept: write_model(p, h, a)))
    more = {**arrays, "layer3.weight": np.zeros((2, 2), np.float32)}
    h = {**header, "arrays": {**header["arrays"],
                              "layer3.weight": {"shape": [2, 2], "dtype": "float32"}}}
    cases.append(("re-signed with layer3.weight", lambda p: write_model(p, h, more)))
    tiny = [(f"layer{i % 64}.bias.npy" if i else "meta.npy", b"") for i in range(300)]
    cases.append(("300 members", lambda p: write_zip(p, tiny, zipfile.ZIP_STORED)))
    run_cases(tmp_path, "member-set", cases, reference, expect=("error",))


def test_fuzz_array_members(tmp_path, reference):
    """Arrays with the wrong dtype, byte order, layout, shape or values; all re-signed."""
    header, arrays = original_parts()
    w, b, m = arrays["layer1.weight"], arrays["layer1.bias"], arrays["layer1.mask"]
    variants = {
        "float64 weight": ("layer1.weight", w.astype(np.float64)),
        "float16 weight": ("layer1.weight", w.astype(np.float16)),
        "big-endian weight": ("layer1.weight", w.astype(">f4")),
        "int8 mask": ("layer1.mask", m.astype(np.int8)),
        "uint8 mask": ("layer1.mask", m.astype(np.uint8)),
        "Fortran weight": ("layer1.weight", np.asfortranarray(w)),
        "transposed weight": ("layer1.weight", np.ascontiguousarray(w.T if w.shape[0] != w.shape[1]
                                                                     else w[:, :-1])),
        "3-D weight": ("layer1.weight", w.reshape(*w.shape, 1)),
        "flat bias 2-D": ("layer1.bias", b.reshape(1, -1)),
        "short bias": ("layer1.bias", b[:-1]),
        "empty mask": ("layer1.mask", np.zeros((0, m.shape[1]), bool)),
        "NaN weight": ("layer1.weight", np.where(np.arange(w.size).reshape(w.shape) == 7,
                                                 np.float32("nan"), w)),
        "inf bias": ("layer1.bias", np.where(np.arange(b.size) == b.size // 2,
                                             np.float32("inf"), b)),
        "-inf weight": ("layer0.weight", np.full_like(arrays["layer0.weight"], -np.inf)),
        "structured weight": ("layer1.weight", np.zeros(w.shape, [("a", "<f4")])),
        "string bias": ("layer1.bias", np.array(["x"] * b.size)),
        "complex bias": ("layer1.bias", b.astype(np.complex64)),
    }
    cases = []
    for what, (name, arr) in variants.items():
        a = {**arrays, name: arr}
        for hdr in ("kept", "matching"):  # header 'arrays' left as it was, or made to match
            h = copy.deepcopy(header)
            if hdr == "matching":
                h["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            cases.append((f"{what} (header {hdr})", lambda p, h=h, a=a: write_model(p, h, a)))
    # bytes numpy itself would not write: a mask byte of 2, a too-short or too-long data part,
    # an absurd declared shape, a pickled object array, a bad .npy header
    mask2 = m.view(np.uint8).copy()
    mask2[0, 0] = 2
    a = {**arrays, "layer1.mask": mask2.view(bool)}
    cases.append(("mask byte 2", lambda p: write_model(p, header, a)))
    hdr = {"descr": "<f4", "fortran_order": False, "shape": w.shape}
    raw = {
        "data short": npy_raw(hdr, w.tobytes()[:-4]),
        "data long": npy_raw(hdr, w.tobytes() + b"\0\0\0\0"),
        "shape 1e9": npy_raw({**hdr, "shape": (10 ** 9, w.shape[1])}, w.tobytes()),
        "shape negative": npy_raw({**hdr, "shape": (-w.shape[0], -w.shape[1])}, w.tobytes()),
        "object dtype": npy_raw({**hdr, "descr": "|O"}, b"\x80\x04N."),
        "header not a dict": npy_raw("[1, 2]", w.tobytes()),
        "header code": npy_raw("{'descr': __import__('os').getcwd()}", w.tobytes()),
        "npy version 9": b"\x93NUMPY\x09\x00" + npy(w)[8:],
        "not npy": b"PK" + w.tobytes(),
        "header 60 kB": b"\x93NUMPY\x02\x00" + struct.pack("<L", 60000) + b" " * 60000,
    }
    for what, member in raw.items():
        cases.append((what, lambda p, d=member: write_model(p, header, arrays,
                                                            members={"layer1.weight.npy": d})))
    meta_variants = {
        "meta int32": np.frombuffer(json.dumps(header).encode().ljust(8000), np.int32),
        "meta 2-D": np.frombuffer(json.dumps(header).encode(), np.uint8).reshape(1, -1),
        "meta float": np.frombuffer(json.dumps(header).encode(), np.uint8).astype(np.float32),
    }
    for what, blob in meta_variants.items():
        cases.append((what, lambda p, d=blob: write_model(p, header, arrays, resign=False,
                                                          members={"meta.npy": npy(d)})))
    run_cases(tmp_path, "array", cases, reference, expect=("error",))


# Values that no field of the header accepts where a *network* field would change behaviour:
# the wrong JSON type, non-finite numbers, and magnitudes beyond every bound.
UNIVERSAL = ["x", [], {}, None, True, math.nan, math.inf, -math.inf, 1e308, -1e308, 10 ** 40,
             -(10 ** 40), 10 ** 400]
BY_KEY = {  # further values, invalid for fields of this name
    "threshold": [-1.0, -1e-300, 17.0, 1e10, 2 ** 70],
    "input_scale": [0.0, -0.0, -1.0, 1e-30, 1e30, 5e-324],
    "input_offset": [1e39, -1e39, 2 ** 200],
    "acc_bits": [0, -1, 1.5, 27.0, 49, 63, 2 ** 70],
    "n_in": [0, -1, 1.5, 4.0, 1e9, 1e30, 2 ** 24 + 1, 2 ** 62],
    "n_out": [0, -1, 2.5, 1e9, 2 ** 24 + 1],
    "n": [0, -3, 2.0, 2 ** 24 + 1],
    "shape": [-1, 1.0, 2 ** 24 + 1],
    "weight_fmt": ["", "SQ99.99", "UQ2.6", "SQ0.8", "SQ2.6:round", "Q2.6", "SQ2.6" + " " * 50,
                   "SQ62.62"],
    "out_fmt": ["", "SQ70.0", "UQ3.13", "SQ3.13:half_even:clip", "sq3.13", "SQ+3.13"],
    "input_fmt": ["", "UQ2.14", "SQ2.14:x", "SQ20.-4", "SQ2.14\n:x"],
    "activation": ["", "tanh", "RELU", "relu "],
    "kind": ["conv2d", "lstm", "Dense", ""],
    "dtype": ["float64", "int8", "<f4", ""],
    "schema": ["deltanet-model2", ""],
    "schema_version": [0, 2, 1.0, "1"],
    "type": ["MultiBinary", "box", ""],
    "env_id": ["x" * 201],
}


def header_paths(node, prefix=()):
    """Every field path of the header, lists by their first and last item, not into provenance."""
    if prefix:
        yield prefix
    if prefix == ("provenance",):
        return
    if isinstance(node, dict):
        for k, v in node.items():
            yield from header_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for k in sorted({0, len(node) - 1}) if node else ():
            yield from header_paths(node[k], prefix + (k,))


def key_of(path):
    return next((p for p in reversed(path) if isinstance(p, str)), "")


def mutated(header, path, op, value=None):
    h = copy.deepcopy(header)
    parent = h
    for p in path[:-1]:
        parent = parent[p]
    if op == "set":
        parent[path[-1]] = value
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add-key":
        parent[path[-1]] = {**parent[path[-1]], "zz_unknown": 1}
    elif op == "append":
        items = parent[path[-1]]
        parent[path[-1]] = items + [copy.deepcopy(items[-1]) if items else 0.0]
    return h


def get_at(node, path):
    for p in path:
        node = node[p]
    return node


def dotted(path):
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]


def test_fuzz_header_fields(tmp_path, reference):
    """Every header field: wrong types, missing, unknown keys, NaN/inf, absurd values; re-signed
    so the checksum matches. Fields that do not reach the datapath (env id, spaces, provenance)
    may take some of these values; then the model must behave exactly as before."""
    rng = np.random.default_rng(SEED + 3)
    header, arrays = original_parts()
    cases = []
    for path in header_paths(header):
        if path == ("checksum",):
            continue
        node = get_at(header, path)
        values = UNIVERSAL + BY_KEY.get(key_of(path), [])
        if key_of(path) in ("input_scale", "input_offset") and isinstance(path[-1], str):
            values = UNIVERSAL  # the list itself; its items get BY_KEY
        picks = rng.permutation(len(values))[: max(6, len(values) // 2)]
        edits = [(f"= {values[k]!r}", "set", values[k]) for k in sorted(picks.tolist())]
        if isinstance(path[-1], str):
            edits.append(("removed", "delete", None))
        if isinstance(node, dict) and path != ("provenance",):
            edits.append(("+ unknown key", "add-key", None))
        if isinstance(node, list):
            edits.append(("+ 1 item", "append", None))
        for what, op, value in edits:
            h = mutated(header, path, op, value)
            cases.append((f"{dotted(path)} {what}"[:120],
                          lambda p, h=h: write_model(p, h, arrays)))
    counts = run_cases(tmp_path, "header", cases, reference)
    assert counts.get("error", 0) >= 0.9 * len(cases)


def test_fuzz_header_semantics(tmp_path):
    """Well-typed values that the datapath cannot use: caught behind a matching checksum."""
    cases, reference = [], load_model(CONTINUOUS)
    header, arrays = original_parts(CONTINUOUS)
    edits = {
        "threshold beyond the input format (1e308)": ("network.layers.0.threshold", 1e308),
        "threshold 1e10": ("network.layers.1.threshold", 1e10),
        "input scale 0": ("network.input_scale.0", 0.0),
        "input scale negative": ("network.input_scale.2", -4.0),
        "input offset NaN": ("network.input_offset.1", math.nan),
        "input offset inf": ("network.input_offset.1", math.inf),
        "decoder low > high": ("network.decoder.low.0", 3.0),
        "decoder low NaN": ("network.decoder.low.0", math.nan),
        "decoder high inf": ("network.decoder.high.0", math.inf),
        "decoder high '-inf'": ("network.decoder.high.0", "-inf"),
        "decoder bounds for 2 outputs": ("network.decoder.low", [-2.0, -2.0]),
        "n_in 1e9": ("network.layers.0.n_in", 10 ** 9),
        "n_in 1e30": ("network.layers.0.n_in", 1e30),
        "n_in 2**24 (too many weights)": ("network.layers.0.n_in", 2 ** 24),
        "n_in 5 (does not match the arrays)": ("network.layers.0.n_in", 5),
        "layer sizes chained wrongly": ("network.layers.1.n_in", 32),
        "acc_bits too narrow": ("network.layers.0.acc_bits", 8),
        "negative fraction bits": ("network.layers.0.out_fmt", "SQ16.-2"),
        "input_scale empty": ("network.input_scale", []),
        "decoder argmax with bounds": ("network.decoder.kind", "argmax"),
        "provenance a list": ("provenance", [1, 2]),
        "65 layers": ("network.layers", [header["network"]["layers"][1]] * 65),
        "conv layer 2**20 x 2**20 input": ("network.layers.0", {
            "kind": "conv2d", "in_ch": 1, "in_h": 2 ** 20, "in_w": 2 ** 20, "out_ch": 1,
            "kernel": 1, "stride": 1, "padding": 0, "weight_fmt": "SQ2.6", "out_fmt": "SQ5.11",
            "acc_bits": 40, "activation": "relu", "threshold": 0.0}),
    }
    for what, (dotted, value) in edits.items():
        h = copy.deepcopy(header)
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        get_at(h, parents)[last] = value
        cases.append((what, lambda p, h=h: write_model(p, h, arrays)))
    big_int = "1" * 5000
    for what, text in {
        "duplicate key": json.dumps(header)[:-1] + ', "env_id": "Other-v0"}',
        "int of 5000 digits": json.dumps(header).replace('"n_in": 3', f'"n_in": {big_int}', 1),
        "provenance nested 5000 deep": json.dumps({**header, "provenance": "@"}).replace(
            '"@"', "[" * 5000 + "]" * 5000),
        "nesting 100000 deep": "[" * 100000 + "]" * 100000,
        "not UTF-8": json.dumps(header).replace("Pendulum", "Pend\udcffulum"),
        "a JSON string": json.dumps("deltanet-model"),
        "JSON null": "null",
        "trailing garbage": json.dumps(header) + "x",
    }.items():
        blob = text.encode("utf-8", "surrogateescape")
        member = npy(np.frombuffer(blob, np.uint8))
        cases.append((what, lambda p, m=member: write_model(p, header, arrays, resign=False,
                                                            members={"meta.npy": m})))
    run_cases(tmp_path, "semantic", cases, reference, expect=("error",))


def test_fuzz_not_model_files(tmp_path, reference):
    rng = np.random.default_rng(SEED + 4)
    _, arrays = original_parts()
    w = arrays["layer0.weight"]

    def gz(p):
        p.write_bytes(zlib.compress(ORIGINAL.read_bytes()))

    cases = [
        ("empty file", lambda p: p.write_bytes(b"")),
        ("text", lambda p: p.write_text("hello\n")),
        ("random bytes", lambda p: p.write_bytes(rng.bytes(5000))),
        ("zeros", lambda p: p.write_bytes(bytes(100000))),
        ("a .npy file", lambda p: p.write_bytes(npy(w))),
        ("zlib of the model", gz),
        ("empty zip", lambda p: write_zip(p, [])),
        ("zip of text", lambda p: write_zip(p, [("readme.txt", b"hi")])),
        ("only meta", lambda p: write_zip(p, [("meta.npy", npy(np.zeros(3, np.uint8)))])),
        ("only arrays", lambda p: write_zip(p, [(f"{k}.npy", npy(v)) for k, v in arrays.items()])),
        ("zip end record only", lambda p: p.write_bytes(b"PK\x05\x06" + bytes(18))),
        ("zip with a comment", lambda p: p.write_bytes(ORIGINAL.read_bytes()[:-2] + b"\x02\0ab")),
        ("a directory", lambda p: p.mkdir()),
        ("a symlink loop", lambda p: p.symlink_to(p)),
        ("a fifo", lambda p: os.mkfifo(p)),
        ("missing", lambda p: None),
    ]
    counts = run_cases(tmp_path, "not-a-model", cases, reference, expect=("error",))
    assert counts == {"error": len(cases)}


def test_fuzz_zip_bombs(tmp_path, reference):
    """Members whose declared or real size is far beyond what the header can ask for are refused
    before they are inflated: loading allocates little, however large the bomb."""
    members = original_members()

    def bomb(p, name, mib):
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            for n, d in members:
                if n != name:
                    z.writestr(n, d)
            with z.open(name, "w", force_zip64=True) as f:
                f.write(npy_raw({"descr": "<u1" if name == "meta.npy" else "<f4",
                                 "fortran_order": False, "shape": (mib * MB,)}, b""))
                chunk = bytes(MB)
                for _ in range(mib):
                    f.write(chunk)

    cases = [
        ("meta of 24 MiB zeros", lambda p: bomb(p, "meta.npy", 24)),
        ("weight of 80 MiB zeros", lambda p: bomb(p, "layer1.weight.npy", 80)),
    ]
    base = tmp_path / "base.npz"
    write_zip(base, members)
    data = base.read_bytes()
    with zipfile.ZipFile(base) as z:
        infos = {i.filename: i for i in z.infolist()}
    for name, size in (("meta.npy", 1 << 30), ("layer1.weight.npy", 0xFFFFFFFF),
                       ("layer0.bias.npy", (64 << 20) + 1)):
        out = patch_directory(data, name, 24, "<L", size)
        cases.append((f"{name} declares {size} bytes", lambda p, b=out: p.write_bytes(b)))
    # a member that inflates to more than it declares: read stops at the declared size
    out = patch_directory(data, "layer1.weight.npy", 24, "<L", infos["layer1.weight.npy"].file_size
                          // 2)
    cases.append(("layer1.weight declares half its size", lambda p: p.write_bytes(out)))
    tracemalloc.start()
    try:
        run_cases(tmp_path, "zip-bomb", cases, reference, expect=("error",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MB, f"loading the bombs peaked at {peak / MB:.0f} MiB"

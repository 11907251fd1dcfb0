"""The framed host protocol of the UART link (:class:`hw.hostlink.HostLink`): defined once, here.

Pure Python (no Amaranth): the hardware takes its lengths and constants from this module, and
host code encodes requests and decodes responses with it. The field widths follow the core
(:class:`LinkFormat`, built from the fields of ``sim.driver.CoreDesign`` / the design JSON),
so any model works.

Frame (requests and responses alike; every multi-byte field little-endian)
--------------------------------------------------------------------------
======  =====  ==========================================================================
offset  bytes  field
======  =====  ==========================================================================
0       1      ``SYNC`` = 0xA5 (not in the checksum)
1       1      command (a response: the request's command | ``RESPONSE`` = 0x80)
2       1      ``len``: payload bytes, 0..255
3       len    payload
3+len   1      checksum: ``(-(command + len + sum(payload))) & 0xFF``, i.e. the 8-bit
               two's-complement sum of every byte after ``SYNC`` is 0
======  =====  ==========================================================================

Commands (``A`` = ``addr_bytes``, ``D`` = ``data_bytes``, ``T`` = ``thr_bytes``,
``O`` = ``out_bytes``, ``N`` = layers; see :class:`LinkFormat`)
----------------------------------------------------------------------------------------
===========  ====  ===========================================  ==============================
command      code  request payload                              OK response payload
===========  ====  ===========================================  ==============================
STATUS       0x01  (none)                                       status, :data:`STATUS_FIELDS`
WRITE_OBS    0x02  flags u8, addr (A), word (D)                 status
START        0x03  flags u8                                     status, result (when ``done``)
READ         0x04  (none)                                       status, result (the last step)
WRITE_THR    0x05  layer u8, raw (T)                            status
===========  ====  ===========================================  ==============================

* ``flags`` bit 0 (``FIRST``): the step is an episode start. Set it on every frame of such a
  step (its writes and its start): the core's ``first`` input is raised by the first frame
  that carries it and held until the step starts, as ``sim.driver.StepDriver`` holds it.
* ``word``: the observation word exactly as ``CoreDesign.words`` packs it (:func:`pack_words`):
  code ``p`` in bits ``[p*w, (p+1)*w)``, two's complement, ``w = in_width``.
  Writes of one step go in strictly ascending ``addr`` (each word at most once), ``addr <
  obs_depth``; else ``BAD_ARGUMENT``. Which words to write follows the core's contract (every
  word at an episode start and after a layer-0 threshold write, else at least the changed ones).
* ``raw``: the threshold code (unsigned); values above the register's range
  (``2**thr_width - 1``) are written as its largest value (never fires), as ``StepDriver`` does.
* ``result``: ``out`` (O bytes: the core's ``out`` port, output ``o`` in bits ``[o*w,
  (o+1)*w)``, ``w = out_width``, two's complement), ``cycles`` u32, ``events_0..N-1`` u32,
  ``macs_0..N-1`` u32.
* ``status`` (first payload byte of every response, :class:`Status`): OK 0, BAD_CHECKSUM 1,
  UNKNOWN_COMMAND 2, BAD_LENGTH 3, BAD_ARGUMENT 4. An error response carries only the status
  and changes nothing in the core.

A request gets exactly one response; the host sends the next request after it. (A UART
framing error makes the link drop the frame it was receiving, without a response.) There is no
inter-byte timeout: after a lost byte the link resynchronizes when the frame's ``len`` is used
up; a host that timed out sends 258 zero bytes (0x00 is not ``SYNC``) and drains the responses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from ..pysim.artifact import model_meta
from ..pysim.coreplan import pack_words

__all__ = ["COUNTER_BYTES", "DESIGN_FIELDS", "FIRST", "PROTOCOL_VERSION", "RESPONSE",
           "STATUS_FIELDS", "STATUS_LEN", "SYNC", "Command", "CoreDesign", "Frame", "FrameDecoder",
           "LinkError", "LinkFormat", "Status", "checksum", "decode_ack", "decode_result",
           "decode_status", "encode_ack",
           "encode_frame", "encode_read", "encode_result", "encode_start", "encode_status",
           "encode_status_response", "encode_write_obs", "encode_write_threshold", "model_id",
           "pack_words", "status_payload"]

SYNC = 0xA5
RESPONSE = 0x80
FIRST = 0x01
PROTOCOL_VERSION = 1
#: the counters travel as u32 (the core's counter ports are at most 32 bits wide)
COUNTER_BYTES = 4
MAX_PAYLOAD = 255


class Command(enum.IntEnum):
    STATUS = 0x01
    WRITE_OBS = 0x02
    START = 0x03
    READ = 0x04
    WRITE_THR = 0x05


class Status(enum.IntEnum):
    OK = 0
    BAD_CHECKSUM = 1
    UNKNOWN_COMMAND = 2
    BAD_LENGTH = 3
    BAD_ARGUMENT = 4


#: the STATUS response's fields after the status byte: (name, bytes)
STATUS_FIELDS = (("version", 1), ("model_id", 4), ("n_in", 4), ("n_out", 4), ("n_layers", 1),
                 ("lanes", 1), ("obs_words", 2), ("in_width", 1), ("out_width", 1),
                 ("thr_width", 1))
#: the STATUS response's payload length (status byte included)
STATUS_LEN = 1 + sum(n for _, n in STATUS_FIELDS)


def _nbytes(bits: int) -> int:
    return max(1, -(-int(bits) // 8))


def model_id(model) -> int:
    """The first 32 bits of the model's artifact checksum (sha256), as the STATUS response
    reports it: the host checks that the bitstream holds its model."""
    return int(model_meta(model)["checksum"].split(":", 1)[1][:8], 16)


@dataclass(frozen=True)
class CoreDesign:
    """What a host needs to know about a generated core: the fields of its design JSON
    (:func:`hw.generate_core.design_info`) that the step protocol uses, on the core's ports
    (``sim.driver.StepDriver``) or over the link (:class:`LinkFormat`). Defined once, here."""

    n_layers: int
    n_in: int
    n_out: int
    in_width: int
    out_width: int
    obs_words: int
    lanes: int
    thr_width: int

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {f.name} must be a positive integer, "
                                 f"got {v!r}")

    @classmethod
    def from_json(cls, design):
        """From the design JSON dict, a STATUS response dict (:func:`decode_status`), another
        ``CoreDesign`` or any object or mapping with these fields. A given
        ``obs_addr_width`` must be the one the fields imply."""
        get = design.__getitem__ if isinstance(design, Mapping) else design.__getattribute__
        out = cls(**{f.name: int(get(f.name)) for f in fields(CoreDesign)})
        given = design.get("obs_addr_width") if isinstance(design, Mapping) else None
        if given is not None and int(given) != out.obs_addr_width:
            raise ValueError(f"design: obs_addr_width {given} does not match {out.obs_depth} "
                             f"observation words (needs {out.obs_addr_width} bits)")
        return out

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(CoreDesign)},
                "obs_addr_width": self.obs_addr_width}

    @property
    def obs_depth(self) -> int:
        """Observation words (``ceil(n_in / obs_words)``)."""
        return -(-self.n_in // self.obs_words)

    @property
    def obs_addr_width(self) -> int:
        """Bits of an observation word's address on the core's ``obs`` port."""
        return max(1, (self.obs_depth - 1).bit_length())

    def words(self, x_raw) -> list:
        """Raw input codes -> the observation words (data fields, not yet with addresses;
        :func:`pysim.coreplan.pack_words`)."""
        return pack_words(x_raw, self.n_in, self.obs_words, self.in_width)


#: the fields of a :class:`CoreDesign` (a design JSON has them, and ``obs_addr_width``)
DESIGN_FIELDS = tuple(f.name for f in fields(CoreDesign))


@dataclass(frozen=True)
class LinkFormat(CoreDesign):
    """A :class:`CoreDesign` as the link carries it: the widths its frames take, checked to
    fit them. Build it with :meth:`from_design`."""

    def __post_init__(self):
        super().__post_init__()
        for name, nbytes in STATUS_FIELDS[2:]:
            if getattr(self, name) >= 1 << (8 * nbytes):
                raise ValueError(f"LinkFormat: {name} = {getattr(self, name)} does not fit the "
                                 f"STATUS response's {nbytes}-byte field")
        for name in ("write_obs_len", "write_thr_len", "result_len"):
            if getattr(self, name) > MAX_PAYLOAD:
                raise ValueError(f"LinkFormat: a {name[:-4]} payload takes {getattr(self, name)}"
                                 f" bytes, a frame holds at most {MAX_PAYLOAD}")

    @classmethod
    def from_design(cls, design) -> LinkFormat:
        """:meth:`CoreDesign.from_json`, checked for the link."""
        return cls.from_json(design)

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def addr_bytes(self) -> int:
        return _nbytes((self.obs_depth - 1).bit_length())

    @property
    def data_bytes(self) -> int:
        return _nbytes(self.obs_words * self.in_width)

    @property
    def thr_bytes(self) -> int:
        return _nbytes(self.thr_width)

    @property
    def out_bytes(self) -> int:
        return _nbytes(self.n_out * self.out_width)

    @property
    def write_obs_len(self) -> int:
        return 1 + self.addr_bytes + self.data_bytes

    @property
    def write_thr_len(self) -> int:
        return 1 + self.thr_bytes

    @property
    def result_len(self) -> int:
        """The payload of a result response (status byte included)."""
        return 1 + self.out_bytes + COUNTER_BYTES * (1 + 2 * self.n_layers)

    def request_len(self, command: int) -> int:
        """The payload length a request of ``command`` must have."""
        return {Command.STATUS: 0, Command.WRITE_OBS: self.write_obs_len, Command.START: 1,
                Command.READ: 0, Command.WRITE_THR: self.write_thr_len}[Command(command)]

# ---- frames -------------------------------------------------------------------------------
def checksum(command: int, payload: bytes) -> int:
    """The checksum byte of a frame: the bytes after SYNC then sum to 0 (mod 256)."""
    return -(command + len(payload) + sum(payload)) & 0xFF


def encode_frame(command: int, payload: bytes = b"") -> bytes:
    payload = bytes(payload)
    if not 0 <= command <= 0xFF:
        raise ValueError(f"command must be a byte, got {command}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload holds at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    return bytes([SYNC, command, len(payload), *payload, checksum(command, payload)])


def _le(value: int, nbytes: int, name: str) -> bytes:
    value = int(value)
    if not 0 <= value < 1 << (8 * nbytes):
        raise ValueError(f"{name} = {value} does not fit {nbytes} bytes")
    return value.to_bytes(nbytes, "little")


def _flags(first: bool) -> bytes:
    return bytes([FIRST if first else 0])


def encode_status() -> bytes:
    return encode_frame(Command.STATUS)


def encode_write_obs(fmt: LinkFormat, addr: int, word: int, *, first: bool) -> bytes:
    """Write observation word ``addr`` (``word`` as :meth:`LinkFormat.words` packs it)."""
    if not 0 <= addr < fmt.obs_depth:
        raise ValueError(f"addr must be in 0..{fmt.obs_depth - 1}, got {addr}")
    return encode_frame(Command.WRITE_OBS, _flags(first) + _le(addr, fmt.addr_bytes, "addr")
                        + _le(word, fmt.data_bytes, "word"))


def encode_start(*, first: bool) -> bytes:
    return encode_frame(Command.START, _flags(first))


def encode_read() -> bytes:
    return encode_frame(Command.READ)


def encode_write_threshold(fmt: LinkFormat, layer: int, raw: int) -> bytes:
    """Write layer ``layer``'s threshold register; ``raw`` above the field is sent as the
    field's largest value (the hardware saturates it to the register's range)."""
    if not 0 <= layer < fmt.n_layers:
        raise ValueError(f"layer must be in 0..{fmt.n_layers - 1}, got {layer}")
    if raw < 0:
        raise ValueError(f"raw must be >= 0, got {raw}")
    raw = min(int(raw), (1 << (8 * fmt.thr_bytes)) - 1)
    return encode_frame(Command.WRITE_THR, bytes([layer]) + _le(raw, fmt.thr_bytes, "raw"))


# ---- responses (the hardware's side, for references and host models) --------------------
def encode_ack(command: int, status: int = Status.OK) -> bytes:
    return encode_frame(command | RESPONSE, bytes([status]))


def encode_result(fmt: LinkFormat, command: int, out, cycles: int, events, macs) -> bytes:
    """A START or READ response: ``out`` are the raw (signed) output codes."""
    w = fmt.out_width
    flat = sum((int(v) & ((1 << w) - 1)) << (k * w)
               for k, v in enumerate(np.asarray(out, dtype=np.int64).ravel().tolist()))
    if len(events) != fmt.n_layers or len(macs) != fmt.n_layers:
        raise ValueError(f"events and macs need {fmt.n_layers} values each")
    body = bytes([Status.OK]) + _le(flat, fmt.out_bytes, "out") + b"".join(
        _le(v, COUNTER_BYTES, "counter") for v in (cycles, *events, *macs))
    return encode_frame(command | RESPONSE, body)


def status_payload(fmt: LinkFormat, model_id_: int) -> bytes:
    """The STATUS response's payload (status byte included)."""
    values = {**{f.name: getattr(fmt, f.name) for f in fields(fmt)},
              "version": PROTOCOL_VERSION, "model_id": model_id_}
    return bytes([Status.OK]) + b"".join(_le(values[n], k, n) for n, k in STATUS_FIELDS)


def encode_status_response(fmt: LinkFormat, model_id_: int) -> bytes:
    return encode_frame(Command.STATUS | RESPONSE, status_payload(fmt, model_id_))


# ---- decoding (host side) -----------------------------------------------------------------
class LinkError(RuntimeError):
    """A response that is not the expected OK response; ``status`` is its status or None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Frame:
    """A received frame; ``ok``: its checksum holds."""

    command: int
    payload: bytes
    ok: bool = True

    @property
    def status(self) -> int | None:
        """A response's status byte (None if the payload is empty)."""
        return self.payload[0] if self.payload else None


class FrameDecoder:
    """Incremental frame parser: :meth:`feed` bytes in any pieces, get the complete frames.

    Bytes before a ``SYNC`` are skipped (counted in ``skipped``); a frame with a bad checksum
    is returned with ``ok=False``."""

    def __init__(self):
        self.skipped = 0
        self._state = "sync"
        self._command = 0
        self._len = 0
        self._payload = bytearray()

    def feed(self, data) -> list:
        frames = []
        for b in bytes(data):
            if self._state == "sync":
                if b == SYNC:
                    self._state = "command"
                else:
                    self.skipped += 1
            elif self._state == "command":
                self._command, self._state = b, "len"
            elif self._state == "len":
                self._len, self._payload = b, bytearray()
                self._state = "payload" if b else "check"
            elif self._state == "payload":
                self._payload.append(b)
                if len(self._payload) == self._len:
                    self._state = "check"
            else:
                payload = bytes(self._payload)
                frames.append(Frame(self._command, payload,
                                    b == checksum(self._command, payload)))
                self._state = "sync"
        return frames


def _expect(frame: Frame, command: int, length: int | None) -> bytes:
    if not frame.ok:
        raise LinkError(f"response to {Command(command).name}: bad checksum")
    if frame.command != command | RESPONSE:
        raise LinkError(f"expected a response to {Command(command).name}, got command "
                        f"0x{frame.command:02x}")
    if frame.status != Status.OK:
        name = Status(frame.status).name if frame.status in set(Status) else frame.status
        raise LinkError(f"{Command(command).name} failed: {name}", frame.status)
    if length is not None and len(frame.payload) != length:
        raise LinkError(f"response to {Command(command).name}: {len(frame.payload)} bytes, "
                        f"expected {length}")
    return frame.payload


def decode_ack(frame: Frame, command: int) -> None:
    """Check an OK response to ``command`` (raises :class:`LinkError` otherwise)."""
    _expect(frame, command, 1)


def decode_result(fmt: LinkFormat, frame: Frame, command: int = Command.START) -> dict:
    """A START/READ response -> ``out`` (signed codes, int64), ``cycles``, ``events``,
    ``macs``: the keys of ``StepDriver.step``'s result."""
    p = _expect(frame, command, fmt.result_len)
    o = 1 + fmt.out_bytes
    flat = int.from_bytes(p[1:o], "little")
    w, mask = fmt.out_width, (1 << fmt.out_width) - 1
    out = np.array([((flat >> (k * w)) & mask) - (((flat >> (k * w + w - 1)) & 1) << w)
                    for k in range(fmt.n_out)], dtype=np.int64)
    cnt = [int.from_bytes(p[o + COUNTER_BYTES * i:o + COUNTER_BYTES * (i + 1)], "little")
           for i in range(1 + 2 * fmt.n_layers)]
    n = fmt.n_layers
    return {"out": out, "cycles": cnt[0], "events": cnt[1:1 + n], "macs": cnt[1 + n:]}


def decode_status(frame: Frame) -> dict:
    """A STATUS response -> dict of :data:`STATUS_FIELDS` (``LinkFormat.from_design`` takes
    it)."""
    p = _expect(frame, Command.STATUS, STATUS_LEN)
    out, o = {}, 1
    for name, n in STATUS_FIELDS:
        out[name] = int.from_bytes(p[o:o + n], "little")
        o += n
    return out

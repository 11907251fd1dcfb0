"""The host side of the UART link: steps of a :class:`hw.hostlink.HostLink` through its frames.

:class:`LinkStepDriver` has :class:`sim.driver.StepDriver`'s interface (``reset``,
``write_threshold``, ``step`` returning the same dict), so :class:`sim.coreloop.CoreBench`
runs the one closed loop over a link exactly as over the core's ports; every frame is built
and read with :mod:`hw.protocol` (its docstring has the frame table and the FIRST flag rule).

Transports
----------
A transport is an async byte channel to the link; the driver frames and unframes, the
transport only moves bytes:

* ``label``: what it is, for messages (``"/dev/ttyUSB1 at 115200 baud"``);
* ``async send(data: bytes)``: put the bytes on the wire, in order;
* ``async read(busy_cycles: int = 0) -> bytes``: the next byte(s) from the link, at least one,
  or ``b""`` when none came within the transport's own timeout. ``busy_cycles``: clock cycles
  the hardware may spend before it answers on top of a plain response (a START response comes
  after the core's step); a transport whose timeout is far longer than any step may ignore it.

:class:`UartPins` bit-bangs 8N1 on a port adapter's ``rx`` pin and samples its ``tx`` pin (the
``set``/``get``/``tick`` adapters of :mod:`sim.driver`: ``AmaranthIO`` around a ``HostLink``);
its timeout counts clock cycles. ``deltanet.hostrun.SerialPort`` wraps pyserial; its timeout
counts seconds.

The link has no clock the host can see, so a link driver cannot check the edges that elapsed
during a step (``through_ports = False``; see :class:`sim.coreloop.CoreBench`): the ``cycles``
of the result frame are still checked against the cycle model. Each step's dict adds
``round_trip_s``: the wall time from the first request byte sent to the last result byte read,
and ``link_bytes``: the bytes of the step's frames, both ways.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..hw.protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Command,
    Frame,
    FrameDecoder,
    LinkError,
    LinkFormat,
    decode_ack,
    decode_result,
    decode_status,
    encode_start,
    encode_status,
    encode_write_obs,
    encode_write_threshold,
)
from ..hw.uart import MIN_DIVISOR
from .driver import WRITE_MODES, CoreDesign

__all__ = ["DesignMismatch", "LinkStepDriver", "NoResponse", "UartPins", "check_status",
           "query_status", "request"]

#: the bytes that resynchronize a link that holds part of a frame (a frame's ``len`` is at
#: most 255, plus its checksum and the command and length bytes; 0x00 is not SYNC)
RESYNC = bytes(MAX_PAYLOAD + 3)
#: the STATUS fields checked against the expected design
CHECKED = ("n_in", "n_out", "n_layers", "lanes", "obs_words", "in_width", "out_width",
           "thr_width")


class NoResponse(LinkError):
    """No response within the transport's timeout."""


class DesignMismatch(LinkError):
    """The link's STATUS does not describe the design (or model) the host expects."""


class UartPins:
    """8N1 on the pins of a port adapter (``io``: ``set``, ``get``, ``async tick``): requests
    go out on ``rx`` at ``divisor`` clock cycles per bit, responses are sampled on ``tx`` in the
    middle of each bit. ``timeout_bits``: bit times :meth:`read` waits for a start bit (plus
    its ``busy_cycles``). ``cycles``: the clock cycles it has ticked."""

    def __init__(self, io, divisor: int, *, timeout_bits: int = 64):
        for name, v, lo in (("divisor", divisor, MIN_DIVISOR), ("timeout_bits", timeout_bits, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"UartPins: {name} must be an integer >= {lo}, got {v!r}")
        self.io = io
        self.divisor = divisor
        self.timeout_bits = timeout_bits
        self.cycles = 0
        self.label = f"the UART pins (divisor {divisor})"

    async def _ticks(self, n: int) -> None:
        for _ in range(n):
            await self.io.tick()
        self.cycles += n

    async def send(self, data: bytes) -> None:
        for b in bytes(data):
            for bit in (0, *((b >> k) & 1 for k in range(8)), 1):
                self.io.set("rx", bit)
                await self._ticks(self.divisor)

    async def read(self, busy_cycles: int = 0) -> bytes:
        """One byte, or ``b""`` when no start bit came within the timeout. Returns in the
        middle of the byte's stop bit."""
        d, io = self.divisor, self.io
        waited, limit = 0, self.timeout_bits * d + busy_cycles
        while io.get("tx"):
            if waited >= limit:
                return b""
            await self._ticks(1)
            waited += 1
        await self._ticks(d // 2)  # the start bit began at most one cycle ago: its middle
        if io.get("tx"):
            raise LinkError(f"{self.label}: a glitch on tx (a start bit shorter than half a bit)")
        b = 0
        for k in range(8):
            await self._ticks(d)
            b |= io.get("tx") << k
        await self._ticks(d)
        if not io.get("tx"):
            raise LinkError(f"{self.label}: framing error on tx (the stop bit read 0)")
        return bytes([b])


async def request(transport, frame: bytes, *, busy_cycles: int = 0) -> Frame:
    """Send one request frame and read its response frame; :class:`NoResponse` when the
    transport times out before a whole frame came (bytes before a SYNC are skipped)."""
    await transport.send(frame)
    dec = FrameDecoder()
    while True:
        data = await transport.read(busy_cycles)
        if not data:
            what = Command(frame[1]).name if frame[1] in set(Command) else f"0x{frame[1]:02x}"
            raise NoResponse(f"no response to {what} from {transport.label}")
        frames = dec.feed(data)
        if len(frames) > 1:
            raise LinkError(f"{transport.label}: {len(frames)} responses to one request")
        if frames:
            return frames[0]


async def query_status(transport) -> dict:
    """The link's STATUS (:func:`hw.protocol.decode_status`). A link that held part of an
    earlier frame (a host that stopped mid-request) may answer nothing or garbage: then the
    resynchronizing zero bytes go out, the answers to them are drained, and STATUS is asked
    once more."""
    try:
        return decode_status(await request(transport, encode_status()))
    except LinkError:
        await transport.send(RESYNC)
        while await transport.read():
            pass
        return decode_status(await request(transport, encode_status()))


def check_status(status: dict, design, *, model_id: int | None = None,
                 label: str = "the link") -> None:
    """Raise :class:`DesignMismatch` naming every STATUS field that differs from ``design``
    (a :class:`sim.driver.CoreDesign` or its dict) and, when given, from ``model_id``."""
    get = design.__getitem__ if isinstance(design, Mapping) else design.__getattribute__
    bad = []
    if status["version"] != PROTOCOL_VERSION:
        bad.append(f"protocol version {status['version']}, expected {PROTOCOL_VERSION}")
    bad += [f"{k} {status[k]}, expected {int(get(k))}" for k in CHECKED
            if status[k] != int(get(k))]
    if model_id is not None and status["model_id"] != model_id:
        bad.append(f"model id 0x{status['model_id']:08x}, expected 0x{model_id:08x} (the "
                   "bitstream holds another model)")
    if bad:
        raise DesignMismatch(f"{label} reports " + "; ".join(bad))


class LinkStepDriver:
    """Drives steps of a core behind a :class:`hw.hostlink.HostLink` through ``transport``
    (see the module docstring): the interface of :class:`sim.driver.StepDriver`, whose ``io``
    argument it accepts and does not use (every byte goes through the transport).

    ``design``: the :class:`sim.driver.CoreDesign` (or design JSON) the host expects; ``reset``
    checks the link's STATUS against it and, when given, against ``model_id``
    (:func:`hw.protocol.model_id`). ``thresholds_raw``: when given, ``reset`` also writes every
    layer's threshold register with them, so that a run starts from known registers whatever
    an earlier host wrote. ``writes``: as :class:`sim.driver.StepDriver`'s.
    """

    #: the steps do not go through the adapter's ports: its edges do not time them
    through_ports = False

    def __init__(self, design, transport, *, writes: str = "changed",
                 model_id: int | None = None, thresholds_raw=None):
        if writes not in WRITE_MODES:
            raise ValueError(f"writes must be one of {WRITE_MODES}, got {writes!r}")
        self.design = design if isinstance(design, CoreDesign) else CoreDesign.from_json(design)
        self.fmt = LinkFormat.from_design(self.design)
        if thresholds_raw is not None and len(thresholds_raw) != self.fmt.n_layers:
            raise ValueError(f"thresholds_raw needs {self.fmt.n_layers} values, got "
                             f"{len(thresholds_raw)}")
        self.transport = transport
        self.writes = writes
        self.model_id = model_id
        self.thresholds_raw = thresholds_raw
        self.status = None  # the link's STATUS, after reset
        self._held = None
        self.words_written = 0
        self.bytes_sent = self.bytes_received = 0  # every frame, both ways

    async def _request(self, frame: bytes, busy_cycles: int = 0) -> Frame:
        f = await request(self.transport, frame, busy_cycles=busy_cycles)
        self.bytes_sent += len(frame)
        self.bytes_received += 4 + len(f.payload)  # SYNC, command, len, payload, checksum
        return f

    def forget(self) -> None:
        """The next step writes every word."""
        self._held = None

    async def _ack(self, frame: bytes, command: int) -> None:
        decode_ack(await self._request(frame), command)

    async def reset(self, io=None) -> None:
        """Check STATUS (:func:`check_status`), write the thresholds when given; the next step
        writes every word (over the link the core is not reset: the first step of an episode
        carries the FIRST flag)."""
        self.status = await query_status(self.transport)
        check_status(self.status, self.design, model_id=self.model_id,
                     label=self.transport.label)
        for layer, raw in enumerate(self.thresholds_raw or ()):
            await self.write_threshold(io, layer, raw)
        self._held = None

    async def write_threshold(self, io, layer: int, raw: int) -> None:
        await self._ack(encode_write_threshold(self.fmt, layer, raw), Command.WRITE_THR)
        if layer == 0:
            self.forget()

    async def step(self, io, x_raw, first: bool, max_cycles: int) -> dict:
        """One step: WRITE_OBS for the words to write (ascending), START; the result frame's
        ``out``, ``cycles``, ``events``, ``macs``, plus ``writes``, ``round_trip_s`` and
        ``link_bytes`` (the step's request and response bytes), or
        ``{"timeout": True, ...}`` when the START response did not come (``max_cycles``: the
        core's cycles it may take, passed to the transport as ``busy_cycles``)."""
        fmt = self.fmt
        words = fmt.words(x_raw)
        if first or self._held is None or self.writes == "all":
            todo = range(len(words))
        else:
            todo = [a for a, (w, old) in enumerate(zip(words, self._held)) if w != old]
        n0 = self.bytes_sent + self.bytes_received
        t0 = time.perf_counter()
        for a in todo:
            await self._ack(encode_write_obs(fmt, a, words[a], first=first), Command.WRITE_OBS)
        self._held = words
        self.words_written += len(todo)
        try:
            frame = await self._request(encode_start(first=first), busy_cycles=max_cycles)
        except NoResponse:
            return {"timeout": True, "writes": len(todo)}
        t1 = time.perf_counter()
        return {**decode_result(fmt, frame, Command.START), "writes": len(todo),
                "round_trip_s": t1 - t0,
                "link_bytes": self.bytes_sent + self.bytes_received - n0}

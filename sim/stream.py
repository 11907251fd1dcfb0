"""One generic valid/ready stream source (driver) and sink (monitor) for cocotb 2.x benches.

Works on any flattened Amaranth ``lib.stream`` port ``<name>__payload``, ``<name>__valid``,
``<name>__ready``. A struct payload is one flat unsigned vector, first field in the LSBs; its
fields are described by a plain list ``[(name, width, signed), ...]`` (no pysim, no Amaranth)
that the runner writes into the design JSON.

Timing discipline (see /work/shared/TOOLCHAIN.md): both ends drive only after a falling edge,
then look at the settled signals in ``ReadOnly`` of the same time step; a transfer is
``valid & ready`` there and happens at the following rising edge. The source holds ``valid`` and
its payload until the transfer (AXI-stream rule) and drives seeded random garbage on the payload
while ``valid`` is low, so a consumer that samples without ``valid`` shows up as a mismatch.

Run-time variants: ``idle_prob`` (source: chance of inserting an idle cycle before presenting
the next item) and ``ready_prob`` (sink: chance that ``ready`` is high in a cycle), both drawn
from ``random.Random(seed)``, so a seed reproduces the exact handshake pattern.
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, ReadOnly

__all__ = ["Fields", "StreamSink", "StreamSource"]


class Fields:
    """Packing of a flat payload vector from ``[(name, width, signed), ...]`` (LSB first)."""

    def __init__(self, fields):
        self.fields = tuple((str(n), int(w), bool(s)) for n, w, s in fields)
        if not self.fields or any(w < 1 for _, w, _ in self.fields):
            raise ValueError(f"stream fields need at least one field of width >= 1: {fields!r}")
        self.names = tuple(n for n, _, _ in self.fields)
        self.width = sum(w for _, w, _ in self.fields)

    def pack(self, item) -> int:
        """A tuple in field order, or a dict by name -> flat integer. Values must fit."""
        if isinstance(item, dict):
            item = tuple(item[n] for n in self.names)
        if len(item) != len(self.fields):
            raise ValueError(f"payload needs {len(self.fields)} fields {self.names}, got {item!r}")
        out, off = 0, 0
        for (name, w, s), v in zip(self.fields, item):
            v = int(v)
            lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
            if not lo <= v <= hi:
                raise ValueError(f"payload field {name}={v} does not fit {w} "
                                 f"{'signed' if s else 'unsigned'} bits")
            out |= (v & ((1 << w) - 1)) << off
            off += w
        return out

    def unpack(self, value: int) -> tuple:
        """Flat integer -> tuple of Python ints in field order (two's complement if signed)."""
        out, off = [], 0
        value = int(value)
        for _, w, s in self.fields:
            v = (value >> off) & ((1 << w) - 1)
            if s and v >> (w - 1):
                v -= 1 << w
            out.append(v)
            off += w
        return tuple(out)


class _StreamEnd:
    def __init__(self, dut, name: str, fields, clk, seed: int):
        self.name = name
        self.fields = fields if isinstance(fields, Fields) else Fields(fields)
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clk = clk
        self.rng = random.Random(seed)
        self.transfers = []  # (sim time in ns of the transfer's cycle, item)
        self._task = None

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):  # pragma: no cover - overridden
        raise NotImplementedError


class StreamSource(_StreamEnd):
    """Drives ``<name>__valid/__payload`` from a queue of items (tuples or dicts).

    ``send(items)`` queues them; ``await wait_idle()`` returns once every queued item has been
    transferred; ``transfers`` logs ``(time_ns, item)`` per accepted item.
    """

    def __init__(self, dut, name: str, fields, clk, *, idle_prob: float = 0.0, seed: int = 0):
        super().__init__(dut, name, fields, clk, seed)
        self.idle_prob = float(idle_prob)
        self._queue = deque()
        self._cur = None
        self._empty = Event()
        self._empty.set()
        self.valid.value = 0
        self.payload.value = 0

    def send(self, items):
        items = list(items)
        for it in items:
            self.fields.pack(it)  # fail at once on a payload that does not fit
        self._queue.extend(items)
        if self._queue:
            self._empty.clear()

    @property
    def idle(self) -> bool:
        return self._cur is None and not self._queue

    async def wait_idle(self):
        if not self.idle:
            await self._empty.wait()

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            if self._cur is None:
                if self._queue and not (self.idle_prob and self.rng.random() < self.idle_prob):
                    self._cur = self._queue.popleft()
                    self.payload.value = self.fields.pack(self._cur)
                    self.valid.value = 1
                else:
                    self.payload.value = self.rng.getrandbits(self.fields.width)
                    self.valid.value = 0
            await ReadOnly()
            if self._cur is not None and int(self.ready.value):
                self.transfers.append((get_sim_time("ns"), self._cur))
                self._cur = None
                if not self._queue:
                    self._empty.set()


class StreamSink(_StreamEnd):
    """Drives ``<name>__ready`` (high with probability ``ready_prob``) and records transfers.

    ``items`` lists the payloads (tuples in field order) in transfer order. It also checks the
    producer's side of the handshake: once ``valid`` is high without ``ready``, ``valid`` must
    stay high and the payload unchanged until the transfer (an ``AssertionError`` fails the
    test otherwise).
    """

    def __init__(self, dut, name: str, fields, clk, *, ready_prob: float = 1.0, seed: int = 0):
        super().__init__(dut, name, fields, clk, seed)
        self.ready_prob = float(ready_prob)
        self.ready.value = 0
        self._stalled = None  # payload offered but not taken in the previous cycle

    @property
    def items(self) -> list:
        return [it for _, it in self.transfers]

    def clear(self):
        self.transfers.clear()

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            r = int(self.ready_prob >= 1.0 or self.rng.random() < self.ready_prob)
            self.ready.value = r
            await ReadOnly()
            valid, payload = int(self.valid.value), int(self.payload.value)
            if self._stalled is not None and (not valid or payload != self._stalled):
                raise AssertionError(
                    f"stream {self.name}: at {get_sim_time('ns')} ns valid={valid} payload="
                    f"{self.fields.unpack(payload)} while {self.fields.unpack(self._stalled)} "
                    "was still waiting for ready")
            self._stalled = None
            if valid and r:
                self.transfers.append((get_sim_time("ns"), self.fields.unpack(payload)))
            elif valid:
                self._stalled = payload

"""The one step driver of the event-driven core: the host side of its port contract.

Every engine uses it: the cocotb bench on the generated Verilog, the in-process Amaranth
simulation and the tests. It talks to the design through a small *port adapter* (any object
with ``set(name, value)``, ``get(name) -> int``, ``async tick()`` = advance to the next falling
clock edge after one rising edge, and ``async wait_done(max_cycles) -> bool``), so the protocol
is written once. Port names are the flattened Verilog names of :class:`hw.core.DeltaCore`
(``obs__payload``, ``start``, ``events_0``, ...), read from the design JSON.

One step (``StepDriver.step``):

1. observation words: ``obs_words`` codes each (code ``p`` of word ``w`` = input
   ``w * obs_words + p``, two's complement), written one per cycle in ascending address order
   with ``obs__valid`` (the core accepts while idle and not starting): every word at an episode
   start or after a layer-0 threshold write, else the words whose codes changed
   (``writes="changed"``, the default) or every word (``writes="all"``); ``first`` is held high
   from the first write to ``start`` at an episode start;
2. ``start`` until an edge samples it with ``ready`` (the intake queues the last word
   ``INTAKE_LATENCY`` cycles after its write), then wait for ``done``;
3. read ``out`` (signed codes), ``cycles``, ``events_l`` and ``macs_l``.
"""

from __future__ import annotations

import numpy as np

from ..hw.protocol import CoreDesign

__all__ = ["WRITE_MODES", "CoreDesign", "StepDriver", "signed_fields"]

WRITE_MODES = ("changed", "all")


def signed_fields(value: int, n: int, width: int) -> np.ndarray:
    """Split a flat little-endian vector into ``n`` signed ``width``-bit fields."""
    mask = (1 << width) - 1
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        v = (int(value) >> (k * width)) & mask
        out[k] = v - (1 << width) if v >> (width - 1) else v
    return out


class StepDriver:
    """Drives steps of one core through a port adapter; remembers the words it wrote."""

    def __init__(self, design: CoreDesign, *, writes: str = "changed"):
        if writes not in WRITE_MODES:
            raise ValueError(f"writes must be one of {WRITE_MODES}, got {writes!r}")
        self.design = design
        self.writes = writes
        self._held = None  # the words the core last saw (None: unknown -> write all)
        self.words_written = 0

    def forget(self) -> None:
        """The next step writes every word (after a reset or a layer-0 threshold write)."""
        self._held = None

    async def reset(self, io) -> None:
        """Hold ``rst`` for 3 cycles with every input low."""
        for name in ("start", "first", "obs__valid", "obs__payload", "thr_we", "thr_sel",
                     "thr_data"):
            io.set(name, 0)
        io.set("rst", 1)
        for _ in range(3):
            await io.tick()
        io.set("rst", 0)
        await io.tick()
        self._held = None

    async def write_threshold(self, io, layer: int, raw: int) -> None:
        """Write layer ``layer``'s threshold register (while the core is idle). Codes above the
        register's range are written as its largest value: like every code of ``2**w`` or more
        for a ``w``-bit input format, it never fires."""
        io.set("thr_sel", layer)
        io.set("thr_data", min(int(raw), (1 << self.design.thr_width) - 1))
        io.set("thr_we", 1)
        await io.tick()
        io.set("thr_we", 0)
        if layer == 0:
            self.forget()

    async def step(self, io, x_raw, first: bool, max_cycles: int) -> dict:
        """One step; returns ``out``, ``cycles``, ``events``, ``macs``, ``writes`` (words
        written) or ``{"timeout": True, ...}`` if ``done`` did not come in ``max_cycles``."""
        d = self.design
        if not io.get("ready"):
            raise RuntimeError("the core is not ready at the start of a step")
        words = d.words(x_raw)
        if first or self._held is None or self.writes == "all":
            todo = range(len(words))
        else:
            todo = [a for a, (w, old) in enumerate(zip(words, self._held)) if w != old]
        io.set("first", int(first))
        aw = d.obs_addr_width
        for a in todo:
            io.set("obs__payload", a | (words[a] << aw))
            io.set("obs__valid", 1)
            await io.tick()
        io.set("obs__valid", 0)
        self._held = words
        self.words_written += len(todo)
        io.set("start", 1)
        while True:  # start is sampled at an edge where ready (the intake has queued the words)
            sampled = io.get("ready")
            await io.tick()
            if sampled:
                break
        io.set("start", 0)
        io.set("first", 0)
        if not await io.wait_done(max_cycles):
            return {"timeout": True, "writes": len(todo)}
        return {
            "out": signed_fields(io.get("out"), d.n_out, d.out_width),
            "cycles": io.get("cycles"),
            "events": [io.get(f"events_{i}") for i in range(d.n_layers)],
            "macs": [io.get(f"macs_{i}") for i in range(d.n_layers)],
            "writes": len(todo),
        }


class AmaranthIO:
    """Port adapter for an ``amaranth.sim`` async testbench (``ctx``) around a
    :class:`hw.core.DeltaCore` ``top``. ``rst`` is ignored: a simulation starts reset."""

    def __init__(self, ctx, top):
        self.ctx = ctx
        self.top = top
        self.edges = 0  # rising edges ticked so far

    def _sig(self, name: str):
        obj = self.top
        for part in name.split("__"):
            obj = getattr(obj, part)
        return obj.as_value() if hasattr(obj, "as_value") else obj

    def set(self, name: str, value: int) -> None:
        if name != "rst":
            self.ctx.set(self._sig(name), value)

    def get(self, name: str) -> int:
        return int(self.ctx.get(self._sig(name)))

    async def tick(self) -> None:
        await self.ctx.tick()
        self.edges += 1

    async def wait_done(self, max_cycles: int) -> bool:
        for _ in range(max_cycles):
            if self.get("done"):
                return True
            await self.tick()
        return bool(self.get("done"))

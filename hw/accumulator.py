"""Pre-activation memory: one register per output row, bias at reset, one RMW per lane-cycle."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import check_int

__all__ = ["DeltaAccumulator", "write_signature"]


def write_signature(*, n_layers: int, lanes: int, row_width: int,
                    data_width: int) -> wiring.Signature:
    """MAC -> accumulator, from the producer's side: per lane ``k`` a write enable ``en[k]``,
    its local row ``row[k]`` and signed addend ``data[k]``; ``layer`` is shared by all lanes."""
    return wiring.Signature({
        "layer": Out(unsigned(max(1, ceil_log2(n_layers)))),
        "en": Out(lanes),
        "row": Out(data.ArrayLayout(unsigned(row_width), lanes)),
        "data": Out(data.ArrayLayout(signed(data_width), lanes)),
    })


class DeltaAccumulator(wiring.Component):
    """The bank of pre-activations ``M`` of every layer, in registers.

    Row ``r`` of layer ``l`` belongs to lane ``r % L`` at local row ``r // L``; each lane has one
    adder and writes ``M[l][r] <= wrap(M[l][r] + data)`` (two's-complement wrap to the layer's
    ``acc_bits``, as pysim's ``wrap_bits``) for its enabled write. A register read-modify-write
    takes one cycle, so back-to-back updates of the same row never hazard.

    Parameters (keyword-only)
    -------------------------
    n_out: rows per layer. acc_bits: accumulator width per layer (2..64). bias: raw bias codes per
    layer (``Model.b_raw``), the reset value. lanes: 1..64. row_width, data_width: write port
    widths (see :func:`write_signature`).

    Ports
    -----
    wr: In(write_signature) lane writes, applied at the clock edge.
    clear: In(1) every row back to its bias at this edge (episode start; wins over writes).
    pre_{l}: Out(ArrayLayout(signed(acc_bits[l]), n_out[l])) current pre-activations of layer l.

    Latency: a write is visible on ``pre_{l}`` the cycle after its edge. Throughput: one write
    per lane per cycle.
    """

    def __init__(self, *, n_out, acc_bits, bias, lanes, row_width, data_width):
        owner = "DeltaAccumulator"
        self._n_out = tuple(check_int(owner, "n_out[]", v, 1) for v in n_out)
        self._acc = tuple(check_int(owner, "acc_bits[]", v, 2, 64) for v in acc_bits)
        if len(self._acc) != len(self._n_out) or len(bias) != len(self._n_out) or not self._n_out:
            raise ValueError(f"{owner}: n_out, acc_bits and bias need one entry per layer "
                             f"(got {len(self._n_out)}, {len(self._acc)}, {len(bias)})")
        self._bias = []
        for i, (b, n, a) in enumerate(zip(bias, self._n_out, self._acc)):
            b = np.asarray(b, dtype=np.int64)
            if b.shape != (n,):
                raise ValueError(f"{owner}: bias[{i}] must have shape ({n},), got {b.shape}")
            if b.size and (b.min() < -(1 << (a - 1)) or b.max() >= 1 << (a - 1)):
                raise ValueError(f"{owner}: bias[{i}] does not fit acc_bits={a}")
            self._bias.append(tuple(int(v) for v in b))
        self._lanes = check_int(owner, "lanes", lanes, 1, 64)
        self._rw = check_int(owner, "row_width", row_width, 1, 16)
        self._dw = check_int(owner, "data_width", data_width, 2, 128)
        need = max(-(-n // self._lanes) for n in self._n_out)
        if need > 1 << self._rw:
            raise ValueError(f"{owner}: row_width={self._rw} cannot address {need} rows per lane")
        ports = {"wr": In(write_signature(n_layers=len(self._n_out), lanes=self._lanes,
                                          row_width=self._rw, data_width=self._dw)),
                 "clear": In(1)}
        for i, (n, a) in enumerate(zip(self._n_out, self._acc)):
            ports[f"pre_{i}"] = Out(data.ArrayLayout(signed(a), n))
        super().__init__(ports)

    @property
    def n_layers(self) -> int:
        return len(self._n_out)

    def pre(self, layer: int):
        return getattr(self, f"pre_{layer}")

    @property
    def register_bits(self) -> int:
        return sum(n * a for n, a in zip(self._n_out, self._acc))

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        regs = [[Signal(signed(a), init=self._bias[i][r], name=f"m{i}_{r}") for r in range(n)]
                for i, (n, a) in enumerate(zip(self._n_out, self._acc))]
        for i, rows in enumerate(regs):
            m.d.comb += self.pre(i).eq(Cat(*rows))

        width = max(self._acc)
        for k in range(L):
            cur = Signal(signed(width), name=f"cur{k}")
            nxt = Signal(signed(width), name=f"nxt{k}")
            # One adder per lane: select the addressed row, add, write it back.
            with m.Switch(self.wr.layer):
                for i, rows in enumerate(regs):
                    with m.Case(i), m.Switch(self.wr.row[k]):
                        for j, r in enumerate(range(k, len(rows), L)):
                            with m.Case(j):
                                m.d.comb += cur.eq(rows[r])
                                with m.If(self.wr.en[k]):
                                    m.d.sync += rows[r].eq(nxt)
            m.d.comb += nxt.eq(cur + self.wr.data[k])
        with m.If(self.clear):
            m.d.sync += [reg.eq(self._bias[i][r])
                         for i, rows in enumerate(regs) for r, reg in enumerate(rows)]
        return m

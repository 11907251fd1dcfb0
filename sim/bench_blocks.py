"""cocotb block benches: ``DeltaEncoder`` alone, ``SparseMAC`` + ``DeltaAccumulator`` together.

Every parameter comes from the JSON the runner (:mod:`sim.blocks`) wrote beside the Verilog
(``DELTANET_BLOCK_JSON``); ``DELTANET_SEED`` seeds all stimulus and handshake randomness;
``DELTANET_BENCH_MUTATE`` corrupts the *reference* on purpose (``encoder_gt``: ``>`` instead of
``>=``; ``mac_weight``: one reference weight off by one) so a test can prove the checks fail.

Each bench is driver -> monitor -> model -> checker, with the generic stream ends of
:mod:`sim.stream`; run-time variants (thresholds, backpressure on ``o``, idle cycles on ``i``)
are phases inside one test, build-time variants are separate builds.

References (numpy, restating the documented semantics, not the RTL):

* encoder (pysim ``DeltaNetwork.step``): ``d = x - x_hat`` (``x_hat`` read as 0 with ``clear``);
  event iff ``d != 0 and (|d| >= threshold or full)``; ``x_hat[i] = x[i]`` for events only;
  ``events`` counts all events, the stream carries the events of non-empty columns
  (``mask``) as ``(index, delta)``, lowest index first, one per cycle from the cycle after
  ``load``.
* MAC + accumulator: per accepted event ``(j, d)`` of layer ``l``:
  ``M[l] = wrap(M[l] + W[l][:, j] * d, acc_bits[l])``, ``macs[l] += nnz(W[l][:, j])``; with
  ``clear`` ``M = bias`` and ``macs = 0``; an event occupies the issue stage
  ``max(1, maxlen(j))`` cycles, ``maxlen`` = most non-zero weights of column ``j`` in one lane
  (rows ``r % lanes == k``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from pysim.fixed import FixedFormat, wrap_bits

from .stream import Fields, StreamSink, StreamSource

CLOCK_NS = 10


def _params():
    design = json.loads(Path(os.environ["DELTANET_BLOCK_JSON"]).read_text())
    seed = int(os.environ.get("DELTANET_SEED", "0"))
    mutate = os.environ.get("DELTANET_BENCH_MUTATE", "")
    return design, seed, mutate


async def _reset(dut, inputs: dict):
    """Start the clock, hold ``rst`` for 3 rising edges with ``inputs`` driven, release it at a
    falling edge and return at the following falling edge (inputs may be driven from here)."""
    Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
    dut.rst.value = 1
    for name, v in inputs.items():
        getattr(dut, name).value = v
    for _ in range(3):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


# ==== DeltaEncoder ===============================================================================

class RefEncoder:
    """The encoder's reference: pysim's delta semantics on one vector of raw codes."""

    def __init__(self, n_in: int, mask, threshold: int, mutate: str = ""):
        self.x_hat = np.zeros(n_in, dtype=np.int64)
        self.mask = np.asarray(mask, dtype=bool)
        self.threshold = int(threshold)
        self.mutate = mutate

    def clear(self):
        self.x_hat[:] = 0

    def load(self, x, *, clear: bool = False, full: bool = False):
        """-> (event count, [(index, delta)] emitted in order)."""
        x = np.asarray(x, dtype=np.int64)
        if clear:
            self.clear()
        d = x - self.x_hat
        big = np.abs(d) > self.threshold if self.mutate == "encoder_gt" \
            else np.abs(d) >= self.threshold
        ev = (d != 0) & (big | bool(full))
        self.x_hat = np.where(ev, x, self.x_hat)
        return int(ev.sum()), [(int(i), int(d[i])) for i in np.flatnonzero(ev & self.mask)]


class EncoderTB:
    def __init__(self, dut, design: dict, seed: int, mutate: str):
        self.dut = dut
        self.d = design
        self.fmt = FixedFormat.parse(design["fmt"])
        self.n = int(design["n_in"])
        self.x_fields = Fields([(f"x{i}", self.fmt.width, True) for i in range(self.n)])
        self.rng = np.random.default_rng(seed)
        self.ref = RefEncoder(self.n, design["mask"], design["threshold_reset"], mutate)
        self.sink = StreamSink(dut, "o", design["o_fields"], dut.clk, seed=seed + 1)
        self.loads = 0

    async def reset(self):
        await _reset(self.dut, {"x": 0, "load": 0, "clear": 0, "full": 0, "thr_we": 0,
                                "thr_data": 0, "o__ready": 0})
        self.sink.start()

    async def write_threshold(self, value: int):
        dut = self.dut
        dut.thr_we.value = 1
        dut.thr_data.value = value
        await FallingEdge(dut.clk)
        dut.thr_we.value = 0
        await ReadOnly()
        assert int(dut.threshold.value) == value, \
            f"threshold register reads {int(dut.threshold.value)} after writing {value}"
        self.ref.threshold = value
        await FallingEdge(dut.clk)

    def next_x(self, prev):
        """Random inputs that hit the interesting cases: full range, small steps, no change,
        exactly at / one below the threshold, and the format's corners."""
        f, n, rng = self.fmt, self.n, self.rng
        kind = rng.choice(["uniform", "walk", "same", "boundary"], p=[0.3, 0.3, 0.1, 0.3])
        if kind == "uniform":
            x = rng.integers(f.min_raw, f.max_raw + 1, size=n)
        elif kind == "walk":
            step = max(1, (f.max_raw - f.min_raw) // 32)
            x = prev + rng.integers(-step, step + 1, size=n)
        elif kind == "same":
            x = prev.copy()
        else:
            t = self.ref.threshold
            off = rng.choice([t, t - 1, t + 1, 1], size=n) * rng.choice([-1, 1], size=n)
            x = self.ref.x_hat + off
        corner = rng.random(n) < 0.1
        x[corner] = rng.choice([f.min_raw, f.max_raw, 0], size=int(corner.sum()))
        return np.clip(x, f.min_raw, f.max_raw).astype(np.int64)

    async def load(self, x, *, clear: bool, full: bool, label: str):
        """One ``load``: drive, then collect the stream until it is empty, compare."""
        dut = self.dut
        self.sink.clear()
        dut.x.value = self.x_fields.pack(tuple(int(v) for v in x))
        dut.load.value = 1
        dut.clear.value = int(clear)
        dut.full.value = int(full)
        want_n, want = self.ref.load(x, clear=clear, full=full)
        await FallingEdge(dut.clk)  # the load edge has passed
        dut.load.value = 0
        dut.clear.value = 0
        dut.full.value = 0
        await ReadOnly()
        where = f"{label}, load {self.loads} (clear={clear}, full={full}, " \
                f"threshold={self.ref.threshold}, x={x.tolist()})"
        assert int(dut.events.value) == want_n, \
            f"{where}: events port {int(dut.events.value)}, reference {want_n}"
        # latency 1: valid right in the cycle after the load edge when anything is pending
        assert int(dut.o__valid.value) == int(bool(want)), \
            f"{where}: o.valid={int(dut.o__valid.value)} one cycle after load, want {want}"
        valid_cycles = 0
        while int(dut.o__valid.value):
            valid_cycles += 1
            await FallingEdge(dut.clk)
            await ReadOnly()
        got = self.sink.items
        np.testing.assert_array_equal(np.array(got, dtype=np.int64).reshape(-1, 2),
                                      np.array(want, dtype=np.int64).reshape(-1, 2),
                                      err_msg=f"{where}: emitted events (index, delta)")
        if self.sink.ready_prob >= 1.0:  # one event per cycle without backpressure
            assert valid_cycles == len(want), \
                f"{where}: {len(want)} events took {valid_cycles} cycles with ready always high"
        self.loads += 1

    async def segment(self, label: str, loads: int, ready_prob: float):
        dut, rng = self.dut, self.rng
        self.sink.ready_prob = ready_prob
        x = np.zeros(self.n, dtype=np.int64)
        for t in range(loads):
            await FallingEdge(dut.clk)
            for _ in range(int(rng.integers(0, 3))):  # idle cycles between loads
                await FallingEdge(dut.clk)
            if t and rng.random() < 0.05:  # episode reset without a load in the same cycle
                dut.clear.value = 1
                self.ref.clear()
                await FallingEdge(dut.clk)
                dut.clear.value = 0
            first = t == 0 or rng.random() < 0.08
            full = first or rng.random() < 0.03
            x = self.next_x(x)
            await self.load(x, clear=first, full=full, label=label)


@cocotb.test()
async def encoder_reset_state(dut):
    """After reset: threshold register at its (clamped) reset value, no events, nothing valid;
    the threshold register reads back what is written."""
    design, seed, mutate = _params()
    tb = EncoderTB(dut, design, seed, mutate)
    await tb.reset()
    fmt = tb.fmt
    want = min(int(design["threshold_config_raw"]), 1 << fmt.width)  # 2**w = "never fires"
    assert design["threshold_reset"] == want
    await ReadOnly()
    assert int(dut.threshold.value) == want
    assert int(dut.events.value) == 0
    assert int(dut.o__valid.value) == 0
    await FallingEdge(dut.clk)
    for v in (0, 1, (1 << int(design["thr_data_width"])) - 1, want):
        await tb.write_threshold(v)


@cocotb.test()
async def encoder_events(dut):
    """Many loads of random inputs per threshold (reset value, 0, 1, typical, huge), each with
    ``o`` always ready and with random backpressure; events and counts bit-exact."""
    design, seed, mutate = _params()
    tb = EncoderTB(dut, design, seed, mutate)
    await tb.reset()
    w = tb.fmt.width
    typical = int(tb.rng.integers(2, max(3, 1 << (w - 2))))
    huge = (1 << int(design["thr_data_width"])) - 1
    phases = [("reset", None), ("zero", 0), ("one", 1), ("typical", typical), ("huge", huge)]
    for name, thr in phases:
        if thr is not None:
            await FallingEdge(dut.clk)
            await tb.write_threshold(thr)
        for ready_prob in (1.0, 0.35):
            await tb.segment(f"threshold {name}, ready_prob {ready_prob}", 50, ready_prob)
    dut._log.info("encoder: %d loads bit-exact, %d thresholds", tb.loads, len(phases))


# ==== SparseMAC + DeltaAccumulator ==============================================================

class RefMac:
    """``M[l] += W[l][:, j] * d`` (wrapping), ``macs[l] += nnz(W[l][:, j])``."""

    def __init__(self, design: dict, mutate: str = ""):
        self.layers = design["layers"]
        self.lanes = int(design["lanes"])
        self.w = [np.array(ly["weights"], dtype=np.int64).reshape(ly["n_out"], ly["n_in"])
                  for ly in self.layers]
        self.bias = [np.array(ly["bias"], dtype=np.int64) for ly in self.layers]
        self.acc_bits = [int(ly["acc_bits"]) for ly in self.layers]
        L = self.lanes
        # issue cycles per column: the longest lane slice (at least one cycle per event)
        self.maxlen = [np.array([max(np.count_nonzero(w[k::L, j]) for k in range(L))
                                 for j in range(w.shape[1])], dtype=np.int64) for w in self.w]
        self.nnz = [np.count_nonzero(w, axis=0).astype(np.int64) for w in self.w]
        if mutate == "mac_weight":  # corrupt the reference, not the design
            ws = self.w[0]
            r, j = np.argwhere(ws != 0)[0]
            ws[r, j] += 1 if ws[r, j] < 0 else -1
        self.wraps = 0  # row updates that wrapped (the test data should exercise some)
        self.clear()

    def clear(self):
        self.m = [b.copy() for b in self.bias]
        self.macs = np.zeros(len(self.w), dtype=np.int64)

    def event(self, layer: int, j: int, d: int):
        full = self.m[layer] + self.w[layer][:, j] * d
        self.m[layer] = wrap_bits(full, self.acc_bits[layer])
        self.wraps += int(np.count_nonzero(self.m[layer] != full))
        self.macs[layer] += self.nnz[layer][j]


class MacTB:
    def __init__(self, dut, design: dict, seed: int, mutate: str):
        self.dut = dut
        self.d = design
        self.rng = np.random.default_rng(seed)
        self.ref = RefMac(design, mutate)
        self.fields = Fields(design["i_fields"])
        self.source = StreamSource(dut, "i", self.fields, dut.clk, seed=seed + 2)
        self.n_layers = len(design["layers"])
        self.macs_fields = Fields([(f"m{i}", int(design["macs_width"]), False)
                                   for i in range(self.n_layers)])
        self.pre_fields = [Fields([(f"r{r}", ly["acc_bits"], True) for r in range(ly["n_out"])])
                           for ly in design["layers"]]
        self.batches = 0

    async def reset(self):
        await _reset(self.dut, {"i__valid": 0, "i__payload": 0, "layer": 0, "clear": 0})
        self.source.start()

    def read_state(self):
        dut = self.dut
        pre = [np.array(f.unpack(getattr(dut, f"pre_{i}").value), dtype=np.int64)
               for i, f in enumerate(self.pre_fields)]
        macs = np.array(self.macs_fields.unpack(dut.macs.value), dtype=np.int64)
        return pre, macs

    def check_state(self, where: str):
        pre, macs = self.read_state()
        for i in range(self.n_layers):
            np.testing.assert_array_equal(pre[i], self.ref.m[i],
                                          err_msg=f"{where}: accumulator rows of layer {i}")
        np.testing.assert_array_equal(macs, self.ref.macs, err_msg=f"{where}: macs counters")

    async def clear(self):
        self.dut.clear.value = 1
        self.ref.clear()
        await FallingEdge(self.dut.clk)
        self.dut.clear.value = 0

    def random_events(self, layer: int):
        rng = self.rng
        ly = self.d["layers"][layer]
        n_in = ly["n_in"]
        dmax = (1 << ly["in_width"]) - 1  # |x - x_hat| of the layer's input format
        dwidth = {n: w for n, w, _ in self.fields.fields}["delta"]
        k = int(rng.integers(0, n_in + 3))
        idx = rng.integers(0, n_in, size=k)  # repeats and empty columns included
        if rng.random() < 0.5:
            idx = np.unique(idx)  # like the encoder: distinct, increasing
        d = rng.integers(-dmax, dmax + 1, size=k)
        small = rng.random(k) < 0.4
        d[small] = rng.integers(-4, 5, size=int(small.sum()))
        corner = rng.random(k) < 0.1
        d[corner] = rng.choice([-(1 << (dwidth - 1)), (1 << (dwidth - 1)) - 1, dmax, -dmax, 0],
                               size=int(corner.sum()))
        return [(int(j), int(v)) for j, v in zip(idx, d)]

    async def batch(self, layer: int, events, label: str):
        """Events of one layer through the source; wait for idle + drain; compare."""
        dut = self.dut
        dut.layer.value = layer
        self.source.transfers.clear()
        self.source.send(events)
        for j, v in events:
            self.ref.event(layer, j, v)
        await self.source.wait_idle()  # wakes in ReadOnly of the last transfer's cycle
        while True:  # idle cannot be high in that cycle (valid is), so start one later
            await FallingEdge(dut.clk)
            await ReadOnly()
            if int(dut.idle.value):
                break
        t_idle = get_sim_time("ns")
        where = f"{label}, batch {self.batches} (layer {layer}, {len(events)} events)"
        if self.source.idle_prob == 0 and events:
            # initiation interval: each event holds the issue stage max(1, maxlen) cycles
            times = [t for t, _ in self.source.transfers] + [t_idle]
            got = np.diff(np.rint(np.array(times) / CLOCK_NS).astype(np.int64))
            want = np.maximum(self.ref.maxlen[layer][[j for j, _ in events]], 1)
            np.testing.assert_array_equal(got, want, err_msg=f"{where}: cycles per event")
        for _ in range(int(self.d["drain_cycles"])):
            await FallingEdge(dut.clk)
        await ReadOnly()
        self.check_state(where)
        self.batches += 1
        await FallingEdge(dut.clk)

    async def segment(self, label: str, batches: int):
        rng = self.rng
        for _ in range(batches):
            if rng.random() < 0.15:
                await self.clear()
                await ReadOnly()
                self.check_state(f"{label}, after clear")
                await FallingEdge(self.dut.clk)
            layer = int(rng.integers(0, self.n_layers))
            await self.batch(layer, self.random_events(layer), label)


@cocotb.test()
async def mac_accumulate(dut):
    """Random event batches over every layer, without and with idle cycles on ``i``; the
    accumulator rows and ``macs`` counters bit-exact after each batch, and without idles the
    exact cycles each event takes."""
    design, seed, mutate = _params()
    tb = MacTB(dut, design, seed, mutate)
    await tb.reset()
    await ReadOnly()
    tb.check_state("after reset")
    assert int(dut.idle.value) == 1
    await FallingEdge(dut.clk)
    for idle_prob in (0.0, 0.3):
        tb.source.idle_prob = idle_prob
        await tb.segment(f"idle_prob {idle_prob}", 60)
    dut._log.info("mac: %d batches bit-exact, %d wrapped row updates", tb.batches, tb.ref.wraps)

"""The UART host link: the UART blocks (loopback, framing errors, latency), the framed protocol
(pure Python round trips) and the whole link end to end: frames sent bit by bit on the ``rx``
pin of :class:`hw.hostlink.HostLink`, responses decoded from its ``tx`` pin, every step
compared exactly with the reference (``sim.coreloop.CoreBench.ref_step``, ``sim.check``)."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from deltanet.hw.core import DeltaCore
from deltanet.hw.generate_core import design_fields
from deltanet.hw.hostlink import HostLink
from deltanet.hw.protocol import (
    RESPONSE,
    SYNC,
    Command,
    Frame,
    FrameDecoder,
    LinkError,
    LinkFormat,
    Status,
    checksum,
    decode_ack,
    decode_result,
    decode_status,
    encode_ack,
    encode_frame,
    encode_read,
    encode_result,
    encode_start,
    encode_status,
    encode_status_response,
    encode_write_obs,
    encode_write_threshold,
    model_id,
    pack_words,
)
from deltanet.hw.uart import UartRx, UartTx, uart_divisor
from deltanet.pysim import load_model
from deltanet.sim.check import compare
from deltanet.sim.coreloop import CoreBench
from deltanet.sim.driver import CoreDesign

from deltanet import bundled_model

ROOT = Path(__file__).resolve().parents[1]
# the cores built only for their design fields are never elaborated (see design_of)
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(scope="module")
def cartpole():
    return load_model(bundled_model("cartpole"))


def simulate(dut, bench, *background):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    for b in background:
        sim.add_testbench(b, background=True)
    sim.run()


async def send_bits(ctx, pin, data: bytes, divisor: int, *, stop: int = 1) -> None:
    """Bit-bang 8N1 bytes on ``pin`` (``stop``: the stop bit's level)."""
    for b in data:
        for bit in [0, *((b >> k) & 1 for k in range(8)), stop]:
            ctx.set(pin, bit)
            await ctx.tick().repeat(divisor)
    ctx.set(pin, 1)


def receive_bits(pin, divisor: int, into: list):
    """A background testbench: the 8N1 bytes seen on ``pin``, sampled in their middle."""
    async def monitor(ctx):
        while True:
            await ctx.negedge(pin)  # (a plain trigger: the monitor can end waiting in it)
            await ctx.tick().repeat(divisor // 2)
            assert ctx.get(pin) == 0, "start bit too short"
            b = 0
            for k in range(8):
                await ctx.tick().repeat(divisor)
                b |= ctx.get(pin) << k
            await ctx.tick().repeat(divisor)
            assert ctx.get(pin) == 1, "no stop bit"
            into.append(b)
    return monitor


# ---- UART ------------------------------------------------------------------------------------
@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_uart_loopback_random_bytes_back_to_back(divisor):
    rng = np.random.default_rng(divisor)
    data = [int(v) for v in rng.integers(0, 256, size=24)] + [0x00, 0xFF, 0x55, 0xAA]
    m = Module()
    tx = m.submodules.tx = UartTx(divisor=divisor)
    rx = m.submodules.rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, accepted, errors = [], [], []

    async def sender(ctx):
        ctx.set(rx.o.ready, 1)
        n = 0
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            while True:
                n += 1
                _, _, ready = await ctx.tick().sample(tx.i.ready)
                if ready:
                    accepted.append(n)
                    break
        ctx.set(tx.i.valid, 0)
        for _ in range(12 * divisor):
            await ctx.tick()

    async def sink(ctx):
        async for _, _, valid, payload, error in ctx.tick().sample(rx.o.valid, rx.o.payload,
                                                                   rx.error):
            if valid:
                got.append(int(payload))
            if error:
                errors.append(1)

    simulate(m, sender, sink)
    assert got == data
    assert not errors
    # one byte per 10 bit times, back to back
    assert np.diff(accepted).tolist() == [10 * divisor] * (len(data) - 1)


@pytest.mark.parametrize("divisor", [4, 9])
def test_uart_rx_latency_framing_error_and_glitch(divisor):
    dut = UartRx(divisor=divisor)
    seen, latency = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        # latency: from the first edge that samples the start bit to o.valid
        ctx.set(dut.rx, 0)
        edges = 0
        for bit in [(0x5A >> k) & 1 for k in range(8)] + [1]:
            for _ in range(divisor):
                await ctx.tick()
                edges += 1
                if ctx.get(dut.o.valid):
                    latency.append((ctx.get(dut.o.payload), edges))
            ctx.set(dut.rx, bit)
        for _ in range(2 * divisor):
            await ctx.tick()
            edges += 1
            if ctx.get(dut.o.valid):
                latency.append((ctx.get(dut.o.payload), edges))
        # a framing error (stop bit 0, then a long low line), a glitch, a good byte
        await send_bits(ctx, dut.rx, b"\x33", divisor, stop=0)
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(3 * divisor)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        ctx.set(dut.rx, 0)
        await ctx.tick()
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(12 * divisor)
        await send_bits(ctx, dut.rx, b"\xc4", divisor)
        await ctx.tick().repeat(2 * divisor)

    async def sink(ctx):
        async for _, _, valid, payload, error in ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                   dut.error):
            if valid:
                seen.append(("valid", int(payload)))
            if error:
                seen.append(("error",))

    simulate(dut, bench, sink)
    # edge 1 samples the start bit; o.valid after the edge divisor // 2 + 9 * divisor + 2 later
    assert latency[0] == (0x5A, 1 + divisor // 2 + 9 * divisor + 2)
    # ready is high: o.valid for one cycle per byte; one error pulse, the glitch ignored
    assert seen == [("valid", 0x5A), ("error",), ("valid", 0xC4)]


def test_uart_parameters_are_checked(cartpole):
    with pytest.raises(ValueError, match="UartRx: divisor must be in >= 4, got 3"):
        UartRx(divisor=3)
    with pytest.raises(TypeError, match="UartTx: divisor must be an integer"):
        UartTx(divisor=4.5)
    with pytest.raises(ValueError, match="HostLink: divisor must be in >= 4"):
        HostLink(cartpole, lanes=2, divisor=2)
    assert uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="off"):
        uart_divisor(1e6, 220000)
    with pytest.raises(ValueError, match="at least"):
        uart_divisor(1e6, 500000)


# ---- protocol (pure Python) ------------------------------------------------------------------
def design_of(model, lanes: int, obs_words: int) -> CoreDesign:
    core = DeltaCore(model, lanes=lanes, obs_words=obs_words)
    design = CoreDesign.from_json(design_fields(core))
    del core
    gc.collect()  # the core is never elaborated: its UnusedElaboratable comes here, filtered
    return design


def test_protocol_imports_no_amaranth():
    tree = ast.parse((ROOT / "hw" / "protocol.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {("." * n.level + (n.module or "")).split(".")[0] if not n.level
              else "." * n.level + (n.module or "") for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "enum", "collections", "dataclasses", "numpy",
                     "..pysim.artifact", "..pysim.coreplan"}, names


def test_frames_round_trip_byte_by_byte_and_reject_bad_checksums():
    rng = np.random.default_rng(5)
    frames = [(int(rng.integers(0, 256)), bytes(rng.integers(0, 256, size=n).tolist()))
              for n in (0, 1, 7, 255, 3)]
    stream = b"\x00\x13" + b"".join(encode_frame(c, p) for c, p in frames)
    for f in (encode_frame(c, p) for c, p in frames):
        assert f[0] == SYNC and sum(f[1:]) % 256 == 0
    dec = FrameDecoder()
    got = []
    for b in stream:
        got += dec.feed(bytes([b]))
    assert got == [Frame(c, p, True) for c, p in frames]
    assert dec.skipped == 2
    # in one piece; a corrupted payload byte and a corrupted checksum are flagged
    bad = bytearray(encode_frame(0x42, b"\x01\x02\x03"))
    bad[4] ^= 0x10
    bad2 = bytearray(encode_frame(0x42, b""))
    bad2[-1] ^= 1
    got = FrameDecoder().feed(bytes(bad) + bytes(bad2) + encode_frame(0x42, b"\x09"))
    assert [f.ok for f in got] == [False, False, True]
    assert got[2].payload == b"\x09"
    assert checksum(0x42, b"\x09") == (-(0x42 + 1 + 9)) & 0xFF


@pytest.mark.parametrize("lanes,obs_words", [(2, 2), (3, 3), (4, 1)])
def test_requests_and_responses_round_trip(cartpole, lanes, obs_words):
    d = design_of(cartpole, lanes, obs_words)
    fmt = LinkFormat.from_design(d)
    assert fmt == LinkFormat.from_design(d.to_dict())
    rng = np.random.default_rng(lanes)
    # the words are CoreDesign.words'
    for _ in range(20):
        x = rng.integers(-(1 << 15), 1 << 15, size=d.n_in)
        assert fmt.words(x) == d.words(x)
        assert pack_words(x, d.n_in, d.obs_words, d.in_width) == d.words(x)
    # a write carries flags, addr, word little-endian
    word = fmt.words(rng.integers(-100, 100, size=d.n_in))[0]
    f = FrameDecoder().feed(encode_write_obs(fmt, fmt.obs_depth - 1, word, first=True))[0]
    assert f.command == Command.WRITE_OBS and len(f.payload) == fmt.write_obs_len
    assert f.payload[0] == 1
    assert int.from_bytes(f.payload[1:1 + fmt.addr_bytes], "little") == fmt.obs_depth - 1
    assert int.from_bytes(f.payload[1 + fmt.addr_bytes:], "little") == word
    with pytest.raises(ValueError, match="addr must be"):
        encode_write_obs(fmt, fmt.obs_depth, 0, first=False)
    f = FrameDecoder().feed(encode_write_threshold(fmt, 2, 1 << 40))[0]
    assert f.payload == bytes([2]) + b"\xff" * fmt.thr_bytes
    # results: signed outputs, counters
    for _ in range(10):
        out = rng.integers(-(1 << 15), 1 << 15, size=d.n_out)
        cnt = rng.integers(0, 1 << 32, size=1 + 2 * d.n_layers, dtype=np.int64).tolist()
        for cmd in (Command.START, Command.READ):
            f = FrameDecoder().feed(encode_result(fmt, cmd, out, cnt[0], cnt[1:4], cnt[4:]))[0]
            r = decode_result(fmt, f, cmd)
            np.testing.assert_array_equal(r["out"], out)
            assert [r["cycles"], *r["events"], *r["macs"]] == cnt
    # status: the host rebuilds the format from it
    f = FrameDecoder().feed(encode_status_response(fmt, model_id(cartpole)))[0]
    st = decode_status(f)
    assert LinkFormat.from_design(st) == fmt
    assert st["model_id"] == model_id(cartpole) and st["version"] == 1
    # error responses raise, with their status
    f = FrameDecoder().feed(encode_ack(Command.WRITE_OBS, Status.BAD_CHECKSUM))[0]
    with pytest.raises(LinkError, match="BAD_CHECKSUM") as e:
        decode_ack(f, Command.WRITE_OBS)
    assert e.value.status == Status.BAD_CHECKSUM
    with pytest.raises(LinkError, match="expected a response to START"):
        decode_result(fmt, FrameDecoder().feed(encode_ack(Command.READ))[0])


def test_link_format_rejects_what_a_frame_cannot_hold():
    base = dict(n_layers=3, n_in=4, n_out=2, in_width=16, out_width=16, obs_words=2, lanes=2,
                thr_width=17)
    LinkFormat(**base)
    with pytest.raises(ValueError, match="write_obs payload takes 258 bytes"):
        LinkFormat(**{**base, "n_in": 256, "obs_words": 128})
    with pytest.raises(ValueError, match="result payload"):
        LinkFormat(**{**base, "n_layers": 40})
    with pytest.raises(ValueError, match="lanes = 300"):
        LinkFormat(**{**base, "lanes": 300})
    with pytest.raises(ValueError, match="n_in must be a positive integer"):
        LinkFormat(**{**base, "n_in": 0})


# ---- the link, end to end --------------------------------------------------------------------
def ack_latency(divisor: int) -> int:
    """Edges from the end of a request (``send_bits`` returns 10 * divisor - 1 edges after the
    first edge of its checksum byte) to the start bit of an ACK/STATUS/READ response: the
    receiver delivers the byte divisor // 2 + 9 * divisor + 2 edges after that first edge
    (UartRx), the response starts 3 edges later (HostLink)."""
    return divisor // 2 + 9 * divisor + 2 + 3 - (10 * divisor - 1)


class Host:
    """The host side over the pins of a simulated HostLink: requests out, responses in."""

    def __init__(self, ctx, dut: HostLink, received: list):
        self.ctx, self.dut, self.received = ctx, dut, received
        self.decoder = FrameDecoder()
        self.fmt = dut.fmt

    async def request(self, frame: bytes, *, timed: bool = True) -> Frame:
        """Send ``frame``, return the response; ``self.latency`` (``timed``): edges from the
        end of the request's stop bit to the response's start bit."""
        await send_bits(self.ctx, self.dut.rx, frame, self.dut.divisor)
        self.latency = 0
        while timed and self.ctx.get(self.dut.tx):
            await self.ctx.tick()
            self.latency += 1
        frames = []
        for _ in range(20_000):
            if self.received:
                frames += self.decoder.feed(bytes(self.received))
                self.received.clear()
                if frames:
                    break
            await self.ctx.tick().repeat(self.dut.divisor)
        assert len(frames) == 1, frames
        return frames[0]

    async def step(self, x_raw, first: bool, held) -> tuple:
        """Write the words that changed since ``held`` (all when ``held`` is None), start;
        returns the decoded result and the words now held."""
        words = self.fmt.words(x_raw)
        for a, w in enumerate(words):
            if held is None or w != held[a]:
                decode_ack(await self.request(encode_write_obs(self.fmt, a, w, first=first)),
                           Command.WRITE_OBS)
                assert self.latency == ack_latency(self.dut.divisor) + 1
        r = decode_result(self.fmt, await self.request(encode_start(first=first)))
        # START: the start edge is 3 edges after the checksum byte's, done rises `cycles`
        # edges later, the response starts 2 edges after that
        assert self.latency == ack_latency(self.dut.divisor) + r["cycles"] + 1
        return r, words


@pytest.mark.parametrize("lanes,obs_words", [(2, 2), (3, 3)])
def test_hostlink_end_to_end_bit_exact(cartpole, lanes, obs_words):
    divisor = 4
    dut = HostLink(cartpole, lanes=lanes, obs_words=obs_words, divisor=divisor)
    bench = CoreBench(design_fields(dut.core), cartpole)
    fmt = dut.fmt
    n_layers = fmt.n_layers
    base_thr = [cartpole.config.threshold_raw(i) for i in range(n_layers)]
    rng = np.random.default_rng(12)  # a walk of CartPole-sized observations whose action
    # changes on the way (checked below)
    steps, episode_starts = 8, (0, 5)
    # threshold writes before a step: layer 1 halved; layer 0 off (saturated: never fires)
    # then restored; each makes the next step examine every neuron
    thr_writes = {2: [(1, base_thr[1] // 2)], 4: [(0, 1 << 20)], 6: [(0, base_thr[0])]}
    received: list = []
    log = []

    async def host(ctx):
        h = Host(ctx, dut, received)
        st = decode_status(await h.request(encode_status()))
        assert h.latency == ack_latency(divisor)
        assert LinkFormat.from_design(st) == fmt
        assert st["model_id"] == model_id(cartpole)
        # bad frames get an error response and change nothing
        bad = bytearray(encode_write_obs(fmt, 0, 0x1234, first=True))
        bad[-1] ^= 0xFF
        f = await h.request(bytes(bad))
        assert (f.command, f.payload) == (Command.WRITE_OBS | RESPONSE,
                                          bytes([Status.BAD_CHECKSUM]))
        f = await h.request(encode_frame(0x33, b"\x01"))
        assert (f.command, f.payload) == (0x33 | RESPONSE, bytes([Status.UNKNOWN_COMMAND]))
        f = await h.request(encode_frame(Command.STATUS, b"\x00"))
        assert f.payload == bytes([Status.BAD_LENGTH])
        f = await h.request(encode_frame(Command.WRITE_THR,
                                         bytes([n_layers]) + b"\x00" * fmt.thr_bytes))
        assert f.payload == bytes([Status.BAD_ARGUMENT])
        if lanes == 2:  # a frame cut short (a lost byte): 258 zero bytes resynchronize
            f = await h.request(bytes([SYNC, Command.WRITE_OBS, 255, 7, 7]) + bytes(258),
                                timed=False)
            assert f.command == Command.WRITE_OBS | RESPONSE
            assert f.status in (Status.BAD_CHECKSUM, Status.BAD_LENGTH)
        assert decode_status(await h.request(encode_status())) == st

        held = None
        x = rng.normal(size=fmt.n_in) * 0.1
        for t in range(steps):
            first = t in episode_starts
            rescan = t in thr_writes
            for layer, raw in thr_writes.get(t, []):
                decode_ack(await h.request(encode_write_threshold(fmt, layer, raw)),
                           Command.WRITE_THR)
                bench.ref.set_threshold_raw(layer, raw)
                if layer == 0:
                    held = None  # every word in the next step
            if first:
                bench.ref.reset()
                held = None
            x = x + 0.1 * rng.normal(size=fmt.n_in)
            x_raw = bench.ref.quantize_obs(x[None])[0]
            hw, held = await h.step(x_raw, first, held)
            ref, _ = bench.ref_step(x_raw, first, rescan)
            hw["action"] = bench.decode(hw["out"])
            log.append((t, hw, ref))
        # a write out of order is refused (word 0 after the last word, same step)
        decode_ack(await h.request(encode_write_obs(fmt, fmt.obs_depth - 1, held[-1],
                                                    first=False)), Command.WRITE_OBS)
        f = await h.request(encode_write_obs(fmt, 0, held[0], first=False))
        assert f.payload == bytes([Status.BAD_ARGUMENT])
        # READ returns the last step's result again
        again = decode_result(fmt, await h.request(encode_read()), Command.READ)
        log.append(("read", again, log[-1][1]))

    simulate(dut, host, receive_bits(dut.tx, divisor, received))
    assert len(log) == steps + 1
    for t, hw, ref in log[:-1]:
        np.testing.assert_array_equal(hw["out"], ref["out"], err_msg=f"step {t} outputs")
        assert compare(t, hw, ref) == [], f"step {t}"
    _, again, last = log[-1]
    np.testing.assert_array_equal(again["out"], last["out"])
    assert (again["cycles"], again["events"], again["macs"]) == \
        (last["cycles"], last["events"], last["macs"])
    # the work moved: the steps were not all empty, and the outputs changed
    assert sum(sum(ref["macs"]) for _, _, ref in log[1:-1]) > 0
    assert len({tuple(ref["out"]) for _, _, ref in log[:-1]}) > 2

"""HostLink: the event-driven core behind a UART, driven by the framed host protocol.

The frames, commands and field widths are :mod:`hw.protocol`'s (its module docstring has the
table); the core's port contract is :mod:`hw.core`'s; the step sequence on the core's ports is
that of ``sim.driver.StepDriver``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int
from .core import DeltaCore
from .generate_core import design_fields
from .protocol import (
    COUNTER_BYTES,
    FIRST,
    RESPONSE,
    STATUS_LEN,
    SYNC,
    Command,
    LinkFormat,
    Status,
    model_id,
    status_payload,
)
from .uart import MIN_DIVISOR, UartRx, UartTx

__all__ = ["HostLink"]

# what the response being sent carries
_ACK, _RESULT, _STATUS = 0, 1, 2


def _zext(value, nbytes: int):
    """``value`` zero-extended to ``nbytes`` bytes."""
    pad = 8 * nbytes - len(value)
    if pad < 0:
        raise ValueError(f"HostLink: a {len(value)}-bit port does not fit {nbytes} bytes")
    return Cat(value, Const(0, pad)) if pad else value


class HostLink(wiring.Component):
    """:class:`hw.core.DeltaCore` of ``model`` (``lanes``, ``obs_words`` as there) behind a
    UART at ``divisor`` clock cycles per bit, speaking :mod:`hw.protocol`.
    ``HostLink(model, lanes=2, obs_words=2, divisor=uart_divisor(clk_hz, 115200))``.

    Ports: ``rx``: In(1, init=1) the UART's receive pin (from the host); ``tx``: Out(1, init=1)
    its transmit pin (to the host). Plus ``clk`` and ``rst``.

    Every request gets one response. A frame whose checksum fails gets ``BAD_CHECKSUM``, an
    unknown command ``UNKNOWN_COMMAND``, a payload of the wrong length ``BAD_LENGTH``, an
    observation address out of range or not above the step's previous one, or a layer out of
    range, ``BAD_ARGUMENT``; none of them touches the core. A framing error (a bad stop bit)
    abandons the frame being received without a response (the host times out and resends).

    On the core's ports the commands follow ``sim.driver.StepDriver``: WRITE_OBS puts the word
    on ``obs`` until it is taken (the core is idle); ``first`` is raised by the first frame of
    a step with the FIRST flag and held until the step starts; START raises ``start`` until an
    edge samples it with ``ready``, then waits for ``done``, then sends the result; READ sends
    the result ports as they are (the last step's); WRITE_THR pulses ``thr_we`` (the value
    saturated to the register's range); STATUS sends constants (:func:`hw.protocol.
    status_payload`).

    Latency: the response's start bit begins after the 3rd clock edge after the one at which
    the receiver delivers the request's checksum byte (WRITE_OBS: the 4th; START: the 2nd
    after the edge that raises ``done``, the ``cycles``-th edge counting the start edge as the
    1st, and the start edge is the 3rd after the checksum byte's). The receiver delivers a
    byte in the middle of its stop bit (:class:`hw.uart.UartRx`). Throughput: one request at
    a time; the host sends the next one after the response (the receiver holds one byte, the
    link has no other buffer).
    """

    def __init__(self, model, *, lanes=4, obs_words=None, divisor):
        self._divisor = check_int("HostLink", "divisor", divisor, MIN_DIVISOR)
        self._core = DeltaCore(model, lanes=lanes, obs_words=obs_words)
        self._fmt = LinkFormat.from_design(design_fields(self._core))
        self._model_id = model_id(model)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def core(self) -> DeltaCore:
        return self._core

    @property
    def fmt(self) -> LinkFormat:
        """The frames' field widths (what the host builds from the STATUS response)."""
        return self._fmt

    @property
    def model_id(self) -> int:
        return self._model_id

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        fmt, core = self._fmt, self._core
        N = fmt.n_layers
        m.submodules.core = core
        urx = m.submodules.uart_rx = UartRx(divisor=self._divisor)
        utx = m.submodules.uart_tx = UartTx(divisor=self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        # ---- request: the payload shifts in from the top, so a payload of the expected
        # length L ends at the top and its fields sit at constant bits
        lens = {c: fmt.request_len(c) for c in Command}
        maxlen = max(lens.values())
        buf = Signal(8 * maxlen)
        cmd, length, left, rsum = Signal(8), Signal(8), Signal(8), Signal(8)
        byte_in = urx.o.payload

        def field(command, offset: int, nbytes: int):
            lo = 8 * (maxlen - lens[command] + offset)
            return buf[lo:lo + 8 * nbytes]

        flags = field(Command.WRITE_OBS, 0, 1)
        addr = field(Command.WRITE_OBS, 1, fmt.addr_bytes)
        word = field(Command.WRITE_OBS, 1 + fmt.addr_bytes, fmt.data_bytes)
        start_flags = field(Command.START, 0, 1)
        layer = field(Command.WRITE_THR, 0, 1)
        raw = field(Command.WRITE_THR, 1, fmt.thr_bytes)

        # ---- step state
        first = Signal()  # the core's first input: raised by a FIRST frame until the start
        wrote = Signal()  # the step has written a word (at last_addr)
        last_addr = Signal.like(addr)
        aw = len(core.obs.payload.addr)
        m.d.comb += [
            core.first.eq(first),
            core.obs.payload.addr.eq(addr[:aw]),
            core.obs.payload.data.as_value().eq(word),
            core.thr_sel.eq(layer),
        ]
        tw = fmt.thr_width
        if len(raw) > tw:  # codes above the register's range: its largest value (never fires)
            m.d.comb += core.thr_data.eq(Mux(raw[tw:].any(), (1 << tw) - 1, raw[:tw]))
        else:
            m.d.comb += core.thr_data.eq(raw)

        # ---- response: SYNC, command, len, payload (status first), checksum
        kind = Signal(range(3))
        status = Signal(8)
        resp_cmd = Signal(8)
        resp_len = Signal(8)
        pmax = max(1, fmt.result_len, STATUS_LEN)
        payload = Signal(8 * pmax)
        result = Cat(Const(Status.OK, 8), _zext(core.out, fmt.out_bytes),
                     _zext(core.cycles, COUNTER_BYTES),
                     *(_zext(getattr(core, f"events_{i}"), COUNTER_BYTES) for i in range(N)),
                     *(_zext(getattr(core, f"macs_{i}"), COUNTER_BYTES) for i in range(N)))
        constants = int.from_bytes(status_payload(fmt, self._model_id), "little")
        with m.Switch(kind):
            with m.Case(_ACK):
                m.d.comb += [payload.eq(status), resp_len.eq(1)]
            with m.Case(_RESULT):
                m.d.comb += [payload.eq(result), resp_len.eq(fmt.result_len)]
            with m.Case(_STATUS):
                m.d.comb += [payload.eq(Const(constants, 8 * STATUS_LEN)),
                             resp_len.eq(STATUS_LEN)]
        idx = Signal(range(pmax + 4))  # the response byte being sent
        pidx = Signal(range(pmax + 4))
        tsum = Signal(8)
        byte_out = Signal(8)
        m.d.comb += pidx.eq(idx - 3)
        with m.If(idx == 0):
            m.d.comb += byte_out.eq(SYNC)
        with m.Elif(idx == 1):
            m.d.comb += byte_out.eq(resp_cmd)
        with m.Elif(idx == 2):
            m.d.comb += byte_out.eq(resp_len)
        with m.Elif(idx == resp_len + 3):
            m.d.comb += byte_out.eq(-tsum)
        with m.Else():
            m.d.comb += byte_out.eq(payload.word_select(pidx, 8))
        m.d.comb += utx.i.payload.eq(byte_out)

        known = Signal()  # cmd is a command
        expect = Signal(8)  # its payload length
        with m.Switch(cmd):
            for c in Command:
                with m.Case(c):
                    m.d.comb += [known.eq(1), expect.eq(lens[c])]

        def respond(code=None, what=_ACK):
            if code is not None:
                m.d.sync += status.eq(code)
            m.d.sync += kind.eq(what)
            m.next = "SEND"

        with m.FSM():
            # ---- receiving a frame (a framing error abandons it)
            with m.State("SYNC"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(urx.o.valid & (byte_in == SYNC)):
                    m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(urx.o.valid):
                    m.d.sync += [cmd.eq(byte_in), rsum.eq(byte_in)]
                    m.next = "LEN"
                with m.If(urx.error):
                    m.next = "SYNC"
            with m.State("LEN"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(urx.o.valid):
                    m.d.sync += [length.eq(byte_in), left.eq(byte_in), rsum.eq(rsum + byte_in)]
                    m.next = "PAYLOAD"
                    with m.If(byte_in == 0):
                        m.next = "CHECK"
                with m.If(urx.error):
                    m.next = "SYNC"
            with m.State("PAYLOAD"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(urx.o.valid):
                    m.d.sync += [buf.eq(Cat(buf[8:], byte_in)), left.eq(left - 1),
                                 rsum.eq(rsum + byte_in)]
                    with m.If(left == 1):
                        m.next = "CHECK"
                with m.If(urx.error):
                    m.next = "SYNC"
            with m.State("CHECK"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(urx.o.valid):
                    m.d.sync += rsum.eq(rsum + byte_in)
                    m.next = "EXEC"
                with m.If(urx.error):
                    m.next = "SYNC"

            # ---- one cycle: check the frame, then act (an error changes nothing)
            with m.State("EXEC"):
                m.d.sync += [resp_cmd.eq(cmd | RESPONSE), status.eq(Status.OK)]
                with m.If(rsum != 0):
                    respond(Status.BAD_CHECKSUM)
                with m.Elif(~known):
                    respond(Status.UNKNOWN_COMMAND)
                with m.Elif(length != expect):
                    respond(Status.BAD_LENGTH)
                with m.Elif(cmd == Command.WRITE_OBS):
                    with m.If((addr >= fmt.obs_depth) | (wrote & (addr <= last_addr))):
                        respond(Status.BAD_ARGUMENT)
                    with m.Else():
                        m.d.sync += [wrote.eq(1), last_addr.eq(addr)]
                        with m.If(flags & FIRST):
                            m.d.sync += first.eq(1)
                        m.next = "WRITE"
                with m.Elif(cmd == Command.START):
                    with m.If(start_flags & FIRST):
                        m.d.sync += first.eq(1)
                    m.next = "START"
                with m.Elif(cmd == Command.READ):
                    respond(what=_RESULT)
                with m.Elif(cmd == Command.WRITE_THR):
                    with m.If(layer >= N):
                        respond(Status.BAD_ARGUMENT)
                    with m.Else():
                        m.d.comb += core.thr_we.eq(1)  # the core is idle: taken at this edge
                        respond()
                with m.Else():
                    respond(what=_STATUS)

            # ---- the core's ports, as StepDriver drives them
            with m.State("WRITE"):
                m.d.comb += core.obs.valid.eq(1)
                with m.If(core.obs.ready):
                    respond()
            with m.State("START"):
                m.d.comb += core.start.eq(1)
                with m.If(core.ready):  # this edge samples start
                    m.d.sync += [first.eq(0), wrote.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(core.done):
                    respond(what=_RESULT)

            # ---- the response, one byte per UART frame
            with m.State("SEND"):
                m.d.comb += utx.i.valid.eq(1)
                with m.If(utx.i.ready):
                    m.d.sync += [idx.eq(idx + 1), tsum.eq(Mux(idx == 0, 0, tsum + byte_out))]
                    with m.If(idx == resp_len + 3):
                        m.d.sync += idx.eq(0)
                        m.next = "SYNC"
        return m

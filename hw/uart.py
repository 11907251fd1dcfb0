"""UART receiver and transmitter (8N1: one start bit, 8 data bits LSB first, one stop bit).

Both take ``divisor`` = clock cycles per bit (``uart_divisor(clk_hz, baud)`` picks it). The
host link (:class:`hw.hostlink.HostLink`) puts its framed protocol on top of them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx", "uart_divisor"]

#: the smallest divisor: the receiver samples each bit in its middle, ``divisor // 2`` cycles
#: after it saw the start bit's edge, behind a 2-flop synchronizer
MIN_DIVISOR = 4


def uart_divisor(clk_hz: float, baud: float, *, tolerance: float = 0.02) -> int:
    """The divisor of ``baud`` at ``clk_hz``; raises if the bit rate would be off by more
    than ``tolerance`` (relative) or the divisor is below :data:`MIN_DIVISOR`."""
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"uart_divisor: clk_hz and baud must be > 0, got {clk_hz}, {baud}")
    d = round(clk_hz / baud)
    if d < MIN_DIVISOR:
        raise ValueError(f"uart_divisor: {baud} baud needs a clock of at least "
                         f"{MIN_DIVISOR * baud} Hz, got {clk_hz}")
    err = abs(clk_hz / d - baud) / baud
    if err > tolerance:
        raise ValueError(f"uart_divisor: {clk_hz} Hz / {d} is {err:.1%} off {baud} baud "
                         f"(tolerance {tolerance:.1%})")
    return d


class UartRx(wiring.Component):
    """Receives 8N1 bytes from the ``rx`` pin.

    Parameters (keyword-only): ``divisor`` (clock cycles per bit, >= 4).

    Ports
    -----
    rx: In(1, init=1) the pin (asynchronous: a 2-flop synchronizer comes first).
    o: Out(stream of 8 bits) the received bytes. A byte stays at ``o`` until taken; a byte
    that arrives before it was taken replaces it (no buffering: the host link talks in
    request/response turns).
    error: Out(1) one-cycle pulse: a framing error (the stop bit read 0); that byte is dropped
    and the receiver waits for the line to go high (idle) before it looks for a start bit.

    The line is sampled once per bit, in the middle of the bit: ``divisor // 2`` cycles after
    the synchronized start edge, then every ``divisor`` cycles; a start bit that is high
    again in its middle is a glitch and ignored. Sampling in the middle tolerates a bit-rate
    mismatch of a few percent (less for small divisors: the start edge is seen with up to one
    cycle of jitter).

    Latency: ``o.valid`` is high after the edge ``divisor // 2 + 9 * divisor + 2`` edges after
    the first edge that samples the start bit at the pin (2 of them the synchronizer), in the
    middle of the stop bit. Throughput: one byte per 10 bit times, back to back.
    """

    def __init__(self, *, divisor):
        self._divisor = check_int("UartRx", "divisor", divisor, MIN_DIVISOR)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "error": Out(1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        D = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(D))
        bit = Signal(range(8))
        shreg = Signal(8)
        tick = timer == 0

        m.d.sync += self.error.eq(0)
        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(D // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(rx):
                        m.next = "IDLE"  # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(D - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    # LSB first: after 8 shifts the first bit is at bit 0
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(D - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(rx):
                        # back to IDLE in the middle of the stop bit: the next start edge may
                        # come early (a faster sender) and is still seen
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Sends the bytes of stream ``i`` as 8N1 frames on the ``tx`` pin.

    Parameters (keyword-only): ``divisor`` (clock cycles per bit, >= 4).

    Ports
    -----
    i: In(stream of 8 bits) bytes to send; ``i.ready`` is high while idle and in the last
    cycle of a stop bit (so bytes go back to back).
    tx: Out(1, init=1) the pin, driven from a register (no glitches); high while idle.

    Latency: the start bit begins right after the edge that accepts a byte. Throughput: one
    byte per ``10 * divisor`` cycles.
    """

    def __init__(self, *, divisor):
        self._divisor = check_int("UartTx", "divisor", divisor, MIN_DIVISOR)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        D = self._divisor
        busy = Signal()
        timer = Signal(range(D))
        left = Signal(range(10))  # bits still to put on the pin after the one shown
        shreg = Signal(9)  # data bits, then the stop bit
        tx = Signal(init=1)
        m.d.comb += [self.tx.eq(tx), self.i.ready.eq(~busy | ((timer == 0) & (left == 0)))]

        with m.If(busy):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(left != 0):
                m.d.sync += [tx.eq(shreg[0]), shreg.eq(shreg[1:]), left.eq(left - 1),
                             timer.eq(D - 1)]
            with m.Else():
                m.d.sync += busy.eq(0)  # the stop bit has been shown for D cycles
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), tx.eq(0), shreg.eq(Cat(self.i.payload, 1)), left.eq(9),
                         timer.eq(D - 1)]
        return m

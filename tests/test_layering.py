"""The layering: pysim <- hw <- sim <- deltanet. No folder imports one above it (function-local
imports included), and the reference imports no Amaranth, cocotb or gymnasium."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("pysim", "hw", "sim", "deltanet")
#: third-party packages a layer must not import
FORBIDDEN = {"pysim": {"amaranth", "cocotb", "cocotb_tools", "gymnasium", "torch"},
             "hw": {"cocotb", "cocotb_tools", "gymnasium", "torch"}}


def imported(path: Path) -> set:
    """Top-level package names ``path`` imports (relative imports: its own folder)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(path.parent.name if node.level else node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_folder_imports_one_above_it(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:]) | FORBIDDEN.get(layer, set())
    bad = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        hits = imported(path) & above
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, f"imports from above {layer}: {bad}"

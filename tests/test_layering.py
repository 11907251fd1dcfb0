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


def _layer_of(module: str) -> str:
    """The folder (layer) or third-party package a module name belongs to: the layers install
    as ``deltanet.pysim``, ``deltanet.hw``, ``deltanet.sim`` and ``deltanet``."""
    parts = module.split(".")
    if parts[0] == "deltanet" and len(parts) > 1 and parts[1] in LAYERS[:-1]:
        return parts[1]
    return parts[0]


def _package(path: Path) -> list:
    """The installed package of a source file, as name parts (``hw/core.py``: deltanet.hw)."""
    parts = list(path.relative_to(ROOT).parent.parts)
    return parts if parts[0] == "deltanet" else ["deltanet", *parts]


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from ... import`` in ``path``."""
    if not node.level:
        return node.module
    pkg = _package(path)
    base = pkg[:len(pkg) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported(path: Path) -> set:
    """Layers and third-party packages ``path`` imports (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {_layer_of(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(_layer_of(_absolute(path, node)))
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


def _module_graph() -> dict:
    """Module -> the project modules it imports (function-local imports included)."""
    mods = {}
    for layer in LAYERS:
        for p in (ROOT / layer).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            parts = parts if layer == "deltanet" else ("deltanet", *parts)  # installed names
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = p
    graph = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mod = _absolute(p, node)
                deps |= {mod} | {f"{mod}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    state = {}

    def visit(v, path):
        state[v] = "open"
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(w):] + [w]))
            if w not in state:
                visit(w, path + [w])
        state[v] = "done"

    for v in sorted(graph):
        if v not in state:
            visit(v, [v])


def test_command_modules_are_imported_by_nothing_else():
    """deltanet/cli holds thin command modules over library modules: only the command itself
    (``deltanet.cli``, ``python -m deltanet``) imports them."""
    graph = _module_graph()
    bad = {m: sorted(d for d in deps if d.startswith("deltanet.cli"))
           for m, deps in graph.items()
           if not m.startswith("deltanet.cli") and m != "deltanet.__main__"}
    assert not {m: d for m, d in bad.items() if d}, bad

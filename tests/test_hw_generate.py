"""hw.generate: deterministic Verilog + JSON + report for every bundled model; import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.generate import TOPLEVEL, generate
from hw.top import DeltanetTop
from pysim import cycles as pysim_cycles
from pysim import load_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "deltanet" / "models").glob("*.npz"))


# the register-parallel core's generator (deltanet_top, no longer the default core): CartPole in
# the default run, the larger models (about 40 s each) behind the slow marker
@pytest.mark.parametrize("path", [
    pytest.param(p, marks=() if p.stem == "cartpole" else pytest.mark.slow) for p in MODELS],
    ids=[p.stem for p in MODELS])
def test_generate_every_model_deterministic(path, tmp_path):
    model = load_model(path)
    lanes = 4
    a = generate(model, lanes, tmp_path / "a")
    b = generate(model, lanes, tmp_path / "b")
    assert set(a) == {"verilog", "json", "report"}
    for kind in a:
        assert a[kind].read_bytes() == b[kind].read_bytes(), kind
    v = a["verilog"].read_text()
    assert f"module {TOPLEVEL}(" in v
    info = json.loads(a["json"].read_text())
    top = DeltanetTop(model=model, lanes=lanes)
    top._MustUse__silence = True
    assert info["lanes"] == lanes
    assert info["n_layers"] == len(model.config.layers)
    assert info["network"] == model.config.to_dict()
    assert info["model_checksum"] == model.meta["checksum"]
    assert info["cycle_model"]["layer_overhead"] == pysim_cycles.LAYER_OVERHEAD
    assert info["cycle_model"]["step_overhead"] == pysim_cycles.STEP_OVERHEAD
    for name, (direction, width) in top.port_widths().items():
        assert info["ports"][name] == {"direction": direction, "width": width}
        # every contract port is a real Verilog port of that width
        decl = f"{direction} [{width - 1}:0] {name};" if width > 1 else f"{direction} {name};"
        assert decl in v, decl
    report = a["report"].read_text()
    assert "cycles/step" in report and "weight memory" in report
    assert not list(tmp_path.glob("a/.*.tmp"))  # no temporary files left behind


def test_generate_with_observations_and_errors(tmp_path):
    model = load_model(MODELS[0])
    obs = np.zeros((5, model.config.n_in))
    p = generate(model, 1, tmp_path, observations=obs)
    assert "5 steps of recorded observations" in p["report"].read_text()
    with pytest.raises(ValueError, match="observations"):
        generate(model, 1, tmp_path, observations=np.zeros((5, model.config.n_in + 1)))
    with pytest.raises(ValueError, match="lanes"):
        generate(model, 0, tmp_path)
    with pytest.raises(TypeError, match="model"):
        generate(str(MODELS[0]), 1, tmp_path)


def test_cli_generate(tmp_path):
    pytest.importorskip("gymnasium")
    from deltanet.cli import main
    from hw.generate_core import TOPLEVEL as CORE

    out = tmp_path / "design"
    rc = main(["generate", "--model", str(ROOT / "deltanet" / "models" / "cartpole.npz"),
               "--lanes", "2", "--out", str(out), "--steps", "30", "--arch", "parallel"])
    assert rc == 0
    assert (out / f"{TOPLEVEL}.v").exists() and (out / f"{TOPLEVEL}.json").exists()
    assert "recorded observations" in (out / "report.md").read_text()
    core = tmp_path / "core"  # the default for a dense model: the event-driven core
    rc = main(["generate", "--model", str(ROOT / "deltanet" / "models" / "cartpole.npz"),
               "--lanes", "3", "--out", str(core), "--steps", "30", "--memory-files"])
    assert rc == 0
    assert (core / f"{CORE}.v").exists() and (core / f"{CORE}.json").exists()
    assert "$readmemh" in (core / f"{CORE}.v").read_text()
    assert "recorded observations" in (core / "report.md").read_text()
    assert main(["generate", "--model", str(MODELS[0]), "--lanes", "0", "--out",
                 str(out)]) == 2


def test_hw_imports_only_amaranth_numpy_pysim():
    code = ("import sys, hw, hw.generate, hw.generate_core, hw.top\n"
            "bad = [m for m in ('gymnasium', 'torch', 'cocotb', 'deltanet', 'stable_baselines3')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

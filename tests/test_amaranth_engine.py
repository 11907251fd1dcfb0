"""``deltanet simulate --engine amaranth``: the closed loop on Amaranth's simulator.

The CLI run (the event-driven core, the default for a dense model) must pass with consistent
performance figures, its per-step cycles must equal an independent pysim run (reference choosing
the actions, :class:`pysim.corecycles.CoreCycleModel`), and corrupted designs must be caught
with the same first mismatch the cocotb bench reports.
"""

import json

import numpy as np
import pytest
from deltanet.pysim import DeltaNetwork, load_model
from deltanet.pysim.corecycles import CoreCycleModel

from deltanet import MODELS_DIR
from deltanet.amaranth_engine import run_amaranth
from deltanet.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CARTPOLE = MODELS_DIR / "cartpole.npz"
ARGS = {"lanes": 2, "episodes": 1, "seed": 0, "max_steps": 40}


def _pysim_cycles(model, lanes, seed, max_steps):
    """Per-step cycles of the reference alone as the policy (CoreCycleModel), same seed."""
    from deltanet.envs import make_env

    env = make_env(model.meta["env_id"], seed)()
    net, cm = DeltaNetwork(model), CoreCycleModel(model, lanes)
    obs, _ = env.reset(seed=seed)
    out = []
    for t in range(max_steps):
        x = net.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))
        y = net.step(x)
        out.append(int(cm.schedule(net.last_events, first=t == 0).cycles))
        obs, _, term, trunc, _ = env.step(net.decode(y)[0])
        if term or trunc:
            break
    env.close()
    return out


@pytest.fixture(scope="module")
def clean_run():
    return run_amaranth(CARTPOLE, **ARGS)


def test_cli_simulate_amaranth(tmp_path, clean_run):
    out = tmp_path / "a.json"
    rc = main(["simulate", "--model", str(CARTPOLE), "--engine", "amaranth", "--episodes", "1",
               "--max-steps", "40", "--lanes", "2", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0, r["first_mismatch"]
    assert r["simulator"] == "amaranth"
    assert r["steps"] == 40 and r["mismatches"] == 0 and r["mismatched_values"] == 0
    assert r["first_mismatch"] is None
    assert r["returns_equal"] and r["hw_return"] == r["ref_return"] == 40.0
    assert r["env_steps_per_s"] > 0 and r["wall_s"] > 0
    # the report's figures follow from the per-step record (the run is deterministic)
    perf = r["performance"]
    steps = clean_run["per_step"]
    cyc = np.array([s["cycles"] for s in steps], dtype=np.float64)
    macs = np.array([sum(s["macs"]) for s in steps], dtype=np.float64)
    assert perf["steps"] == len(steps) == 40
    assert perf["cycles_mean"] == cyc.mean()
    assert perf["cycles_max"] == cyc.max()
    assert perf["latency_us_mean"] == cyc.mean() / 100.0
    assert perf["useful_macs_per_step"] == macs.mean()
    assert perf["speedup_vs_dense"] == perf["dense_schedule_cycles"] / cyc.mean()
    assert perf["lanes"] == 2
    # the same keys as the cocotb bench
    assert {"episodes", "clock_ns", "hw_return", "ref_return", "model", "lanes",
            "seed"} <= set(r)


def test_per_step_record_matches_pysim(clean_run):
    model = load_model(CARTPOLE)
    steps = clean_run["per_step"]
    np.testing.assert_array_equal([s["cycles"] for s in steps],
                                  _pysim_cycles(model, 2, seed=0, max_steps=40))
    assert [s["step"] for s in steps] == list(range(40))
    assert all(s["episode"] == 0 and not s["mismatch"] for s in steps)
    n_layers = len(model.config.layers)
    assert all(len(s["events"]) == len(s["macs"]) == n_layers for s in steps)
    assert all(len(s["lane_work"]) == 2 and s["busy"] >= 0 for s in steps)
    assert steps[0]["events"][0] > 0 and sum(sum(s["macs"]) for s in steps) > 0


@pytest.mark.parametrize("what", ["weight", "threshold"])
def test_mutated_design_is_caught(what):
    r = run_amaranth(CARTPOLE, **ARGS, mutation=what)
    assert r["mutation"] == what
    assert r["mismatches"] > 0 and r["mismatched_values"] >= r["mismatches"]
    fm = r["first_mismatch"]
    assert fm is not None and fm["hw"] != fm["ref"]
    assert {"episode", "step", "layer", "field", "index", "hw", "ref"} == set(fm)
    if what == "threshold":
        # layer 0's threshold changed: layer 0's event count is where it shows first
        assert (fm["layer"], fm["field"]) == (0, "events") and fm["step"] >= 1
    else:
        # only the output layer's weight changed: counters agree, the outputs differ first
        n_layers = len(load_model(CARTPOLE).config.layers)
        assert (fm["layer"], fm["field"]) == (n_layers - 1, "out")


def test_waves(tmp_path):
    vcd = tmp_path / "w" / "run.vcd"
    r = run_amaranth(CARTPOLE, lanes=4, episodes=2, seed=5, max_steps=3, waves=vcd)
    assert r["mismatches"] == 0 and r["steps"] == 6
    assert r["waves"] == str(vcd)
    text = vcd.read_text()
    assert "$enddefinitions" in text and "done" in text


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes"):
        run_amaranth(CARTPOLE, lanes=2, episodes=0, seed=0)
    with pytest.raises(ValueError, match="lanes"):
        run_amaranth(CARTPOLE, lanes=0, episodes=1, seed=0)

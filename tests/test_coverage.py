"""Functional coverage of the closed loop (sim/coverage.py): each bin on known step records.

The records come from a hand-built 2-2-2-2 network stepped by the reference on hand-chosen
inputs (so the state in them is a real one), where each case is worked out below; one record
is written entirely by hand. Short closed loops on the Amaranth engine and on Verilator (the
cocotb bench) check that the coverage reaches the result dict.
"""

import numpy as np
import pytest
from deltanet.pysim import DeltaNetwork, LayerParams, Model, load_model, mlp_config
from deltanet.pysim.corecycles import CoreCycleModel
from deltanet.sim.coverage import (
    FIRE_ABOVE,
    FIRE_AT,
    HOLD_BELOW,
    HOLD_FAR,
    NO_WRITES,
    Coverage,
    StepRecord,
    merge,
    report,
)

from deltanet import MODELS_DIR
from deltanet.amaranth_engine import run_amaranth
from deltanet.closed_loop import run

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def corner_model() -> Model:
    """2 -> 2 -> 2 -> 2, weights SQ2.6 (1.0 = 64 codes), no bias:

    * layer 0: SQ4.4 inputs (threshold 0.25 = 4 codes), accumulator fraction 10 bits, ReLU
      into **SQ2.2** (saturates at 7 codes = 1.75); W0 = [[1, 1], [0.5, 0]]: inputs 4.0 give
      8192 -> 32 codes and 2048 -> 8 codes, both clipped at the max.
    * layer 1: SQ2.2 inputs, a **10-bit** accumulator ([-512, 511], fraction 8), ReLU into
      SQ2.2; W1 = [[1, 1], [0.5, 0]]: inputs (7, 7) give 896, which wraps to -128 (-> 0);
      row 1 gives 224 -> 3.5 -> 4 codes (half to even).
    * layer 2: SQ2.2 inputs, identity into **SQ1.5:trunc:wrap** ([-32, 31]); W2 = [[0, 1],
      [0, 0.25]]: input (0, 4) gives 256 -> 32 codes, which wraps to -32.
    """
    cfg = mlp_config([2, 2, 2, 2], input_fmt="SQ4.4", weight_fmt="SQ2.6", act_fmt="SQ2.2",
                     out_fmt="SQ1.5:trunc:wrap", thresholds=[0.25, 0.0, 0.0],
                     acc_bits=[18, 10, 12])
    ws = [[[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [0.5, 0.0]], [[0.0, 1.0], [0.0, 0.25]]]
    params = [LayerParams(np.array(w, dtype=np.float32), np.zeros(2, dtype=np.float32),
                          np.array(w) != 0) for w in ws]
    return Model(cfg, tuple(params), {"env_id": "CartPole-v1"})


def records(model, xs, lanes):
    """The reference stepped on the raw inputs ``xs`` (the first step an episode start), one
    :class:`StepRecord` per step with the cycles the cycle model gives."""
    net, cm = DeltaNetwork(model, mode="fixed", delta=True), CoreCycleModel(model, lanes)
    out = []
    for t, x in enumerate(xs):
        x = np.asarray(x, dtype=np.int64)
        x_hat = net.x_hat
        net.step(x[None])
        hw = {"cycles": cm.schedule(net.last_events, t == 0).cycles,
              "macs": list(net.last_counts["significant"][:, 0])}
        out.append(StepRecord.from_reference(net, x, x_hat, t == 0, hw))
    return out


def sampled(model, xs, lanes=1) -> Coverage:
    cov = Coverage(model, lanes)
    for r in records(model, xs, lanes):
        cov.sample(r)
    return cov


def test_saturation_at_the_max():
    bins = sampled(corner_model(), [[64, 64]]).bins()
    assert bins["saturation.l0"] == {"max": 1}  # 32 and 8 codes clipped at 7
    cov = Coverage(corner_model(), 1)
    assert "min" in cov.unreachable()["saturation.l0"]  # ReLU: never the format's min
    # layer 2 wraps: it cannot saturate
    assert set(cov.unreachable()["saturation.l2"]) == {"max", "min"}


def test_no_saturation_below_the_max():
    bins = sampled(corner_model(), [[16, 0]]).bins()  # 1.0 -> 1024 -> 4 codes: inside
    assert bins["saturation.l0"] == {"max": 0}


def test_accumulator_and_activation_wrap():
    bins = sampled(corner_model(), [[64, 64]]).bins()
    assert bins["wrap.l1"]["accumulator"] == 1  # 896 in a 10-bit accumulator
    assert bins["wrap.l2"]["activation"] == 1  # 32 codes in SQ1.5:wrap
    assert "wrap.l0" not in bins  # no wrap can happen in layer 0:
    un = Coverage(corner_model(), 1).unreachable()
    assert "fit 18 bits" in un["wrap.l0"]["accumulator"]  # the interval bound: 16256 < 2**17
    assert "saturates" in un["wrap.l0"]["activation"]  # SQ2.2 saturates
    assert "fit 12 bits" in un["wrap.l2"]["accumulator"]  # 896 < 2048


def test_threshold_edge_cases():
    # theta = 4 codes: input 0 moves by exactly 4 (fires), input 1 by 3 (holds)
    bins = sampled(corner_model(), [[16, 16], [20, 13]]).bins()
    assert bins["threshold.l0"] == {FIRE_AT: 1, HOLD_BELOW: 1, FIRE_ABOVE: 0, HOLD_FAR: 0}
    bins = sampled(corner_model(), [[16, 16], [21, 14]]).bins()
    assert bins["threshold.l0"] == {FIRE_AT: 0, HOLD_BELOW: 0, FIRE_ABOVE: 1, HOLD_FAR: 1}
    # layer 1's threshold is 0: theta 1, nothing is ever held
    un = Coverage(corner_model(), 1).unreachable()["threshold.l1"]
    assert set(un) == {HOLD_BELOW, HOLD_FAR}


def test_episode_start_ignores_the_threshold():
    bins = sampled(corner_model(), [[20, 13]]).bins()
    assert sum(bins["threshold.l0"].values()) == 0
    assert bins["passes"]["episode start"] == 1 and bins["events.l0"]["2-3"] == 1


def test_lane_collision_and_its_gap():
    """Both inputs of layer 0 reach output 0. One lane: column 0 issues channels 0, 1 (slots
    0, 1), column 1 channel 0 (slot 2): output 0 written at slots 0 and 2. Two lanes: lane 0
    owns channel 0, lane 1 channel 1; each column is one word: written at slots 0 and 1 (back
    to back)."""
    xs = [[64, 64]]
    one, two = sampled(corner_model(), xs, 1).bins(), sampled(corner_model(), xs, 2).bins()
    assert one["collisions.l0"]["2"] == 1 and two["collisions.l0"]["2"] == 1
    assert one["collision_gap.l0"] == {"1": 0, "2": 1, "3+": 0}
    assert two["collision_gap.l0"] == {"1": 1, "2": 0, "3+": 0}
    # only input 0 fires: no two events
    assert sum(sampled(corner_model(), [[64, 0]], 1).bins()["collisions.l0"].values()) == 0


def test_a_record_by_hand():
    """A step after a threshold write (a rescan) with no event and no MAC, written by hand."""
    cov = Coverage(corner_model(), 1)
    z = np.zeros(2, dtype=np.int64)
    cov.sample(StepRecord(False, z, (z, z, z), (z != 0,) * 3, (z, z, z), cycles=11,
                          macs=(0, 0, 0), threshold_writes=((1, 5),)))
    b = cov.bins()
    assert b["passes"]["rescan after threshold write"] == 1
    assert b["threshold_writes"] == {"layer 0": 0, "layer 1": 1, "layer 2": 0}
    assert b["events.l0"]["0"] == 1 and b["cycles"]["no MACs"] == 1
    assert cov.theta[1] == 5
    cov.sample(StepRecord(False, z, (z, z, z), (z != 0,) * 3, (z, z, z), cycles=30,
                          macs=(3, 0, 0)))
    assert cov.bins()["cycles"]["> 8x"] == 1  # 30 cycles for an ideal of 3


def test_events_bins_and_unreachable_ones():
    cov = sampled(corner_model(), [[64, 64], [64, 64]])
    assert cov.bins()["events.l0"]["2-3"] == 1 and cov.bins()["events.l0"]["0"] == 1
    assert set(cov.unreachable()["events.l0"]) == {"4-7", "8-15", "16+"}  # 2 inputs


def test_summary_merge_and_report():
    a = sampled(corner_model(), [[64, 64]]).summary()
    b = sampled(corner_model(), [[8, 8], [12, 5]]).summary()  # no saturation; theta edges
    m = merge([a, b])
    assert m["steps"] == 3
    assert m["bins"]["saturation.l0"]["max"] == 1
    assert m["bins"]["threshold.l0"][FIRE_AT] == 1
    assert m["hit"] >= max(a["hit"], b["hit"]) and m["reachable"] == a["reachable"]
    text = report(m)
    assert "`threshold_writes` `layer 0`: " + NO_WRITES in text
    assert "Unreachable bins" in text


def test_the_issue_stream_matches_the_cycle_model():
    """The issue order the collision bins use gives the cycle model's MAC cycles and rounds."""
    model = load_model(MODELS_DIR / "cartpole.npz")
    rng = np.random.default_rng(0)
    for lanes in (3, 4):
        cov, cm = Coverage(model, lanes), CoreCycleModel(model, lanes)
        net = DeltaNetwork(model, mode="fixed", delta=True)
        x = rng.normal(size=4)
        for t in range(30):
            x = x + rng.normal(size=4) * 0.05
            net.step(net.quantize_obs(x[None]))
            sched = cm.schedule(net.last_events, t == 0)
            ev = [e[0] for e in net.last_events]
            order = np.nonzero(ev[0] & cov.layers[0].work)[0]
            lane, _, row = cov.layers[0].stream(order)
            assert int(cov.layers[0].cost[order].sum()) == sched.mac_cycles[0]
            if t:  # delta step: layer 0's rounds are its dirty lists
                assert max(len(np.unique(row[lane == k])) for k in range(lanes)) \
                    == sched.rounds[0]


def test_closed_loop_on_the_amaranth_engine():
    res = run_amaranth(MODELS_DIR / "cartpole.npz", lanes=3, episodes=1, seed=0, max_steps=12,
                       coverage=True)
    assert res["mismatches"] == 0 and res["steps"] == 12
    cov = res["coverage"]
    assert cov["steps"] == 12
    assert cov["bins"]["passes"] == {"episode start": 1, "rescan after threshold write": 0,
                                     "delta step": 11}
    for i in range(3):
        assert sum(cov["bins"][f"events.l{i}"].values()) == 12
    assert cov["groups"]["events"]["hit"] > 0 and cov["cycles_below_ideal"] == 0
    off = run_amaranth(MODELS_DIR / "cartpole.npz", lanes=3, episodes=1, seed=0, max_steps=2)
    assert "coverage" not in off


@pytest.mark.verilator
def test_closed_loop_on_verilator_collects_coverage():
    """The cocotb bench gets the option from sim.runner (DELTANET_COVERAGE) and returns it."""
    res = run(MODELS_DIR / "cartpole.npz", lanes=4, sim="verilator", episodes=1, seed=0,
              max_steps=20, coverage=True)
    assert res["mismatches"] == 0 and res["coverage"]["steps"] == 20
    assert sum(res["coverage"]["bins"]["events.l1"].values()) == 20

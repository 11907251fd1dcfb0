"""cocotb block benches on the generated Verilog: DeltaEncoder, SparseMAC + DeltaAccumulator.

Build-time variants are stacked parametrizes, each built once in its own folder (named by the
hash of its Verilog + JSON, under build/sim_blocks); run-time variants (thresholds, backpressure,
idle cycles) run inside the bench (sim/bench_blocks.py). The mutation tests corrupt the bench's
*reference* and check the bench fails, so every comparison is known to be able to fail.
"""

import json
import re

import numpy as np
import pytest

from sim.blocks import EncoderVariant, MacVariant, generate_block, run_block
from sim.tools import have

pytestmark = [pytest.mark.verilator,
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

ENCODERS = {
    # 13 inputs, some columns masked, a typical reset threshold
    "n13-SQ2.6": EncoderVariant(n_in=13, fmt="SQ2.6", threshold=0.125, mask_density=0.6, seed=1),
    # 7 inputs, reset threshold above the format ("never"), threshold port wider than the format
    "n7-SQ3.3-huge": EncoderVariant(n_in=7, fmt="SQ3.3", threshold=100.0, mask_density=0.5,
                                    thr_width=9, seed=4),
}


def _check(result):
    assert result.passed, result.summary()


@pytest.mark.parametrize("sim", ["verilator"])
@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_block(name, sim):
    v = ENCODERS[name]
    design = json.loads(next(generate_block(v).glob("*.json")).read_text())
    assert not all(design["mask"]), "the variant should mask at least one empty column"
    _check(run_block(v, sim, seed=11))


@pytest.mark.parametrize("sim", ["verilator"])
@pytest.mark.parametrize("lanes", [1, 3], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("sizes, acc_bits", [  # 12 bits: layer 0 wraps
    pytest.param((9, 10, 3), (12, 20), id="9x10x3-acc12.20")])
def test_mac_block(sizes, acc_bits, lanes, sim):
    v = MacVariant(sizes=sizes, lanes=lanes, acc_bits=acc_bits, seed=2)
    r = run_block(v, sim, seed=12)
    _check(r)
    wraps = re.search(r"bit-exact, (\d+) wrapped", r.log.read_text())
    assert wraps and int(wraps[1]) > 0, "the stimulus should make the accumulator wrap"


@pytest.mark.parametrize("block, mutate", [("encoder", "encoder_gt"), ("mac", "mac_weight")])
def test_wrong_reference_fails(block, mutate):
    """Same builds as above (cached), reference corrupted: the bench must report a mismatch."""
    v = ENCODERS["n13-SQ2.6"] if block == "encoder" \
        else MacVariant(sizes=(9, 10, 3), lanes=3, acc_bits=(12, 20), seed=2)
    test = "encoder_events" if block == "encoder" else "mac_accumulate"
    r = run_block(v, seed=12, tests=[test], mutate=mutate, work_name=f"mutate-{mutate}")
    fails = r.failures()
    assert list(fails) == [test], r.summary()
    assert "events" in fails[test] if block == "encoder" else "layer 0" in fails[test]


@pytest.mark.icarus
def test_mac_block_icarus():
    if not have("icarus"):
        pytest.skip("Icarus Verilog is not installed (apt-get install -y iverilog)")
    _check(run_block(MacVariant(sizes=(5, 4, 2), lanes=2, acc_bits=(12, 16), seed=3),
                     "icarus", seed=13))


def test_bench_references_match_pysim():
    """The benches' numpy references agree with pysim's DeltaNetwork (no simulator needed)."""
    from pysim import DeltaNetwork, LayerParams, Model, mlp_config
    from pysim.fixed import wrap_bits
    from sim.bench_blocks import RefEncoder, RefMac

    rng = np.random.default_rng(0)
    cfg = mlp_config([6, 5, 2], input_fmt="SQ3.3", weight_fmt="SQ2.6", act_fmt="SQ4.4",
                     thresholds=[0.25, 0.0], acc_bits=[11, 16])
    params = [LayerParams(rng.normal(size=(ly.n_out, ly.n_in)).astype(np.float32),
                          rng.normal(size=ly.n_out).astype(np.float32),
                          rng.random((ly.n_out, ly.n_in)) < 0.6) for ly in cfg.layers]
    model = Model(cfg, tuple(params))
    net = DeltaNetwork(model)
    f = cfg.input_fmt
    enc = RefEncoder(6, [True] * 6, cfg.threshold_raw(0))
    mac = RefMac({"lanes": 2, "layers": [
        {"n_in": 6, "n_out": 5, "acc_bits": 11, "weights": model.w_raw[0].tolist(),
         "bias": model.b_raw[0].tolist()}]})
    x = np.zeros(6, dtype=np.int64)
    for t in range(200):
        first = t % 50 == 0
        if first:
            net.reset()
            mac.clear()
        x = np.clip(x + rng.integers(-6, 7, size=6), f.min_raw, f.max_raw)
        n, events = enc.load(x, clear=first, full=first)
        mac.macs[:] = 0  # per-step count, as pysim's
        net.step(x[None])
        ev = net.last_events[0][0]
        assert n == int(ev.sum()) == int(net.last_counts["events"][0, 0])
        np.testing.assert_array_equal(enc.x_hat, net.x_hat[0][0])
        for j, d in events:
            mac.event(0, j, d)
        np.testing.assert_array_equal(mac.m[0], wrap_bits(net.acc[0][0], 11))
        assert mac.macs[0] == net.last_counts["significant"][0, 0]
    assert mac.wraps > 0  # 11 accumulator bits: the comparison covered wrapping

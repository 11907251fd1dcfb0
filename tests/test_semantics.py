"""The worked example of docs/semantics.md, number for number."""

from pathlib import Path

import numpy as np
from deltanet.pysim import DeltaNetwork, LayerParams, Model, mlp_config


def example(rounding="half_even"):
    out = "SQ4.4" if rounding == "half_even" else f"SQ4.4:{rounding}:sat"
    cfg = mlp_config([2, 2], input_fmt="SQ4.4", weight_fmt="SQ2.2", act_fmt=out,
                     thresholds=[0.125])
    w = np.array([[0.5, -1.0], [0.0, 1.25]], dtype=np.float32)
    b = np.array([0.25, -0.5], dtype=np.float32)
    return Model(cfg, (LayerParams(w, b, np.ones((2, 2), bool)),))


def test_worked_example():
    m = example()
    assert m.config.layers[0].acc_bits == 14
    assert m.config.acc_fmt(0).frac_bits == 6
    np.testing.assert_array_equal(m.w_raw[0], [[2, -4], [0, 5]])
    np.testing.assert_array_equal(m.b_raw[0], [16, -32])
    assert m.config.threshold_raw(0) == 2
    net = DeltaNetwork(m)
    rows = [([1.0, 0.5], [16, 8], 2, [16, 8], [16, 8], [4, 2], 3),
            ([1.0625, 0.5], [17, 8], 0, [16, 8], [16, 8], [4, 2], 0),
            ([1.1875, 0.4375], [19, 7], 1, [19, 8], [22, 8], [6, 2], 1)]
    for obs, x_raw, events, x_hat, acc, y, sig in rows:
        x = net.quantize_obs([obs])
        np.testing.assert_array_equal(x[0], x_raw)
        np.testing.assert_array_equal(net.step(x)[0], y)
        assert net.last_counts["events"][0, 0] == events
        np.testing.assert_array_equal(net.x_hat[0][0], x_hat)
        np.testing.assert_array_equal(net.acc[0][0], acc)
        assert net.last_counts["significant"][0, 0] == sig
        assert net.last_counts["dense"][0, 0] == 4
    assert net.quantize_obs([[9.0, 0.0]])[0, 0] == 127


def test_worked_example_other_roundings():
    for rounding, want in (("trunc", 5), ("half_up", 6)):
        net = DeltaNetwork(example(rounding))
        for obs in ([1.0, 0.5], [1.0625, 0.5], [1.1875, 0.4375]):
            y = net.step(net.quantize_obs([obs]))
        assert y[0, 0] == want


def test_doc_mentions_every_convention():
    text = (Path(__file__).resolve().parents[1] / "docs" / "semantics.md").read_text()
    for heading in ("Threshold comparator", "Memory semantics", "Accumulators",
                    "Bias injection", "Non-linearities", "Output decoding", "cycle model",
                    "Worked example"):
        assert heading in text

"""The static-sparse baseline (scripts/bench_baseline.py) computes the network it claims to.

The da4ml design of the bundled CartPole model, run in da4ml's own bit-exact int interpreter
stage by stage (the pipeline whose Verilog is synthesized), must equal a straightforward integer
evaluation of the same quantized weights: ``b_raw + w_raw @ x`` exact in int64, then the output
format with da4ml's requantization convention - round half up, saturate (deltanet rounds half to
even; the two differ on exact ties only) - then ReLU on hidden layers. No place and route here.
"""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from deltanet.pysim import LayerParams, load_model

from deltanet import bundled_model

pytest.importorskip("da4ml", reason="da4ml is an optional benchmark dependency: "
                                    "pip install -e '.[bench]'")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_baseline.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_baseline", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cartpole():
    return load_model(bundled_model("cartpole"))


@pytest.fixture(scope="module")
def design(bench, cartpole):
    return bench.build_design(cartpole)


def int_eval(model, x_raw):
    """The network in plain integers: b + W x (exact), round half up, saturate, ReLU."""
    cfg = model.config
    h = np.asarray(x_raw, dtype=np.int64)
    for i, layer in enumerate(cfg.layers):
        acc = h @ model.w_raw[i].T + model.b_raw[i]
        # the exact sums fit deltanet's wrapping accumulators: no wrap hides behind the check
        assert np.abs(acc).max() < 1 << (layer.acc_bits - 1)
        h = replace(layer.out_fmt, rounding="half_up", overflow="sat").requantize(
            acc, cfg.acc_fmt(i).frac_bits)
        if layer.activation == "relu":
            h = np.maximum(h, 0)
    return h


def test_cartpole_design_equals_integer_evaluation(bench, cartpole, design):
    x = bench.random_inputs(cartpole, 200, seed=1234)
    got = bench.run_design(design, cartpole, x)
    assert got.shape == (200, cartpole.config.n_out)
    np.testing.assert_array_equal(got, int_eval(cartpole, x))
    np.testing.assert_array_equal(got, bench.reference_int(cartpole, x))  # the script's check


def test_the_check_can_fail(bench, cartpole, design):
    """One output weight one LSB off in the evaluation must show up as mismatches (an output
    layer weight: most hidden weights of the pruned model feed no output at all)."""
    last = len(cartpole.params) - 1
    p = cartpole.params[last]
    r, c = np.argwhere(cartpole.w_raw[last] != 0)[0]
    w = p.weight.copy()
    w[r, c] += cartpole.config.layers[last].weight_fmt.lsb
    bad = cartpole.replace(params=(*cartpole.params[:last], LayerParams(w, p.bias, p.mask)))
    assert int(np.abs(bad.w_raw[last] - cartpole.w_raw[last]).sum()) == 1
    x = bench.random_inputs(cartpole, 200, seed=1234)
    assert np.any(bench.run_design(design, cartpole, x) != int_eval(bad, x))


def test_verilog_has_one_top_with_the_design_widths(bench, design, tmp_path):
    path, ii, latency = bench.emit_verilog(design, "cartpole", tmp_path)
    text = path.read_text()
    assert ii == 1 and latency == design.stages
    assert f"module {bench.TOP}(" in text
    assert f"input [{design.in_bits - 1}:0] model_inp;" in text
    assert f"output [{design.out_bits - 1}:0] model_out;" in text
    assert "$readmemh" not in text  # no unused lookup-table library module

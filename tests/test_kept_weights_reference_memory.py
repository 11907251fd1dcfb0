"""Issue 12, parts 4 and 5: `quantize` never zeroes a kept weight, `calibrate` judges against
the dense model by default and logs its rejected candidates, and the weight-memory bits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from deltanet.pysim import LayerParams, load_model, save_model
from deltanet.pysim.coreplan import CorePlan

from deltanet import bundled_model
from deltanet.cli import main
from deltanet.prune import prune_oneshot
from deltanet.weight_memory import FLOAT_BITS, weight_memory


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The bundled dense CartPole copied to a folder, pruned one-shot by the CLI (which records
    the dense file as its source) and quantized by the CLI."""
    d = tmp_path_factory.mktemp("ref")
    dense = d / "dense.npz"
    shutil.copy(bundled_model("cartpole_dense"), dense)
    assert main(["prune", "--model", str(dense), "--sparsity", "0.7", "--finetune-steps", "0",
                 "--out", str(d / "p.npz")]) == 0
    assert main(["quantize", "--model", str(d / "p.npz"), "--out", str(d / "q.npz"),
                 "--episodes", "2"]) == 0
    return d


# ---- part 4: kept weights ---------------------------------------------------------------------
def test_quantize_cli_keeps_every_kept_weight(tmp_path, capsys):
    m = prune_oneshot(load_model(bundled_model("cartpole_dense")), 0.5)
    rng = np.random.default_rng(0)
    params, planted = [], []
    for p in m.params:
        w = p.weight.copy()
        kept = np.argwhere(p.mask)
        pick = kept[rng.choice(len(kept), size=3, replace=False)]
        for sign, (r, c) in zip((1, -1, 1), pick):
            w[r, c] = sign * 1e-6  # kept, far below any 8-bit LSB
        planted.append(pick)
        params.append(LayerParams(w, p.bias, p.mask))
    src = tmp_path / "tiny.npz"
    save_model(m.replace(params=params), src)
    rc, out, err = run_cli(capsys, "quantize", "--model", src, "--out", tmp_path / "q.npz",
                           "--episodes", "2", "--json", tmp_path / "q.json")
    assert rc == 0, err
    assert "kept weights that rounded to 0, set to +/-1 LSB: layer 0:" in out
    q = load_model(tmp_path / "q.npz")
    for i, p in enumerate(q.params):
        assert np.all(q.w_raw[i][p.mask] != 0), f"layer {i}: a kept weight became 0"
        for sign, (r, c) in zip((1, -1, 1), planted[i]):
            assert q.w_raw[i][r, c] == sign  # +-1 LSB, the float weight's sign
    raised = q.meta["provenance"]["quantization"]["kept_weights_raised"]
    assert all(n >= 3 for n in raised)
    assert json.loads((tmp_path / "q.json").read_text())["kept_weights_raised"] == raised


# ---- part 4: the dense reference --------------------------------------------------------------
def test_calibrate_defaults_to_the_dense_source(pruned, capsys):
    d = pruned
    assert load_model(d / "p.npz").meta["provenance"]["pruning"]["source"] == str(d /
                                                                                  "dense.npz")
    rc, out, err = run_cli(capsys, "calibrate", "--model", d / "q.npz", "--out", d / "c.npz",
                           "--episodes", "20", "--max-evals", "4", "--json", d / "c.json")
    assert rc == 0, err
    assert f"reference: the dense model {d / 'dense.npz'}" in out
    rep = json.loads((d / "c.json").read_text())
    assert rep["reference"]["model"] == str(d / "dense.npz")
    # the reference return is the dense float model's, not the pruned one's
    from deltanet.calibrate import SELECT_SEED, evaluate

    dense = evaluate(load_model(d / "dense.npz"), [0, 0, 0], 20, SELECT_SEED, mode="float",
                     delta=False)
    assert rep["reference"]["select"] == dense["mean_return"]
    # every candidate is logged; the rejected ones with their thresholds, return and reason
    assert rep["candidates"] and rep["rejected"]
    for c in rep["candidates"]:
        assert {"phase", "thresholds", "thresholds_lsb", "mean_return", "significant",
                "status", "reason"} <= set(c)
    assert all(c["status"] == "rejected" and c["reason"] for c in rep["rejected"])
    assert sum(c["status"] == "chosen" for c in rep["candidates"]) == 1
    assert "search_stopped" in rep


def test_calibrate_finds_a_moved_dense_model_by_checksum(pruned, tmp_path, capsys):
    q = load_model(pruned / "q.npz")
    prov = dict(q.meta["provenance"])
    prov["pruning"] = {**prov["pruning"], "source": str(tmp_path / "gone" / "dense.npz")}
    save_model(q.replace(meta={**q.meta, "provenance": prov}), tmp_path / "q.npz")
    shutil.copy(pruned / "dense.npz", tmp_path / "renamed_dense.npz")
    rc, out, err = run_cli(capsys, "calibrate", "--model", tmp_path / "q.npz", "--out",
                           tmp_path / "c.npz", "--episodes", "20", "--max-evals", "1")
    assert rc == 0, err
    assert f"reference: the dense model {tmp_path / 'renamed_dense.npz'}" in out


def test_calibrate_without_a_source_warns_and_uses_the_model(pruned, tmp_path, capsys):
    q = load_model(pruned / "q.npz")
    prov = dict(q.meta["provenance"])
    prov["pruning"] = {k: v for k, v in prov["pruning"].items() if k != "source"}
    save_model(q.replace(meta={**q.meta, "provenance": prov}), tmp_path / "q.npz")
    rc, out, err = run_cli(capsys, "calibrate", "--model", tmp_path / "q.npz", "--out",
                           tmp_path / "c.npz", "--episodes", "20", "--max-evals", "1",
                           "--json", tmp_path / "c.json")
    assert rc == 0, err
    assert "warning:" in out and "names no source model" in out
    assert json.loads((tmp_path / "c.json").read_text())["reference"]["model"] == "self"


# ---- part 5: weight-memory bits ---------------------------------------------------------------
def test_weight_memory_bits():
    m = load_model(bundled_model("cartpole"))
    mem = weight_memory(m)
    plan = CorePlan.build(m, 4, min(m.config.n_in, 8))
    assert mem["word_bits"] == plan.word_width and mem["quantized"]
    for i, r in enumerate(mem["per_layer"]):
        w = m.params[i].weight
        nnz = int((m.w_raw[i] != 0).sum())
        assert r["dense_bits"] >= w.size * FLOAT_BITS  # cleanup may have removed neurons
        assert r["raw_bits"] == nnz * m.config.layers[i].weight_fmt.width
        assert r["hw_bits"] == int(plan.col_len[i].sum()) * 4 * plan.word_width
        assert r["hw_bits"] >= r["raw_bits"]
    assert mem["dense_bits"] == sum(r["dense_bits"] for r in mem["per_layer"])
    # dense bits are those of the network as trained: the bundled dense model it came from
    dense = load_model(bundled_model("cartpole_dense"))
    assert mem["dense_bits"] == sum(p.weight.size for p in dense.params) * FLOAT_BITS
    assert mem["hw_reduction"] == mem["dense_bits"] / mem["hw_bits"]


def test_eval_shows_weight_memory(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, text, err = run_cli(capsys, "eval", "--model", bundled_model("cartpole"), "--episodes",
                            "1", "--json", out, "--no-progress")
    assert rc == 0, err
    assert "weight memory: dense float32" in text
    r = json.loads(out.read_text())
    assert r["weight_memory"] == weight_memory(load_model(bundled_model("cartpole")))

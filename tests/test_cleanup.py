"""Structural clean-up after pruning (issue 12, part 3): removing the hidden units nothing reads
changes no output - float, and bit for bit in fixed point - and never adds multiplications."""

from __future__ import annotations

import numpy as np
import pytest
from deltanet.pysim import DeltaNetwork, LayerParams, load_model

from deltanet import bundled_model
from deltanet.cleanup import cleanup
from deltanet.cli import main
from deltanet.prune import apply_cleanup, lane_cost, lane_order, order_for_lanes

from .conftest import random_model, random_walk
from .test_pysim_conv import conv_net, random_params


def kill_units(model, seed, frac=0.3):
    """Make a random part of every hidden layer's units dead: outgoing weights masked off
    (dead outputs), or incoming weights masked off with a positive or negative bias (dead
    inputs: constant or zero output)."""
    rng = np.random.default_rng(seed)
    params = [LayerParams(p.weight.copy(), p.bias.copy(), p.mask.copy()) for p in model.params]
    layers = model.config.layers
    for i in range(len(layers) - 1):
        units = params[i].weight.shape[0]
        nxt = layers[i + 1]
        for u in range(units):
            r = rng.random()
            if r < frac / 2:  # dead output
                if nxt.kind == "conv2d":
                    params[i + 1].mask[:, u] = False
                elif layers[i].kind == "conv2d":
                    px = layers[i].out_h * layers[i].out_w
                    params[i + 1].mask[:, u * px:(u + 1) * px] = False
                else:
                    params[i + 1].mask[:, u] = False
            elif r < frac:  # dead input: constant relu(b) (b > 0) or 0 (b <= 0)
                params[i].mask[u] = False
                params[i].bias[u] = rng.choice([-0.3, 0.0, 0.4])
    return model.replace(params=params)


def rollout(model, xs, mode):
    """Outputs and significant multiplications of a delta run over the steps ``xs``."""
    net = DeltaNetwork(model, mode=mode, batch=xs[0].shape[0])
    outs, sig = [], 0
    for x in xs:
        outs.append(np.array(net.step(net.quantize_obs(x))))
        sig += int(net.last_counts["significant"].sum())
    return np.array(outs), sig


def dense_models():
    for seed in range(6):
        m = random_model(seed, [6, 24, 16, 3], sparsity=0.6, thresholds=[0.02, 0.05, 0.05])
        yield f"mlp{seed}", kill_units(m, seed)


def conv_models():
    for seed, pad in ((0, 0), (1, 1), (2, 0), (3, 1)):
        # conv -> conv (padding 0 folds constants, padding 1 keeps them) -> dense -> dense
        cfg = conv_net([(2, 9, 9), (6, 3, 1, pad), (5, 3, 2, 0)], n_dense=(7, 3),
                       thresholds=[0.02, 0.05, 0.05, 0.05])
        yield f"conv{seed}", kill_units(random_params(cfg, seed, sparsity=0.4), seed, 0.5)


MODELS = list(dense_models()) + list(conv_models())


def walk(model, seed):
    return random_walk(seed, 25, 3, model.config.n_in, 1.0)


@pytest.mark.parametrize("name,model", MODELS, ids=[n for n, _ in MODELS])
def test_float_outputs_unchanged_and_fewer_multiplications(name, model):
    small, rep = cleanup(model)  # a float model: constants folded into the next bias
    assert rep["fold"] is True
    removed = sum(r["removed"] for r in rep["per_layer"])
    assert removed > 0
    assert small.config.n_in == model.config.n_in and small.config.n_out == model.config.n_out
    xs = walk(model, 7)
    a, sig_a = rollout(model, xs, "float")
    b, sig_b = rollout(small, xs, "float")
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    assert sig_b <= sig_a
    # the report's unit counts are the new layer sizes
    for r, ly in zip(rep["per_layer"], small.config.layers):
        assert r["after"] == (ly.out_ch if ly.kind == "conv2d" else ly.n_out)


@pytest.mark.parametrize("name,model", MODELS, ids=[n for n, _ in MODELS])
def test_fixed_outputs_bit_identical_with_the_same_formats(name, model):
    """Quantized (same formats before and after): removing dead outputs and always-0 units is
    exact in fixed point; constants are not folded on a quantized model."""
    q = model.replace(meta={**model.meta, "provenance": {"quantization": {"method": "test"}}})
    small, rep = cleanup(q)
    assert rep["fold"] is False and all(r["folded"] == 0 for r in rep["per_layer"])
    assert sum(r["removed"] for r in rep["per_layer"]) > 0
    for a_ly, b_ly in zip(q.config.layers, small.config.layers):
        assert (a_ly.weight_fmt, a_ly.out_fmt, a_ly.acc_bits, a_ly.threshold) == \
            (b_ly.weight_fmt, b_ly.out_fmt, b_ly.acc_bits, b_ly.threshold)
    xs = walk(model, 11)
    a, sig_a = rollout(q, xs, "fixed")
    b, sig_b = rollout(small, xs, "fixed")
    np.testing.assert_array_equal(b, a)
    assert sig_b <= sig_a
    # dense (non-delta) fixed point too
    net_a = DeltaNetwork(q, mode="fixed", delta=False, batch=3)
    net_b = DeltaNetwork(small, mode="fixed", delta=False, batch=3)
    for x in xs[:5]:
        np.testing.assert_array_equal(net_b.step(net_b.quantize_obs(x)),
                                      net_a.step(net_a.quantize_obs(x)))


def test_fold_false_on_a_float_model_is_exact_in_fixed_point_too():
    m = kill_units(random_model(5, [5, 12, 10, 2], sparsity=0.5), 5, 0.6)
    small, _ = cleanup(m, fold=False)
    xs = walk(m, 3)
    np.testing.assert_array_equal(rollout(small, xs, "fixed")[0], rollout(m, xs, "fixed")[0])


def test_a_layer_never_loses_its_last_unit():
    m = random_model(2, [4, 6, 5, 2], sparsity=0.0)
    p = [LayerParams(x.weight, x.bias, x.mask.copy()) for x in m.params]
    p[2].mask[:] = False  # nothing reads layer 1: every unit of it is dead, then layer 0's too
    m = m.replace(params=p)
    small, _ = cleanup(m)
    assert [ly.n_out for ly in small.config.layers] == [1, 1, 2]
    xs = walk(m, 4)
    np.testing.assert_allclose(rollout(small, xs, "float")[0], rollout(m, xs, "float")[0],
                               rtol=1e-6, atol=1e-6)
    assert rollout(small, xs, "float")[1] == 0  # nothing is computed any more


def test_inputs_and_outputs_are_kept():
    m = random_model(4, [6, 8, 3], sparsity=0.0)
    p = [LayerParams(x.weight, x.bias, x.mask.copy()) for x in m.params]
    p[0].mask[:, 2] = False  # input 2 is read by nothing: stays (the env fixes the obs size)
    p[1].mask[1] = False  # output 1 reads nothing: stays (an action)
    small, _ = cleanup(m.replace(params=p))
    assert small.config.n_in == 6 and small.config.n_out == 3
    assert small.config.layers[0].n_out == 8


def test_prune_cleans_up_by_default(tmp_path, capsys):
    dense = bundled_model("cartpole_dense")
    out, kept = tmp_path / "p.npz", tmp_path / "k.npz"
    args = ["prune", "--model", str(dense), "--sparsity", "0.9", "--balanced-lanes", "4",
            "--whole-columns", "--finetune-steps", "0"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clean-up removed" in text and "layer 1 64 -> " in text
    assert main([*args, "--out", str(kept), "--no-cleanup"]) == 0
    assert "clean-up" not in capsys.readouterr().out
    a, b = load_model(out), load_model(kept)
    assert a.config.layers[1].n_out < b.config.layers[1].n_out == 64
    assert "cleanup" in a.meta["provenance"] and "cleanup" not in b.meta["provenance"]
    xs = random_walk(1, 30, 4, 4, 0.5)
    np.testing.assert_allclose(rollout(a, xs, "float")[0], rollout(b, xs, "float")[0],
                               rtol=1e-5, atol=1e-5)
    assert rollout(a, xs, "float")[1] < rollout(b, xs, "float")[1]


def test_reductions_count_against_the_trained_network(tmp_path):
    """After a clean-up the dense count (and the dense weight memory) stay the trained
    network's, also through a second clean-up."""
    from deltanet.cleanup import dense_mults
    from deltanet.prune import prune_oneshot
    from deltanet.rollout import run_episodes
    from deltanet.weight_memory import weight_memory

    full = prune_oneshot(load_model(bundled_model("cartpole_dense")), 0.9, lanes=4,
                         whole_columns=True)
    small, _ = cleanup(full)
    again, _ = cleanup(small)
    want = [ly.dense_mults for ly in full.config.layers]
    assert list(dense_mults(small)) == list(dense_mults(again)) == want
    assert small.config.layers[1].dense_mults < want[1]
    a = run_episodes(full, 1, 0, mode="float", progress=False).summary()
    b = run_episodes(again, 1, 0, mode="float", progress=False).summary()
    assert a["dense_mults_per_step"] == b["dense_mults_per_step"] == sum(want)
    assert b["reduction"] >= a["reduction"]
    assert weight_memory(again)["dense_bits"] == weight_memory(full)["dense_bits"]


# ---- units re-ordered for the lanes after the clean-up ---------------------------------------
@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 5, 8])
def test_lane_order_is_a_permutation_that_never_costs_more(lanes):
    rng = np.random.default_rng(lanes)
    for n_out, n_in, density in ((3, 16, 0.5), (16, 4, 0.4), (37, 29, 0.15), (64, 64, 0.05)):
        mask = rng.random((n_out, n_in)) < density
        perm = lane_order(mask, lanes)
        np.testing.assert_array_equal(np.sort(perm), np.arange(n_out))
        before, after = lane_cost(mask, lanes), lane_cost(mask[perm], lanes)
        assert after <= before
        # never below the MAC bound: ceil(column non-zeros / lanes), nor below the row limit
        assert after >= int(np.ceil(mask.sum(axis=0) / lanes).sum())


def test_lane_order_finds_the_balanced_order():
    # 8 rows on 4 lanes: rows 0-3 read column 0, rows 4-7 column 1; in the identity order
    # lanes 0-3 hold one of each already; shuffled so that lane 0 holds rows 0 and 1 of column 0
    mask = np.zeros((8, 2), dtype=bool)
    mask[[0, 4, 1, 5], 0] = True  # lanes 0, 0, 1, 1 in the identity order
    mask[[2, 6, 3, 7], 1] = True
    assert lane_cost(mask, 4) == 4
    perm = lane_order(mask, 4)
    assert lane_cost(mask[perm], 4) == 2  # one non-zero per lane and column


@pytest.mark.parametrize("lanes", [2, 3, 4])
def test_order_for_lanes_keeps_fixed_point_outputs_bit_identical(lanes):
    for seed in range(3):
        m = random_model(seed, [5, 23, 11, 3], sparsity=0.7, thresholds=[0.02, 0.05, 0.05])
        small, rep = order_for_lanes(m, lanes)
        assert [r["layer"] for r in rep] == [0, 1]  # hidden dense layers; not the outputs
        assert all(r["cost_after"] <= r["cost_before"] for r in rep)
        xs = walk(m, 3 + seed)
        a, sig_a = rollout(m, xs, "fixed")
        b, sig_b = rollout(small, xs, "fixed")
        np.testing.assert_array_equal(b, a)
        assert sig_b == sig_a


def test_apply_cleanup_with_lanes_records_the_order():
    m = kill_units(random_model(4, [6, 24, 16, 3], sparsity=0.6), 4)
    out = apply_cleanup(m, 4, log=lambda *a: None)
    c = out.meta["provenance"]["cleanup"]
    assert [r["layer"] for r in c["lane_order"]] == [0, 1]
    for r, p in zip(c["lane_order"], out.params):
        assert r["cost_after"] == lane_cost(p.mask & (p.weight != 0), 4)


@pytest.mark.parametrize("lanes", [2, 3, 4])
def test_trim_for_lanes_brings_every_column_to_its_fewest_issue_words(lanes):
    """After the trim, no lane holds more than ceil(nnz / L) of a column's non-zeros (so the
    column issues in the fewest words its non-zeros allow); each lane keeps its largest; a
    layer with at most one row per lane and a balanced layer are left alone."""
    from deltanet.prune import balanced_mask, lane_nnz, trim_for_lanes

    rng = np.random.default_rng(lanes)
    m = load_model(bundled_model("cartpole_dense"))
    params = []
    for p in m.params:
        w = np.asarray(p.weight)
        params.append(LayerParams(p.weight, p.bias, rng.random(w.shape) < 0.4))
    m = m.replace(params=tuple(params))
    out, dropped = trim_for_lanes(m, lanes)
    for p, q, ly, n in zip(m.params, out.params, m.config.layers, dropped):
        before, after = np.asarray(p.mask, bool), np.asarray(q.mask, bool)
        assert not (after & ~before).any() and int(before.sum() - after.sum()) == n
        if -(-ly.n_out // lanes) < 2:
            assert n == 0
            continue
        k = -(-before.sum(axis=0) // lanes)
        assert (lane_nnz(after, lanes) <= k[None, :]).all()
        assert lane_cost(after, lanes) <= int(k.sum())
        w = np.abs(np.asarray(p.weight))
        for lane in range(lanes):
            rows = np.arange(lane, ly.n_out, lanes)
            for j in range(w.shape[1]):
                kept, gone = after[rows, j], before[rows, j] & ~after[rows, j]
                if kept.any() and gone.any():
                    assert w[rows, j][kept].min() >= w[rows, j][gone].max()
    # a lane-balanced mask is its own trim
    bal = m.replace(params=tuple(LayerParams(p.weight, p.bias, balanced_mask(
        np.asarray(p.weight), 0.5, lanes)) for p in m.params))
    assert trim_for_lanes(bal, lanes)[1] == [0] * len(m.params)

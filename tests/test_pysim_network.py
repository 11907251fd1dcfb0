"""Properties of the reference engines: delta vs dense, thresholds, reset, batching, counts."""

import subprocess
import sys

import numpy as np
import pytest
from deltanet.pysim import DeltaNetwork
from deltanet.pysim.coreplan import CorePlan
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import random_model, random_walk

SEEDS = st.integers(0, 10_000)


def run(net, obs_seq):
    outs, counts, events = [], [], []
    for obs in obs_seq:
        outs.append(net.step(net.quantize_obs(obs)).copy())
        counts.append({k: v.copy() for k, v in net.last_counts.items()})
        events.append([e.copy() for e in net.last_events])
    return outs, counts, events


@given(SEEDS, st.integers(1, 4), st.sampled_from(["SQ2.6", "SQ1.7", "SQ3.3:trunc:sat",
                                                    "SQ2.6:half_up:sat"]),
       st.sampled_from(["SQ8.8", "SQ4.4", "SQ6.10:trunc:wrap", "SQ3.5:half_up:sat"]))
@settings(max_examples=60, deadline=None)
def test_threshold_zero_equals_dense(seed, batch, wf, af):
    m = random_model(seed, weight_fmt=wf, act_fmt=af, input_fmt=af, thresholds=None, scale=2.0)
    delta = DeltaNetwork(m, batch=batch)
    dense = DeltaNetwork(m, batch=batch, delta=False)
    for obs in random_walk(seed, 25, batch, m.config.n_in, scale=4.0):
        x = delta.quantize_obs(obs)
        np.testing.assert_array_equal(delta.step(x), dense.step(x))


@given(SEEDS)
@settings(max_examples=30, deadline=None)
def test_huge_threshold_propagates_only_first_step(seed):
    m0 = random_model(seed)
    m = m0.replace(config=m0.config.with_thresholds([1e3] * len(m0.config.layers)))
    net = DeltaNetwork(m, batch=2)
    dense = DeltaNetwork(m, batch=2, delta=False)
    seq = random_walk(seed, 10, 2, m.config.n_in)
    first = net.step(net.quantize_obs(seq[0]))
    np.testing.assert_array_equal(first, dense.step(dense.quantize_obs(seq[0])))
    for obs in seq[1:]:
        np.testing.assert_array_equal(net.step(net.quantize_obs(obs)), first)
        assert net.last_counts["events"].sum() == 0
        assert net.last_counts["significant"].sum() == 0


@given(SEEDS)
@settings(max_examples=30, deadline=None)
def test_reset_restores_initial_state(seed):
    m = random_model(seed)
    m = m.replace(config=m.config.with_thresholds([0.07] * len(m.config.layers)))
    seq = random_walk(seed, 12, 3, m.config.n_in)
    net = DeltaNetwork(m, batch=3)
    a = run(net, seq)
    net.reset()
    b = run(net, seq)
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    # partial reset: only env 1 restarts
    net.reset()
    run(net, seq[:5])
    net.reset(np.array([False, True, False]))
    fresh = DeltaNetwork(m, batch=3)
    out_fresh = fresh.step(fresh.quantize_obs(seq[0]))
    out = net.step(net.quantize_obs(seq[0]))
    np.testing.assert_array_equal(out[1], out_fresh[1])


@given(SEEDS, st.sampled_from(["fixed", "float"]))
@settings(max_examples=30, deadline=None)
def test_batch_equals_single_runs(seed, mode):
    m = random_model(seed)
    m = m.replace(config=m.config.with_thresholds([0.05] * len(m.config.layers)))
    B = 5
    seq = random_walk(seed, 15, B, m.config.n_in)
    outs, counts, _ = run(DeltaNetwork(m, batch=B, mode=mode), seq)
    for b in range(B):
        o1, c1, _ = run(DeltaNetwork(m, batch=1, mode=mode), [s[b:b + 1] for s in seq])
        for t in range(len(seq)):
            if mode == "float":  # BLAS may sum in another order for another batch size
                np.testing.assert_allclose(outs[t][b], o1[t][0], rtol=1e-5, atol=1e-6)
                continue
            np.testing.assert_array_equal(outs[t][b], o1[t][0])
            for k in counts[t]:
                np.testing.assert_array_equal(counts[t][k][:, b], c1[t][k][:, 0])


def brute_force(m, seq, thresholds_raw):
    """Scalar loops over every input and weight: an independent count."""
    cfg = m.config
    n = len(cfg.layers)
    x_hat = [[0] * ly.n_in for ly in cfg.layers]
    acc = [list(map(int, m.b_raw[i])) for i in range(n)]
    all_counts = []
    for t, obs in enumerate(seq):
        x = [int(v) for v in cfg.input_fmt.quantize(
            (np.asarray(obs) - cfg.input_offset) * np.asarray(cfg.input_scale))]
        counts = []
        for i, ly in enumerate(cfg.layers):
            W = m.w_raw[i]
            ev = sig = 0
            for j in range(ly.n_in):
                d = x[j] - x_hat[i][j]
                if d != 0 and (abs(d) >= thresholds_raw[i] or t == 0):
                    ev += 1
                    x_hat[i][j] = x[j]
                    for r in range(ly.n_out):
                        if W[r, j] != 0:
                            sig += 1
                            acc[i][r] += int(W[r, j]) * d
            af = cfg.acc_fmt(i)
            acc[i] = [int(v) for v in af.handle_overflow(np.array(acc[i]))]
            y = ly.out_fmt.requantize(np.array(acc[i]), af.frac_bits)
            if ly.activation == "relu":
                y = np.maximum(y, 0)
            counts.append((ev, sig, ly.n_in * ly.n_out))
            x = [int(v) for v in y]
        all_counts.append((x, counts))
    return all_counts


@given(SEEDS)
@settings(max_examples=25, deadline=None)
def test_counts_and_outputs_equal_brute_force(seed):
    m = random_model(seed)
    m = m.replace(config=m.config.with_thresholds([0.06, 0.03, 0.1, 0.0][:len(m.config.layers)]
                                                  + [0.0] * max(0, len(m.config.layers) - 4)))
    seq = random_walk(seed, 10, 1, m.config.n_in)
    outs, counts, _ = run(DeltaNetwork(m, batch=1), seq)
    thr = [m.config.threshold_raw(i) for i in range(len(m.config.layers))]
    ref = brute_force(m, [s[0] for s in seq], thr)
    for t, (y, c) in enumerate(ref):
        np.testing.assert_array_equal(outs[t][0], y)
        for i, (ev, sig, dense) in enumerate(c):
            assert counts[t]["events"][i, 0] == ev
            assert counts[t]["significant"][i, 0] == sig
            assert counts[t]["weight_reads"][i, 0] == sig
            assert counts[t]["dense"][i, 0] == dense


@given(SEEDS)
@settings(max_examples=30, deadline=None)
def test_float_delta_threshold_zero_matches_float_dense(seed):
    m = random_model(seed)
    delta = DeltaNetwork(m, batch=2, mode="float")
    dense = DeltaNetwork(m, batch=2, mode="float", delta=False)
    for obs in random_walk(seed, 30, 2, m.config.n_in):
        a = delta.step(delta.quantize_obs(obs))
        b = dense.step(dense.quantize_obs(obs))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dense_twin_counts_pruning_only():
    m = random_model(3, [5, 7, 3], sparsity=0.6)
    net = DeltaNetwork(m, batch=1, delta=False)
    obs = np.array([[1.0, 0.0, -2.0, 0.5, 0.0]])
    net.step(net.quantize_obs(obs))
    nz_in = net.quantize_obs(obs)[0] != 0
    assert net.last_counts["significant"][0, 0] == m.column_nnz(0)[nz_in].sum()


def test_decoders():
    from deltanet.pysim import Decoder
    m = random_model(1, [3, 4, 2], decoder=Decoder("clip", (-1.0, -1.0), (1.0, 1.0)))
    net = DeltaNetwork(m)
    np.testing.assert_array_equal(net.decode(np.array([[512, -1024]])), [[1.0, -1.0]])
    m2 = random_model(1, [3, 4, 2], decoder=Decoder("tanh", (-2.0, 0.0), (2.0, 1.0)))
    net2 = DeltaNetwork(m2)
    np.testing.assert_allclose(net2.decode(np.array([[0, 0]])), [[0.0, 0.5]])
    m3 = random_model(1, [3, 4, 3])
    assert DeltaNetwork(m3).decode(np.array([[5, 7, 7]]))[0] == 1  # tie -> lowest index


def test_core_plan_lane_counts():
    m = random_model(7, [6, 9, 4], sparsity=0.3)
    for lanes in (1, 2, 3, 4):
        plan = CorePlan.build(m, lanes, 2)
        for i in range(2):
            nz = m.nonzero(i)
            ln = plan.lane_nnz[i].T  # (n_in, L)
            np.testing.assert_array_equal(ln.sum(axis=1), nz.sum(axis=0))
            np.testing.assert_array_equal(plan.col_len[i], ln.max(axis=1))
            for j in range(nz.shape[1]):
                for k in range(lanes):
                    assert ln[j, k] == sum(nz[r, j] for r in range(k, nz.shape[0], lanes))
    with pytest.raises(ValueError, match="lanes"):
        CorePlan.build(m, 0, 2)


def test_pysim_imports_no_heavy_packages():
    code = ("import sys, deltanet.pysim.corecycles, deltanet.pysim.coreplan, "
            "deltanet.pysim.policy, deltanet.pysim.artifact\n"
            "bad = [m for m in ('amaranth', 'cocotb', 'gymnasium', 'torch', 'stable_baselines3')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_config_errors():
    from deltanet.pysim import mlp_config
    with pytest.raises(ValueError, match="acc_bits"):
        mlp_config([4, 3], acc_bits=8)
    with pytest.raises(ValueError, match="positive"):
        mlp_config([4, 0, 2])
    with pytest.raises(ValueError, match="threshold"):
        mlp_config([4, 3], thresholds=[-1.0])
    with pytest.raises(ValueError, match="batch"):
        DeltaNetwork(random_model(0), batch=0)


@given(SEEDS, st.sampled_from(["SQ8.8", "SQ4.4:trunc:sat", "SQ3.5:half_up:wrap",
                               "SQ6.10:trunc:wrap", "SQ2.2:half_even:wrap"]),
       st.integers(-6, 12), st.booleans())
@settings(max_examples=150, deadline=None)
def test_fast_requantize_equals_format(seed, text, src_extra, relu):
    from deltanet.pysim.fixed import FixedFormat
    from deltanet.pysim.network import _FloatRequant
    f = FixedFormat.parse(text)
    src_frac = max(0, f.frac_bits + src_extra)
    rng = np.random.default_rng(seed)
    raw = rng.integers(-(2 ** 30), 2 ** 30, size=200)
    raw[:4] = [0, -1, 2 ** (src_frac + f.width), -(2 ** (src_frac + f.width))]
    want = f.requantize(raw, src_frac)
    if relu:
        want = np.maximum(want, 0)
    got = _FloatRequant(f, src_frac, relu)(raw.astype(np.float64))
    np.testing.assert_array_equal(got.astype(np.int64), want)


@given(SEEDS)
@settings(max_examples=25, deadline=None)
def test_narrow_accumulator_wraps_like_hardware(seed):
    """Accumulators narrow enough to overflow: wrap keeps delta == dense == brute force."""
    m0 = random_model(seed, [5, 6, 3], scale=3.0)
    cfg = m0.config
    layers = [type(ly)(**{**ly.__dict__, "acc_bits": cfg.acc_fmt(i).frac_bits + 3})
              for i, ly in enumerate(cfg.layers)]
    m = m0.replace(config=cfg.replace_layers(layers))
    delta, dense = DeltaNetwork(m, batch=1), DeltaNetwork(m, batch=1, delta=False)
    assert delta._wrap[0] is not None
    seq = random_walk(seed, 10, 1, 5, scale=6.0)
    ref = brute_force(m, [s[0] for s in seq], [0, 0])
    for obs, (y, _) in zip(seq, ref):
        x = delta.quantize_obs(obs)
        a = delta.step(x)
        np.testing.assert_array_equal(a, dense.step(x))
        np.testing.assert_array_equal(a[0], y)


@pytest.mark.parametrize("mode", ["float", "fixed"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observation_is_refused(mode, bad):
    """A NaN/inf observation would silence that input for the rest of the episode (delta 0
    never fires again in float mode); refused, naming the index and the value."""
    m = random_model(3, [4, 5, 2])
    net = DeltaNetwork(m, mode=mode)
    obs = np.array([0.1, 0.2, bad, 0.3])
    with pytest.raises(ValueError, match=rf"observation\[2\] is {bad}: .*finite"):
        net.quantize_obs(obs)
    batch = DeltaNetwork(m, mode=mode, batch=2)
    with pytest.raises(ValueError, match=r"observation\[2\] \(env 1 of 2\)"):
        batch.quantize_obs(np.stack([np.zeros(4), obs]))
    net.quantize_obs(np.zeros(4))  # a finite one still goes through

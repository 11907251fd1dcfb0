"""Delta convolutions in the reference: delta conv == dense conv, event counts, save/load, DQN."""

import time

import numpy as np
import pytest
from deltanet.pysim import (
    Conv2dLayer,
    DeltaNetwork,
    DenseLayer,
    LayerParams,
    Model,
    NetworkConfig,
    load_model,
    save_model,
)
from deltanet.pysim.config import default_acc_bits, layer_from_dict
from deltanet.pysim.fixed import fmt
from hypothesis import given, settings
from hypothesis import strategies as st

SEEDS = st.integers(0, 10_000)


# ---- model builders -------------------------------------------------------------------------
def conv_net(specs, *, n_dense=(), input_fmt="SQ8.8", weight_fmt="SQ2.6", act_fmt="SQ8.8",
             thresholds=None, narrow_acc=False, input_scale=()):
    """specs: [(in_ch, in_h, in_w), (out_ch, k, stride, pad), (out_ch, k, stride, pad), ...]
    followed by dense layers of sizes ``n_dense`` (the last layer is linear)."""
    (c, h, w), convs = specs[0], specs[1:]
    layers, in_f = [], fmt(input_fmt)
    n_layers = len(convs) + len(n_dense)
    thr = list(thresholds) if thresholds is not None else [0.0] * n_layers
    for j, (oc, k, s, p) in enumerate(convs):
        wf = fmt(weight_fmt)
        ab = (in_f.frac_bits + wf.frac_bits + 3 if narrow_acc
              else default_acc_bits(in_f, wf, c * k * k))
        last = j == n_layers - 1
        ly = Conv2dLayer(c, h, w, oc, k, s, p, wf, fmt(act_fmt), ab,
                         "identity" if last else "relu", float(thr[j]))
        layers.append(ly)
        c, h, w = ly.out_shape
        in_f = fmt(act_fmt)
    n = layers[-1].n_out if layers else c * h * w
    for j, m in enumerate(n_dense):
        i = len(convs) + j
        wf = fmt(weight_fmt)
        ab = in_f.frac_bits + wf.frac_bits + 3 if narrow_acc else default_acc_bits(in_f, wf, n)
        layers.append(DenseLayer(n, m, wf, fmt(act_fmt), ab,
                                 "identity" if i == n_layers - 1 else "relu", float(thr[i])))
        n, in_f = m, fmt(act_fmt)
    return NetworkConfig(fmt(input_fmt), tuple(layers), input_scale=input_scale)


def random_params(cfg, seed, *, sparsity=0.5, scale=0.5):
    rng = np.random.default_rng(seed)
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=ly.weight_shape) * scale).astype(np.float32)
        b = (rng.normal(size=ly.bias_shape) * 0.2).astype(np.float32)
        params.append(LayerParams(w, b, rng.random(ly.weight_shape) >= sparsity))
    return Model(cfg, tuple(params), {"env_id": "ALE/Pong-v5"})


def walk(rng, steps, n, scale=2.0, p_change=0.4):
    """Observations where only some inputs change from one step to the next (like frames)."""
    x = rng.normal(size=n) * scale
    out = []
    for _ in range(steps):
        change = rng.random(n) < p_change
        x = x + change * rng.normal(size=n) * 0.3 * scale
        out.append(x[None].copy())
    return out


# ---- independent references (scalar loops, Python ints) -------------------------------------
def dense_conv_loops(x, W, b, s, p):
    """x: (C, H, W) ints; W: (O, C, k, k) ints; b: (O,) -> (O, oh, ow) ints, explicit loops."""
    C, H, Wd = x.shape
    O, _, k, _ = W.shape
    oh, ow = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    out = np.zeros((O, oh, ow), dtype=object)
    for o in range(O):
        for oy in range(oh):
            for ox in range(ow):
                acc = int(b[o])
                for c in range(C):
                    for ky in range(k):
                        for kx in range(k):
                            y, xx = oy * s + ky - p, ox * s + kx - p
                            if 0 <= y < H and 0 <= xx < Wd:
                                acc += int(W[o, c, ky, kx]) * int(x[c, y, xx])
                out[o, oy, ox] = acc
    return out


def finish(cfg, i, acc):
    """wrap -> requantize -> activation, through the FixedFormat methods (not _FloatRequant)."""
    ly, af = cfg.layers[i], cfg.acc_fmt(i)
    acc = af.handle_overflow(np.array([int(v) for v in acc], dtype=np.int64))
    y = ly.out_fmt.requantize(acc, af.frac_bits)
    return acc, (np.maximum(y, 0) if ly.activation == "relu" else y)


def dense_reference(m, x0):
    """The dense quantized network on one input (raw codes), with loop convs."""
    cfg, x = m.config, np.asarray(x0, dtype=np.int64)
    for i, ly in enumerate(cfg.layers):
        if ly.kind == "conv2d":
            acc = dense_conv_loops(x.reshape(ly.in_shape), m.w_raw[i], m.b_raw[i], ly.stride,
                                   ly.padding).reshape(-1)
        else:
            acc = [int(m.b_raw[i][r]) + sum(int(m.w_raw[i][r, j]) * int(x[j])
                                            for j in range(ly.n_in)) for r in range(ly.n_out)]
        _, x = finish(cfg, i, acc)
    return x


class EventScatter:
    """Brute-force delta network: each event scattered to its outputs one tap at a time."""

    def __init__(self, m, thr_raw):
        self.m, self.thr = m, thr_raw
        cfg = m.config
        self.x_hat = [[0] * ly.n_in for ly in cfg.layers]
        self.acc = []
        for i, ly in enumerate(cfg.layers):
            b = [int(v) for v in m.b_raw[i]]
            self.acc.append([v for v in b for _ in range(ly.out_h * ly.out_w)]
                            if ly.kind == "conv2d" else b)
        self.t = 0

    def step(self, x):
        cfg, m = self.m.config, self.m
        x = [int(v) for v in x]
        counts = []
        for i, ly in enumerate(cfg.layers):
            W, ev, sig = m.w_raw[i], 0, 0
            for j in range(ly.n_in):
                d = x[j] - self.x_hat[i][j]
                if not (d != 0 and (abs(d) >= self.thr[i] or self.t == 0)):
                    continue
                ev += 1
                self.x_hat[i][j] = x[j]
                if ly.kind == "dense":
                    for r in range(ly.n_out):
                        if W[r, j] != 0:
                            sig += 1
                            self.acc[i][r] += int(W[r, j]) * d
                    continue
                c, rem = divmod(j, ly.in_h * ly.in_w)
                y, xx = divmod(rem, ly.in_w)
                for o in range(ly.out_ch):
                    for ky in range(ly.kernel):
                        for kx in range(ly.kernel):
                            if W[o, c, ky, kx] == 0:
                                continue
                            qy, qx = y + ly.padding - ky, xx + ly.padding - kx
                            if qy < 0 or qx < 0 or qy % ly.stride or qx % ly.stride:
                                continue
                            oy, ox = qy // ly.stride, qx // ly.stride
                            if oy >= ly.out_h or ox >= ly.out_w:
                                continue
                            sig += 1
                            self.acc[i][(o * ly.out_h + oy) * ly.out_w + ox] += \
                                int(W[o, c, ky, kx]) * d
            acc, y = finish(cfg, i, self.acc[i])
            self.acc[i] = [int(v) for v in acc]
            counts.append((ev, sig, ly.dense_mults))
            x = [int(v) for v in y]
        self.t += 1
        return x, counts


# ---- strategies ----------------------------------------------------------------------------
@st.composite
def conv_specs(draw):
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7))
    p = draw(st.integers(0, 1))
    k = draw(st.integers(1, min(h, w) + 2 * p))
    s = draw(st.integers(1, 3))
    oc = draw(st.integers(1, 3))
    specs = [(c, h, w), (oc, k, s, p)]
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if draw(st.booleans()):  # a second conv
        k2 = draw(st.integers(1, min(oh, ow) + 1))
        specs.append((draw(st.integers(1, 3)), k2, draw(st.integers(1, 2)), 1 if k2 > 1 else 0))
    dense = draw(st.sampled_from([(), (3,), (4, 2)]))
    return specs, dense


# ---- properties ----------------------------------------------------------------------------
@given(conv_specs(), SEEDS, st.booleans(),
       st.sampled_from(["SQ2.6", "SQ3.3:trunc:sat"]),
       st.sampled_from(["SQ8.8", "SQ4.4", "SQ6.10:trunc:wrap", "SQ3.5:half_up:sat"]))
@settings(max_examples=40, deadline=None)
def test_threshold_zero_delta_conv_equals_dense_conv(spec, seed, narrow, wf, af):
    specs, dense = spec
    cfg = conv_net(specs, n_dense=dense, input_fmt=af, weight_fmt=wf, act_fmt=af,
                   narrow_acc=narrow)
    m = random_params(cfg, seed, scale=1.5)
    delta, twin = DeltaNetwork(m), DeltaNetwork(m, delta=False)
    rng = np.random.default_rng(seed)
    for obs in walk(rng, 8, cfg.n_in, scale=3.0):
        x = delta.quantize_obs(obs)
        y = delta.step(x)
        np.testing.assert_array_equal(y[0], dense_reference(m, x[0]))
        np.testing.assert_array_equal(y, twin.step(x))


@given(conv_specs(), SEEDS, st.booleans())
@settings(max_examples=40, deadline=None)
def test_delta_conv_outputs_and_counts_equal_event_scatter(spec, seed, narrow):
    specs, dense = spec
    n_layers = len(specs) - 1 + len(dense)
    rng = np.random.default_rng(seed)
    thr = [float(v) for v in rng.choice([0.0, 1 / 64, 0.1, 0.5], size=n_layers)]
    cfg = conv_net(specs, n_dense=dense, thresholds=thr, narrow_acc=narrow)
    m = random_params(cfg, seed, sparsity=0.4, scale=1.0)
    net = DeltaNetwork(m)
    ref = EventScatter(m, [cfg.threshold_raw(i) for i in range(n_layers)])
    for obs in walk(rng, 10, cfg.n_in):
        x = net.quantize_obs(obs)
        y = net.step(x)
        y_ref, counts = ref.step(x[0])
        np.testing.assert_array_equal(y[0], y_ref)
        for i, (ev, sig, dense_mults) in enumerate(counts):
            assert net.last_counts["events"][i, 0] == ev
            assert net.last_counts["significant"][i, 0] == sig
            assert net.last_counts["weight_reads"][i, 0] == sig
            assert net.last_counts["dense"][i, 0] == dense_mults
            assert net.last_events[i][0].sum() == ev


@given(conv_specs(), SEEDS)
@settings(max_examples=20, deadline=None)
def test_conv_batch_equals_single_runs_and_float_twin(spec, seed):
    specs, dense = spec
    cfg = conv_net(specs, n_dense=dense, thresholds=[0.05] * (len(specs) - 1 + len(dense)))
    m = random_params(cfg, seed)
    rng = np.random.default_rng(seed)
    B = 3
    seqs = [walk(rng, 6, cfg.n_in) for _ in range(B)]
    batch = DeltaNetwork(m, batch=B)
    singles = [DeltaNetwork(m) for _ in range(B)]
    m0 = m.replace(config=cfg.with_thresholds([0.0] * len(cfg.layers)))
    fd, fdense = DeltaNetwork(m0, mode="float", batch=B), DeltaNetwork(m0, mode="float",
                                                                        delta=False, batch=B)
    for t in range(6):
        obs = np.concatenate([s[t] for s in seqs])
        y = batch.step(batch.quantize_obs(obs))
        for b in range(B):
            np.testing.assert_array_equal(y[b], singles[b].step(
                singles[b].quantize_obs(seqs[b][t]))[0])
            np.testing.assert_array_equal(batch.last_counts["significant"][:, b],
                                          singles[b].last_counts["significant"][:, 0])
        # float twins: delta with no threshold == dense (float32 rounding aside)
        np.testing.assert_allclose(fd.step(fd.quantize_obs(obs)),
                                   fdense.step(fdense.quantize_obs(obs)), rtol=1e-4, atol=1e-4)


def test_column_nnz_is_the_unrolled_matrix_column():
    cfg = conv_net([(2, 5, 6), (3, 3, 2, 1)])
    m = random_params(cfg, 4, sparsity=0.5)
    ly = cfg.layers[0]
    unrolled = np.zeros((ly.n_out, ly.n_in), dtype=bool)
    for j in range(ly.n_in):
        e = np.zeros(ly.n_in, dtype=np.int64)
        e[j] = 1
        col = dense_conv_loops(e.reshape(ly.in_shape), m.w_raw[0] != 0, np.zeros(3), 2, 1)
        unrolled[:, j] = col.reshape(-1) != 0
    np.testing.assert_array_equal(m.column_nnz(0), unrolled.sum(axis=0))
    assert ly.dense_mults == ly.out_h * ly.out_w * 3 * 3 * 3 * 2


def test_conv_dense_network_saves_and_loads(tmp_path):
    cfg = conv_net([(2, 6, 6), (3, 3, 1, 1), (4, 2, 2, 0)], n_dense=(5, 3),
                   thresholds=[0.0, 0.0625, 0.125, 0.0])
    m = random_params(cfg, 11)
    path = save_model(m, tmp_path / "conv.npz")
    m2 = load_model(path)
    assert m2.config == cfg
    assert m2.config.to_dict() == cfg.to_dict()
    assert [ly.kind for ly in m2.config.layers] == ["conv2d", "conv2d", "dense", "dense"]
    for a, b in zip(m.w_raw, m2.w_raw):
        np.testing.assert_array_equal(a, b)
    a, b = DeltaNetwork(m), DeltaNetwork(m2)
    for obs in walk(np.random.default_rng(1), 6, cfg.n_in):
        np.testing.assert_array_equal(a.step(a.quantize_obs(obs)), b.step(b.quantize_obs(obs)))
        np.testing.assert_array_equal(a.last_counts["significant"],
                                      b.last_counts["significant"])
        assert a.decode(a.last_outputs)[0] in range(3)


def test_conv_config_errors():
    good = {"in_ch": 2, "in_h": 5, "in_w": 5, "out_ch": 3, "kernel": 3, "stride": 1,
            "padding": 0, "weight_fmt": "SQ2.6", "out_fmt": "SQ8.8", "acc_bits": 30}
    ly = Conv2dLayer(**good)
    assert layer_from_dict(ly.to_dict()) == ly
    assert (ly.n_in, ly.n_out, ly.out_h) == (50, 27, 3)
    with pytest.raises(ValueError, match="kernel"):
        Conv2dLayer(**{**good, "kernel": 6})
    with pytest.raises(ValueError, match="stride"):
        Conv2dLayer(**{**good, "stride": 0})
    with pytest.raises(ValueError, match="padding"):
        Conv2dLayer(**{**good, "padding": -1})
    with pytest.raises(ValueError, match="unknown fields"):
        layer_from_dict({**ly.to_dict(), "dilation": 2})
    # conv -> conv must agree on the map shape, not only on the element count
    a = Conv2dLayer(**good)  # -> (3, 3, 3)
    b = Conv2dLayer(**{**good, "in_ch": 1, "in_h": 3, "in_w": 9, "kernel": 1})  # 27 inputs
    with pytest.raises(ValueError, match="maps"):
        NetworkConfig("SQ8.8", (a, b))
    # weights must have the conv shape
    cfg = NetworkConfig("SQ8.8", (a,))
    with pytest.raises(ValueError, match="weight shape"):
        Model(cfg, (LayerParams(np.zeros((27, 50)), np.zeros(3), None),))
    # the exact float64 path refuses products that could exceed 52 bits
    wide = NetworkConfig("SQ16.16", (Conv2dLayer(**{**good, "kernel": 4, "weight_fmt": "SQ8.8",
                                                    "acc_bits": 48}),))
    m = random_params(wide, 0)
    with pytest.raises(ValueError, match="52"):
        DeltaNetwork(m)


def test_nature_dqn_shape_steps(capsys):
    """84x84x4 -> 32@8x8/4 -> 64@4x4/2 -> 64@3x3/1 -> 512 -> 6, random sparse weights."""
    cfg = conv_net([(4, 84, 84), (32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)], n_dense=(512, 6),
                   input_fmt="SQ2.8", thresholds=[2 / 256, 1 / 64, 1 / 64, 1 / 64, 0.0],
                   input_scale=(1 / 255,) * (4 * 84 * 84))
    assert [ly.n_out for ly in cfg.layers] == [32 * 20 * 20, 64 * 9 * 9, 3136, 512, 6]
    dense_total = sum(ly.dense_mults for ly in cfg.layers)
    assert dense_total == 9_342_976 + 512 * 6
    rng = np.random.default_rng(0)
    params = []
    for ly in cfg.layers:
        std = 2.0 / np.sqrt(ly.fan_in)
        params.append(LayerParams((rng.normal(size=ly.weight_shape) * std).astype(np.float32),
                                  (rng.normal(size=ly.bias_shape) * 0.05).astype(np.float32),
                                  rng.random(ly.weight_shape) >= 0.75))
    m = Model(cfg, tuple(params), {"env_id": "ALE/Breakout-v5"})
    net, twin = DeltaNetwork(m), DeltaNetwork(m, delta=False)
    exact = DeltaNetwork(m.replace(config=cfg.with_thresholds([0.0] * 5)))
    # stacked frames: a new frame (a few pixels change) enters channel 3, the others shift
    frames = [rng.integers(0, 256, size=(84, 84)).astype(np.float64)]
    for _ in range(9):
        f = frames[-1].copy()
        idx = rng.integers(0, 84, size=(150, 2))
        f[idx[:, 0], idx[:, 1]] = rng.integers(0, 256, size=150)
        frames.append(f)
    times, sig = [], []
    for t in range(3, len(frames)):
        obs = np.stack(frames[t - 3:t + 1]).reshape(1, -1)
        x = net.quantize_obs(obs)
        t0 = time.perf_counter()
        y = net.step(x)
        times.append(time.perf_counter() - t0)
        sig.append(int(net.last_counts["significant"].sum()))
        np.testing.assert_array_equal(exact.step(x), twin.step(x))
        assert y.shape == (1, 6)
        assert net.last_counts["dense"][:, 0].sum() == dense_total
    assert max(sig[1:]) < sig[0]  # full pass, then delta updates (random weights: not sparse)
    with capsys.disabled():
        print(f"\n[nature-dqn B=1] first step (full pass) {times[0] * 1e3:.1f} ms, "
              f"delta steps {np.mean(times[1:]) * 1e3:.1f} ms/step; significant "
              f"{sig[0]} then ~{int(np.mean(sig[1:]))} of {dense_total} dense")

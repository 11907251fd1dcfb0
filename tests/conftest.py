"""Shared fixtures: random models with odd sizes and format corners."""

import numpy as np
import pytest
from deltanet.pysim import LayerParams, Model, mlp_config


def random_model(seed, sizes=None, *, sparsity=0.5, thresholds=None, weight_fmt="SQ2.6",
                 act_fmt="SQ8.8", input_fmt="SQ8.8", decoder=None, scale=0.5):
    rng = np.random.default_rng(seed)
    sizes = sizes or [int(v) for v in rng.integers(1, 12, size=rng.integers(2, 5))]
    cfg = mlp_config(sizes, input_fmt=input_fmt, weight_fmt=weight_fmt, act_fmt=act_fmt,
                     thresholds=thresholds, decoder=decoder)
    params = []
    for ly in cfg.layers:
        w = (rng.normal(size=(ly.n_out, ly.n_in)) * scale).astype(np.float32)
        b = (rng.normal(size=ly.n_out) * 0.2).astype(np.float32)
        m = rng.random((ly.n_out, ly.n_in)) >= sparsity
        params.append(LayerParams(w, b, m))
    return Model(cfg, tuple(params), {"env_id": "CartPole-v1"})


def random_walk(seed, steps, batch, n, scale=1.0):
    """Correlated observation sequences, like a control task's."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n)) * scale
    out = []
    for _ in range(steps):
        x = x + rng.normal(size=(batch, n)) * 0.1 * scale
        out.append(x.copy())
    return out


@pytest.fixture
def model_factory():
    return random_model

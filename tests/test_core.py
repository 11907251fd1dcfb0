"""The event-driven core (hw.core.DeltaCore) against pysim, step by step, in Amaranth's simulator.

Every step compares the raw outputs (assert_array_equal), the per-layer event and MAC counters
and the ``cycles`` port with ``pysim.DeltaNetwork`` and ``pysim.corecycles.CoreCycleModel``,
through the one step driver (sim/driver.py). Models: the bundled ones, and seeded random ones
of other shapes, formats, rounding and overflow modes, lane counts and observation word sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator
from deltanet.hw.core import DeltaCore
from deltanet.pysim import (
    Conv2dLayer,
    DeltaNetwork,
    DenseLayer,
    LayerParams,
    Model,
    NetworkConfig,
    load_model,
    mlp_config,
)
from deltanet.pysim.config import default_acc_bits
from deltanet.pysim.corecycles import CoreCycleModel
from deltanet.pysim.coreplan import CorePlan
from deltanet.pysim.fixed import fmt
from deltanet.sim.driver import AmaranthIO, CoreDesign, StepDriver

MODELS = Path(__file__).resolve().parents[1] / "deltanet" / "models"


def design_of(top: DeltaCore) -> CoreDesign:
    cfg = top.model.config
    ports = top.port_widths()
    aw = ports["obs__payload"][1] - top.obs_words * cfg.input_fmt.width
    # the port's address width must be the one the design's fields imply (from_json checks)
    return CoreDesign.from_json({
        "n_layers": top.n_layers, "n_in": cfg.n_in, "n_out": cfg.n_out,
        "in_width": cfg.input_fmt.width, "out_width": cfg.output_fmt.width,
        "obs_words": top.obs_words, "obs_addr_width": aw, "lanes": top.lanes,
        "thr_width": ports["thr_data"][1]})


def observations(n_in: int, steps: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """A smooth random walk (consecutive observations correlate, as in control tasks)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_in) * scale
    out = []
    for _ in range(steps):
        x = x + 0.1 * scale * rng.normal(size=n_in)
        out.append(x.copy())
    return np.array(out)


def run_core(model: Model, lanes: int, obs: np.ndarray, *, obs_words=None, episode_starts=(0,),
             thr_writes=None, writes="changed") -> list:
    """Run ``obs`` through the core and pysim; returns one dict per step with both sides.

    ``thr_writes``: {step: [(layer, raw)]} threshold writes before that step."""
    top = DeltaCore(model, lanes=lanes, obs_words=obs_words)
    cm = CoreCycleModel(model, lanes, top.obs_words)
    net = DeltaNetwork(model)
    thr_writes = thr_writes or {}
    rows = []

    async def bench(ctx):
        io = AmaranthIO(ctx, top)
        drv = StepDriver(design_of(top), writes=writes)
        for t, ob in enumerate(obs):
            first = t in episode_starts
            rescan = False
            for layer, raw in thr_writes.get(t, []):
                await drv.write_threshold(io, layer, raw)
                net.set_threshold_raw(layer, raw)
                rescan = True
            if first:
                net.reset()
            x = net.quantize_obs(ob[None])[0]
            hw = await drv.step(io, x, first, cm.max_cycles() + 10)
            y = net.step(x[None])[0]
            c = net.last_counts
            rows.append({
                "hw": hw,
                "out": y,
                "events": [int(v) for v in c["events"][:, 0]],
                "macs": [int(v) for v in c["significant"][:, 0]],
                "cycles": cm.schedule(net.last_events, first, rescan).cycles,
            })

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return rows


def check(rows: list) -> None:
    assert rows
    for t, r in enumerate(rows):
        hw = r["hw"]
        assert not hw.get("timeout"), f"step {t}: no done"
        np.testing.assert_array_equal(hw["out"], r["out"], err_msg=f"step {t} outputs")
        assert hw["events"] == r["events"], f"step {t} events"
        assert hw["macs"] == r["macs"], f"step {t} MACs"
        assert hw["cycles"] == r["cycles"], f"step {t} cycles"


@pytest.mark.parametrize("name,lanes", [("cartpole", 4), ("cartpole", 3), ("pendulum", 2),
                                        ("mountaincar", 1), ("lunarlander", 5)])
def test_bundled_models_bit_exact_and_cycles(name, lanes):
    model = load_model(MODELS / f"{name}.npz")
    obs = observations(model.config.n_in, 24, seed=lanes)
    rows = run_core(model, lanes, obs, episode_starts=(0, 13))
    check(rows)
    # the work moved: not every step is an empty one
    assert sum(sum(r["macs"]) for r in rows[1:]) > 0


def test_threshold_writes_rescan_and_all_writes():
    model = load_model(MODELS / "cartpole.npz")
    obs = observations(model.config.n_in, 16, seed=7)
    writes = {4: [(1, 0)], 8: [(0, 1 << 20), (2, 3)], 11: [(0, 1)]}
    rows = run_core(model, 4, obs, thr_writes=writes, writes="all")
    check(rows)


def random_model(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    sizes = [int(rng.integers(1, 9))] + [int(rng.integers(1, 20)) for _ in range(n)]
    rounding = ["trunc", "half_up", "half_even"][seed % 3]
    overflow = ["sat", "wrap"][seed % 2]
    act = f"SQ{int(rng.integers(3, 6))}.{int(rng.integers(4, 9))}:{rounding}:{overflow}"
    weight = f"SQ{int(rng.integers(1, 3))}.{int(rng.integers(3, 7))}"
    cfg = mlp_config(sizes, input_fmt=f"SQ4.{int(rng.integers(4, 10))}", weight_fmt=weight,
                     act_fmt=act, thresholds=[float(rng.choice([0.0, 0.02, 0.1]))
                                              for _ in range(n)])
    params = []
    for ly in cfg.layers:
        w = rng.normal(size=ly.weight_shape).astype(np.float32)
        mask = rng.random(ly.weight_shape) > rng.choice([0.0, 0.5, 0.9])
        params.append(LayerParams(w, rng.normal(size=ly.bias_shape).astype(np.float32) * 0.3,
                                  mask))
    return Model(cfg, tuple(params), {"env_id": "random"})


@pytest.mark.parametrize("seed", range(8))
def test_random_models_lanes_and_word_sizes(seed):
    model = random_model(seed)
    rng = np.random.default_rng(100 + seed)
    lanes = int(rng.integers(1, 7))
    obs_words = int(rng.integers(1, model.config.n_in + 1))
    obs = observations(model.config.n_in, 14, seed=seed, scale=2.0)
    rows = run_core(model, lanes, obs, obs_words=obs_words, episode_starts=(0, 9))
    check(rows)


def random_conv_model(seed: int) -> Model:
    """1-2 conv layers of random geometry (kernel, stride, padding; odd sizes), then 0-2 dense
    layers (the last layer may be a conv); random formats, thresholds and pruning, with an
    all-zero conv column and an all-zero input channel."""
    rng = np.random.default_rng(1000 + seed)
    rounding = ["trunc", "half_up", "half_even"][seed % 3]
    overflow = ["sat", "wrap"][(seed // 3) % 2]
    inf = fmt(f"SQ4.{int(rng.integers(3, 7))}")
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(3, 10)), int(rng.integers(3, 10))
    layers, in_f = [], inf
    n_conv, n_dense = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    for j in range(n_conv):
        k = int(rng.integers(1, min(h, w) + 1))
        s_ = int(rng.integers(1, 4))
        p = int(rng.integers(0, min(2, k - 1) + 1)) if k > 1 else 0
        oc = int(rng.integers(1, 7))
        wf = fmt(f"SQ2.{int(rng.integers(3, 7))}")
        af = fmt(f"SQ{int(rng.integers(3, 6))}.{int(rng.integers(3, 7))}:{rounding}:{overflow}")
        last = j == n_conv - 1 and n_dense == 0
        ly = Conv2dLayer(c, h, w, oc, k, s_, p, wf, af, default_acc_bits(in_f, wf, c * k * k),
                         "identity" if last else "relu",
                         float(rng.choice([0.0, 0.05, 0.2])))
        layers.append(ly)
        c, h, w = ly.out_shape
        in_f = af
    n = c * h * w
    for j in range(n_dense):
        m_ = int(rng.integers(1, 9))
        wf = fmt("SQ2.5")
        af = fmt(f"SQ5.5:{rounding}:{overflow}")
        layers.append(DenseLayer(n, m_, wf, af, default_acc_bits(in_f, wf, n),
                                 "identity" if j == n_dense - 1 else "relu",
                                 float(rng.choice([0.0, 0.1]))))
        n, in_f = m_, af
    cfg = NetworkConfig(inf, tuple(layers))
    params = []
    for ly in cfg.layers:
        wt = rng.normal(size=ly.weight_shape).astype(np.float32)
        mask = rng.random(ly.weight_shape) > rng.choice([0.0, 0.4, 0.8])
        params.append(LayerParams(wt, rng.normal(size=ly.bias_shape).astype(np.float32) * 0.3,
                                  mask))
    p0 = params[0].mask
    if p0.shape[1] > 1:
        p0[:, 0] = False  # input channel 0 feeds nothing: its events never reach the MAC
    if p0.shape[-1] > 1:
        p0[:, -1, 0, 1] = False  # an empty column: its positions cost one cycle each
    return Model(cfg, tuple(params), {"env_id": "random"})


def sparse_observations(n_in: int, steps: int, seed: int, p_change: float = 0.2):
    """Observations where each step changes a random fraction of the inputs (frames)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_in) * 2.0
    out = []
    for _ in range(steps):
        ch = rng.random(n_in) < p_change
        x = np.where(ch, x + rng.normal(size=n_in) * 0.5, x)
        out.append(x.copy())
    return np.array(out)


@pytest.mark.parametrize("seed", range(10))
def test_conv_models_bit_exact_and_cycles(seed):
    model = random_conv_model(seed)
    rng = np.random.default_rng(2000 + seed)
    lanes = int(rng.integers(1, 6))
    obs_words = int(rng.integers(1, min(model.config.n_in, 12) + 1))
    obs = sparse_observations(model.config.n_in, 12, seed=seed)
    rows = run_core(model, lanes, obs, obs_words=obs_words, episode_starts=(0, 8))
    check(rows)
    assert sum(sum(r["macs"]) for r in rows[1:]) > 0


def test_plan_rejects_bad_parameters():
    cp = load_model(MODELS / "cartpole.npz")
    with pytest.raises(ValueError, match="lanes must be in"):
        CorePlan.build(cp, 0, 4)
    with pytest.raises(ValueError, match="lanes must be in"):
        DeltaCore(cp, lanes=0)
    with pytest.raises(TypeError, match="obs_words must be an integer"):
        DeltaCore(cp, lanes=2, obs_words=2.5)

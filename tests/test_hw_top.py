"""DeltanetTop against pysim, bit for bit: outputs, action, counters and cycles (port and clock)."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from hw.top import DeltanetTop
from pysim import CycleModel, DeltaNetwork, load_model
from pysim import cycles as pysim_cycles
from tests.hw_util import Step, assert_same, random_model, run_ref, run_top, smooth_inputs

MODELS = "deltanet/models"


ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted((ROOT / MODELS).glob("*.npz"))
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _cartpole():
    return load_model(ROOT / MODELS / "cartpole.npz")


def test_cycle_constants_match_pysim():
    assert DeltanetTop.LAYER_OVERHEAD == pysim_cycles.LAYER_OVERHEAD
    assert DeltanetTop.STEP_OVERHEAD == pysim_cycles.STEP_OVERHEAD
    assert pysim_cycles.LAYER_OVERHEAD <= 6


def _episode_steps(model, *, episodes=2, max_steps=25, seed=0):
    """Layer-0 inputs of seeded gymnasium episodes, the reference choosing the actions.

    The hardware is then run over the same inputs in one simulation; since its outputs must
    equal the reference's at every step, it would have chosen the same actions (a difference
    fails the comparison at the first step where it occurs)."""
    gym = pytest.importorskip("gymnasium")
    steps = []
    net = DeltaNetwork(model)
    for ep in range(episodes):
        env = gym.make(model.meta["env_id"])
        obs, _ = env.reset(seed=seed + ep)
        net.reset()
        for t in range(max_steps):
            x = net.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
            steps.append(Step(x, first=(t == 0)))
            action = net.decode(net.step(x[None]))[0]
            obs, _, term, trunc, _ = env.step(action)
            if term or trunc:
                break
        env.close()
    return steps


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
def test_cartpole_episodes(lanes):
    model = _cartpole()
    steps = _episode_steps(model, episodes=2, max_steps=20 if lanes > 1 else 12)
    hw = run_top(DeltanetTop(model=model, lanes=lanes), steps)
    ref = run_ref(model, lanes, steps)
    assert_same(hw, ref)
    # the bundled model must exercise the datapath: some events and MACs in every layer
    assert sum(r.macs.sum() for r in ref) > 0


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_every_bundled_model_episode(path):
    model = load_model(path)
    steps = _episode_steps(model, episodes=1, max_steps=10, seed=7)
    lanes = 4
    hw = run_top(DeltanetTop(model=model, lanes=lanes), steps)
    ref = run_ref(model, lanes, steps)
    assert_same(hw, ref, check_action=model.config.decoder.kind == "argmax")


def test_cartpole_back_to_back_and_idle_gaps():
    model = _cartpole()
    rng = np.random.default_rng(1)
    steps = smooth_inputs(rng, model.config.input_fmt, model.config.n_in, 12, scale=0.3,
                          first_every=5)
    top = DeltanetTop(model=model, lanes=3)
    assert_same(run_top(top, steps, idle_before=2), run_ref(model, 3, steps))


def test_first_step_after_rst_is_full_pass_without_first():
    """After rst the state is the reset state: the first step is a full pass (pysim: steps==0)."""
    model = _cartpole()
    rng = np.random.default_rng(2)
    steps = smooth_inputs(rng, model.config.input_fmt, model.config.n_in, 4)
    steps[0].first = False
    top = DeltanetTop(model=model, lanes=2)
    assert_same(run_top(top, steps), run_ref(model, 2, steps))


def test_threshold_write_changes_behaviour_as_pysim_predicts():
    model = _cartpole()
    cfg = model.config
    rng = np.random.default_rng(3)
    steps = smooth_inputs(rng, cfg.input_fmt, cfg.n_in, 14, scale=0.3)
    # step 4: layer 0 never fires; step 8: layer 1 fires on every change; step 11: huge again
    huge = (1 << top_thr_width(model)) - 1
    steps[4].thr = [(0, huge)]
    steps[8].thr = [(1, 0), (0, cfg.threshold_raw(0))]
    steps[11].thr = [(2, huge)]
    top = DeltanetTop(model=model, lanes=2)
    hw = run_top(top, steps)
    ref = run_ref(model, 2, steps)
    assert_same(hw, ref)
    assert all(r.events[0] == 0 for r in ref[4:8])  # the write really changed something
    # and the default-threshold run differs from the written one
    base = run_ref(model, 2, [Step(s.x, s.first) for s in steps])
    assert any((a.events != b.events).any() for a, b in zip(base, ref))


def top_thr_width(model):
    return max(model.config.in_fmt(i).width for i in range(len(model.config.layers)))


RANDOM_CASES = [
    # sizes, lanes, kwargs for mlp_config, thresholds
    ([5, 7, 3], 1, {}, [0.0, 0.0, 0.0]),
    ([3, 9, 6, 2], 3, {"input_fmt": "SQ4.4", "weight_fmt": "SQ2.3", "act_fmt": "SQ3.5:trunc:sat"},
     [0.25, 0.125, 0.0]),
    ([6, 11, 4], 4, {"input_fmt": "SQ2.6", "weight_fmt": ["SQ1.5", "SQ3.3"],
                         "act_fmt": "SQ2.4:half_up:wrap", "out_fmt": "SQ5.3:trunc:wrap"},
     [0.03125, 0.5, 0.25]),
    ([4, 13, 5], 8, {"input_fmt": "SQ3.5", "weight_fmt": "SQ2.6", "act_fmt": "SQ4.4",
                         "acc_bits": [13, 12]},  # narrow accumulators: wrap-around
     [0.0, 100.0]),  # the last threshold is huge: never fires after the full pass
    ([7, 5, 5, 3], 5, {"input_fmt": "SQ6.2", "weight_fmt": "SQ1.7", "act_fmt": "SQ6.10:half_up:sat",
                           "out_fmt": "SQ1.3:half_even:sat"},  # output saturates
     [0.5, 0.0, 0.0]),
    ([2, 17, 1], 6, {"input_fmt": "SQ5.3", "weight_fmt": "SQ3.1", "act_fmt": "SQ8.0",
                         "out_fmt": "SQ2.6"},  # out.frac > acc.frac: exact left shift
     [0.0, 1.0]),
]


@pytest.mark.parametrize("case", range(len(RANDOM_CASES)))
def test_random_models(case):
    sizes, lanes, kw, thr = RANDOM_CASES[case]
    rng = np.random.default_rng(100 + case)
    model = random_model(rng, sizes, density=0.55, weight_scale=1.5, bias_scale=1.0,
                         thresholds=thr, **kw)
    cfg = model.config
    steps = smooth_inputs(rng, cfg.input_fmt, cfg.n_in, 16, scale=0.6, first_every=9)
    steps[3].x[:] = cfg.input_fmt.min_raw  # the most negative input
    steps[4].x[:] = cfg.input_fmt.max_raw
    top = DeltanetTop(model=model, lanes=lanes)
    hw = run_top(top, steps)
    ref = run_ref(model, lanes, steps)
    assert_same(hw, ref)
    cm = CycleModel(model, lanes)
    assert cm.maxlen(0).shape == (sizes[0],)


def test_ties_go_to_lowest_index():
    """All-zero weights and equal biases: every output equal, action 0."""
    rng = np.random.default_rng(5)
    model = random_model(rng, [3, 4], density=0.0, bias_scale=0.0)
    steps = [Step(np.array([1, -2, 3]), first=True), Step(np.array([0, 0, 0]))]
    hw = run_top(DeltanetTop(model=model, lanes=2), steps)
    assert [h.action for h in hw] == [0, 0]
    assert_same(hw, run_ref(model, 2, steps))


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"lanes": 0}, ValueError, "lanes"),
    ({"lanes": 65}, ValueError, "lanes"),
    ({"lanes": 2.0}, TypeError, "lanes"),
    ({"lanes": True}, TypeError, "lanes"),
])
def test_bad_lanes(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        DeltanetTop(model=_cartpole(), **kwargs)
    gc.collect()  # half-built components warn "never used" here, where that is ignored


def test_bad_model():
    with pytest.raises(TypeError, match="model"):
        DeltanetTop(model="cartpole.npz", lanes=2)
    with pytest.raises(TypeError):
        DeltanetTop(_cartpole(), 2)  # keyword-only
    gc.collect()


def test_derived_properties():
    model = _cartpole()
    top = DeltanetTop(model=model, lanes=4)
    top._MustUse__silence = True
    cfg = model.config
    assert top.in_width == cfg.input_fmt.width
    assert top.out_width == cfg.output_fmt.width
    assert top.action_width == max(1, (cfg.n_out - 1).bit_length())
    cm = CycleModel(model, 4)
    assert top.min_step_cycles == int(cm.step_cycles([np.zeros((1, ly.n_in), bool)
                                                      for ly in cfg.layers])[0])
    assert top.max_step_cycles == int(cm.step_cycles([np.ones((1, ly.n_in), bool)
                                                      for ly in cfg.layers])[0])
    w = top.port_widths()
    assert w["obs"] == ("input", cfg.n_in * cfg.input_fmt.width)
    assert w["out"] == ("output", cfg.n_out * cfg.output_fmt.width)
    for i in range(len(cfg.layers)):
        assert w[f"events_{i}"] == ("output", 32) and w[f"macs_{i}"] == ("output", 32)
    for name in ("start", "first", "ready", "done", "cycles", "action", "thr_we", "thr_sel",
                 "thr_data"):
        assert name in w

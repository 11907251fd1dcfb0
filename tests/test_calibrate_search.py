"""The calibration search's options (the uniform phase, the grid's density), the rollouts split
over Dask workers, and the weights checksum that identifies a model whatever its provenance."""

from __future__ import annotations

import numpy as np
import pytest
from deltanet.pysim import LayerParams, load_model, weights_checksum

from deltanet import MODELS_DIR
from deltanet.calibrate import calibrate, threshold_grid
from deltanet.cluster import dask_client
from deltanet.rollout import run_episodes


@pytest.fixture(scope="module")
def cartpole():
    return load_model(MODELS_DIR / "cartpole.npz")


def test_rollouts_split_over_workers_equal_one_process(cartpole):
    """Seven episodes split over two worker processes give the very returns, lengths and
    per-layer counts, in seed order, of one process playing them all."""
    one = run_episodes(cartpole, 7, 11, progress=False, max_steps=120, epsilon=0.1)
    with dask_client(workers=2) as client:
        split = run_episodes(cartpole, 7, 11, progress=False, max_steps=120, epsilon=0.1,
                             client=client)
        with pytest.raises(ValueError, match="on_step"):
            run_episodes(cartpole, 2, 0, progress=False, client=client,
                         on_step=lambda *a: None)
    np.testing.assert_array_equal(split.returns, one.returns)
    np.testing.assert_array_equal(split.lengths, one.lengths)
    for k in one.sums:
        np.testing.assert_array_equal(split.sums[k], one.sums[k])
    assert len(set(one.lengths)) > 1  # the episodes differ, so the order is checked


def test_uniform_phase_raises_every_layer_together_then_the_search_goes_on(cartpole):
    """uniform_first: the accepted uniform settings put every layer at its largest grid point
    not above the coarsest layer's point, each needs no more multiplications than the one
    before; the grid has one point per octave; the chosen setting passes held out."""
    _, rep = calibrate(cartpole, episodes=20, uniform_first=True, steps_per_octave=1,
                       max_evals=16, log=lambda *a: None)
    grids = threshold_grid(cartpole, 1)
    coarse = max(range(len(grids)), key=lambda i: cartpole.config.in_fmt(i).lsb)
    uni = [c for c in rep["candidates"] if c["phase"] == "uniform"]
    assert [c["status"] for c in uni].count("accepted") >= 2
    for c in uni:
        u = c["thresholds"][coarse]
        assert c["thresholds"] == [max(g for g in grid if g <= u * (1 + 1e-9))
                                   for grid in grids]
    acc = [c for c in uni if c["status"] == "accepted"]
    assert all(b["significant"] <= a["significant"] for a, b in zip(acc, acc[1:]))
    for lsb in rep["thresholds_lsb"]:
        assert lsb == 0 or lsb & (lsb - 1) == 0  # one grid point per octave: powers of two
    assert rep["search"] == {"uniform_first": True, "steps_per_octave": [1], "max_evals": 16}
    assert rep["holdout"]["mean_return"] >= rep["target"]["holdout"]
    assert rep["evaluations"] <= 16 + 2 * len(grids) + 2  # the budget, then the held-out check


def test_a_finer_grid_continues_and_kept_evaluations_are_not_played_again(cartpole,
                                                                          monkeypatch):
    """steps_per_octave (1, 2): the search goes on from the coarse result on the finer grid,
    so it needs no more multiplications at selection; with ``evals`` kept, the same search
    again plays nothing and chooses the same."""
    import deltanet.calibrate as cal

    kw = {"episodes": 20, "uniform_first": True, "max_evals": 60, "log": lambda *a: None}
    _, coarse = calibrate(cartpole, steps_per_octave=1, **kw)
    kept = {}
    logged = []
    _, fine = calibrate(cartpole, steps_per_octave=(1, 2), evals=kept,
                        **{**kw, "log": logged.append})
    assert any("refined to 2 steps per octave" in m for m in logged)
    assert fine["select"]["significant"] <= coarse["select"]["significant"]
    assert len(kept) == fine["evaluations"] + 2  # and the two references

    def no_play(*a, **k):
        raise AssertionError("a kept evaluation was played again")

    monkeypatch.setattr(cal, "evaluate", no_play)
    _, again = calibrate(cartpole, steps_per_octave=(1, 2), evals=kept, **kw)
    assert again["thresholds"] == fine["thresholds"]


@pytest.mark.parametrize("bad", [0, (2, 3), ()])
def test_calibrate_refuses_a_grid_without_points_or_not_nested(cartpole, bad):
    with pytest.raises(ValueError, match="steps_per_octave"):
        calibrate(cartpole, episodes=20, steps_per_octave=bad)


def test_weights_checksum_ignores_provenance_only(cartpole):
    """Re-exported with other provenance, a model keeps its weights checksum (its file checksum
    is another); one weight changed, the checksum changes."""
    other = cartpole.replace(meta={**cartpole.meta, "provenance": {"train_seconds": 9.1}})
    assert weights_checksum(other) == weights_checksum(cartpole)
    p = cartpole.params[0]
    w = p.weight.copy()
    w.flat[int(np.flatnonzero(p.mask)[0])] += 0.5
    bumped = cartpole.replace(params=[LayerParams(w, p.bias, p.mask), *cartpole.params[1:]])
    assert weights_checksum(bumped) != weights_checksum(cartpole)

"""`deltanet eval` end to end on the bundled CartPole model, and its errors."""

import json

import pytest
from deltanet.pysim import load_model, save_model

from deltanet import bundled_model
from deltanet.cli import main


def test_eval_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--model", str(bundled_model("cartpole")), "--episodes", "3",
               "--seed", "5", "--json", str(out), "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("mean_return", "std_return", "episodes", "steps", "dense_mults_per_step",
                "significant_mults_per_step", "reduction", "per_layer"):
        assert key in r
    assert r["episodes"] == 3 and r["steps"] > 0
    assert r["dense_mults_per_step"] == sum(p["dense_mults_per_step"] for p in r["per_layer"])
    assert r["reduction"] == pytest.approx(r["dense_mults_per_step"]
                                           / r["significant_mults_per_step"])
    # same command, same seed -> same numbers
    out2 = tmp_path / "r2.json"
    main(["eval", "--model", str(bundled_model("cartpole")), "--episodes", "3", "--seed", "5",
          "--json", str(out2), "--no-progress"])
    assert json.loads(out2.read_text())["returns"] == r["returns"]


def test_eval_dense_float(tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(bundled_model("cartpole")), "--episodes", "2",
                 "--mode", "float", "--dense", "--json", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["mode"] == "float" and r["delta"] is False


def test_eval_epsilon_greedy_is_seeded_and_batch_free(tmp_path):
    """--epsilon: random actions at that rate, the same whatever the batching; 0 is greedy."""
    from deltanet.rollout import run_episodes

    m = load_model(bundled_model("cartpole"))
    greedy = run_episodes(m, 3, 7, progress=False)
    assert run_episodes(m, 3, 7, progress=False, epsilon=0.0).returns.tolist() == \
        greedy.returns.tolist()
    one = run_episodes(m, 3, 7, progress=False, epsilon=1.0, batch=1)
    three = run_episodes(m, 3, 7, progress=False, epsilon=1.0, batch=3)
    assert one.returns.tolist() == three.returns.tolist()
    # uniform random play drops CartPole far below the trained policy's 500 (a random policy
    # lasts about 22 steps on average)
    assert one.returns.mean() < 100 < greedy.returns.mean()
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(bundled_model("cartpole")), "--episodes", "3",
                 "--seed", "7", "--epsilon", "1", "--json", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["epsilon"] == 1.0 and r["returns"] == one.returns.tolist()
    with pytest.raises(ValueError, match="epsilon"):
        run_episodes(m, 1, 0, progress=False, epsilon=1.5)


def test_eval_refuses_mismatched_env(tmp_path, capsys):
    m = load_model(bundled_model("cartpole"))
    bad = m.replace(meta={**m.meta, "env_id": "MountainCar-v0"})
    save_model(bad, tmp_path / "bad.npz")
    rc = main(["eval", "--model", str(tmp_path / "bad.npz"), "--episodes", "1",
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "4 inputs" in err and "MountainCar-v0" in err


def test_eval_missing_file(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope.npz"), "--episodes", "1"]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_eval_bad_episodes(capsys):
    assert main(["eval", "--model", str(bundled_model("cartpole")), "--episodes", "0"]) == 2
    assert "--episodes" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "eval" in capsys.readouterr().out

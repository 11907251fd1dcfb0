"""Closed loop on the sequential core's Verilog (``deltanet_seq``): the hardware chooses the
actions, pysim checks every step bit for bit (outputs, action, per-layer events and MACs, the
cycles port against ``SeqCycleModel`` and the clock edges elapsed).

A small Nature-DQN (random SB3 weights, one-shot pruned to 95 %, quantized for Atari) runs 100
consecutive BreakoutNoFrameskip-v4 steps on Verilator through ``deltanet verify``; the same
design with a reference whose weight differs must FAIL at the predicted first mismatch; Icarus
runs the same design for two steps (a full pass and a delta step); a dense-only model runs on
the sequential core with ``--arch seq``. The runner generates the seq design with its memory
contents in ``$readmemh`` files; a test checks they hold exactly the inline contents. The DQN is made and its design generated once per
session; builds are cached by the runner (build/sim), generations by the design key
(build/closed_loop), so a second session reuses both.
"""

import json
import re

import numpy as np
import pytest

from deltanet import MODELS_DIR
from deltanet.cli import main
from deltanet.closed_loop import resolve_arch, work_dir
from pysim import DeltaNetwork, LayerParams, load_model, save_model
from sim.tools import have

ATARI = "BreakoutNoFrameskip-v4"
LANES = 4
SPARSITY = 0.95


@pytest.fixture(scope="session")
def dqn_path(tmp_path_factory):
    """A quantized Nature-DQN for Breakout (random weights: formats from frames an untrained
    agent sees; what is checked is the hardware against pysim, not the policy)."""
    from stable_baselines3 import DQN

    from deltanet.atari import export_dqn_cnn, make_train_env, quantize_atari, record_frames
    from deltanet.prune import prune_oneshot

    env = make_train_env(ATARI, 1, 0)
    agent = DQN("CnnPolicy", env, buffer_size=1000, learning_starts=10**9, device="cpu", seed=0)
    mod = export_dqn_cnn(agent, ATARI, {"steps": 0})
    env.close()
    frames = record_frames(mod, episodes=1, max_steps=60, max_frames=60)
    q = quantize_atari(prune_oneshot(mod, SPARSITY, lanes=LANES), frames)
    q = q.replace(config=q.config.with_thresholds([0.001] * len(q.config.layers)))
    return save_model(q, tmp_path_factory.mktemp("dqn") / "breakout_dqn_q.npz")


@pytest.fixture(scope="session")
def dqn_design(dqn_path):
    """(model, design_dir): the design ``deltanet verify`` generates for the model (same
    folder and key, so the verify run below finds it generated)."""
    from sim.runner import prepare

    model = load_model(dqn_path)
    design_dir, _ = prepare(model, LANES, work_dir(model, LANES, "seq8-clean"), arch="seq")
    return model, design_dir


def test_memory_files_hold_the_inline_contents(tmp_path):
    """``generate_seq(..., memory_files=True)`` (what the runner builds) is the inline design
    with each memory's ``initial`` block moved into a ``$readmemh`` file, word for word."""
    from hw.generate_seq import TOPLEVEL, generate_seq
    from tests.test_seqcore import conv_dense_model

    model = conv_dense_model()
    inline = generate_seq(model, 3, tmp_path / "inline", obs_words=5)["verilog"].read_text()
    p = generate_seq(model, 3, tmp_path / "files", obs_words=5, memory_files=True)
    text = p["verilog"].read_text()
    names = json.loads(p["json"].read_text())["memory_init_files"]
    assert "$readmemh" not in inline and "initial begin" not in text
    assert len(names) == inline.count("initial begin") == text.count("$readmemh") > 0
    back = []
    for line in text.split("\n"):
        m = re.fullmatch(r'  initial \$readmemh\("(\S+)", (\w+), 0, (\d+)\);', line)
        if m is None:
            back.append(line)
            continue
        width = int(re.match(r"  reg \[(\d+):0\]", back[-1]).group(1)) + 1
        words = (tmp_path / "files" / m.group(1)).read_text().split()
        assert m.group(1) in names and m.group(1).startswith(TOPLEVEL)
        assert len(words) == int(m.group(3)) + 1
        back += ["  initial begin"] + [f"    {m.group(2)}[{a}] = {width}'h{v};"
                                       for a, v in enumerate(words)] + ["  end"]

    def strip(v):  # the files pad every word to whole hex digits
        return re.sub(r"'h0*([0-9a-f])", r"'h\1", v)

    assert strip("\n".join(back)) == strip(inline)


def test_arch_choice(dqn_path, capsys):
    dqn = load_model(dqn_path)
    cart = load_model(MODELS_DIR / "cartpole.npz")
    assert resolve_arch(dqn) == "seq" and resolve_arch(cart) == "core"
    assert resolve_arch(cart, "seq") == "seq"
    for arch in ("core", "parallel"):
        with pytest.raises(ValueError, match="dense layers only.*--arch seq"):
            resolve_arch(dqn, arch)
    with pytest.raises(ValueError, match="discrete-action"):
        resolve_arch(load_model(MODELS_DIR / "pendulum.npz"), "seq")
    rc = main(["verify", "--model", str(dqn_path), "--arch", "parallel"])
    assert rc == 2 and "dense layers only" in capsys.readouterr().err
    rc = main(["simulate", "--model", str(dqn_path), "--engine", "amaranth"])
    assert rc == 2 and "--engine verilator or icarus" in capsys.readouterr().err


@pytest.mark.verilator
def test_verify_atari_dqn_100_steps_verilator(dqn_design, dqn_path, tmp_path, capsys):
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(dqn_path), "--max-steps", "100", "--seed", "0",
               "--sim", "verilator", "--lanes", str(LANES), "--json", str(out)])
    r = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert rc == 0, r["first_mismatch"]
    assert r["arch"] == "seq" and r["simulator"] == "verilator"
    assert r["steps"] == 100 and r["mismatches"] == 0 and r["first_mismatch"] is None
    assert r["hw_return"] == r["ref_return"] and r["returns_equal"]
    assert "PASS: 100 steps checked on verilator (seq core)" in " ".join(text.split())
    c = r["cycles_per_step"]
    assert c["first"] == c["max"] > c["min"] > 0  # the first step is the full pass + bias init
    assert r["sim_cycles"] >= 100 * c["mean"]  # steps plus the observation writes
    print(f"\nDQN 100 steps: build {r['build_s']:.1f} s (cached: {r['build_cached']}), loop "
          f"{r['wall_s']:.1f} s, {r['env_steps_per_s']:.2f} env steps/s, "
          f"{r['sim_cycles_per_s']:.0f} cycles/s, cycles/step {c}, observation writes/step "
          f"{r['obs_writes_per_step']:.0f}", file=__import__("sys").stderr)


def corrupt_output_weight(model, seed: int):
    """A copy of ``model`` with one output-layer weight negated, chosen so that step 0 of the
    episode reset with ``seed`` must differ: the weight with the largest ``|w * x|`` over the
    output layer's inputs at that step. Returns (copy, output index, clean out, corrupted out).
    """
    from deltanet.envs import make_env

    env = make_env(model.meta["env_id"], seed)()
    obs, _ = env.reset(seed=seed)
    env.close()
    net = DeltaNetwork(model)
    x = net.quantize_obs(np.asarray(obs, dtype=np.float64)[None])
    y = net.step(x)[0]
    last = len(model.config.layers) - 1
    inp = net.x_hat[last][0]  # the output layer's input at step 0 (the full pass)
    w = np.asarray(model.w_raw[last], dtype=np.int64)
    r, j = np.unravel_index(int(np.argmax(np.abs(w * inp[None, :]))), w.shape)
    assert w[r, j] != 0 and inp[j] != 0
    p = model.params[last]
    weight = p.weight.copy()
    weight[r, j] = -weight[r, j]
    params = list(model.params)
    params[last] = LayerParams(weight, p.bias, p.mask)
    bad = model.replace(params=params)
    ybad = DeltaNetwork(bad).step(x)[0]
    assert ybad[r] != y[r]  # precondition: pysim sees the corruption at step 0
    assert np.count_nonzero(np.asarray(bad.w_raw[last])) == np.count_nonzero(w)  # same MACs
    return bad, int(r), y, ybad


@pytest.mark.verilator
def test_corrupted_weight_fails_at_first_mismatch(dqn_design, tmp_path):
    """The design holds the clean weights, the reference one negated output-layer weight: the
    run must FAIL at step 0, output r of the last layer (events and MACs still agree), and stop
    there."""
    from sim.runner import run_closed_loop

    model, design_dir = dqn_design
    bad, r, y, ybad = corrupt_output_weight(model, seed=0)
    ref_path = save_model(bad, tmp_path / "corrupted.npz")
    res = run_closed_loop(design_dir, ref_path, sim="verilator", max_steps=100, seed=0,
                          arch="seq", work_dir=tmp_path / "run")
    assert res["mismatches"] == 1 and res["steps"] == 1 and res["stopped_at_first_mismatch"]
    assert not res["returns_equal"]
    fm = res["first_mismatch"]
    last = len(model.config.layers) - 1
    assert fm == {"episode": 0, "step": 0, "layer": last, "field": "out", "index": r,
                  "hw": int(y[r]), "ref": int(ybad[r])}
    assert res["first_mismatch_text"] == (
        f"episode 0 step 0 layer {last} out[{r}]: expected {int(ybad[r])} (pysim), got "
        f"{int(y[r])} (hardware)")


@pytest.mark.icarus
def test_dqn_icarus_two_steps(dqn_design, dqn_path, tmp_path):
    """Icarus, two steps (a full pass with bias initialisation, then a delta step), writing
    only the observation words that changed."""
    if not have("icarus"):
        pytest.skip("Icarus Verilog is not installed (apt-get install -y iverilog)")
    from sim.runner import run_closed_loop

    _, design_dir = dqn_design
    res = run_closed_loop(design_dir, dqn_path, sim="icarus", max_steps=2, seed=0, arch="seq",
                          work_dir=tmp_path / "run", obs_writes="changed")
    assert res["steps"] == 2 and res["mismatches"] == 0 and res["first_mismatch"] is None
    info = json.loads((design_dir / "deltanet_seq.json").read_text())
    # every word after reset, then only the changed ones: the memory keeps the rest
    assert res["per_step"][0]["writes"] == info["obs_depth"] > res["per_step"][1]["writes"]
    first, second = (s["cycles"] for s in res["per_step"])
    assert first > second  # a full pass with bias init, then a delta step


@pytest.mark.verilator
def test_dense_model_on_seq_core(tmp_path, capsys):
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(MODELS_DIR / "cartpole.npz"), "--arch", "seq",
               "--episodes", "1", "--seed", "3", "--lanes", "3", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0, r["first_mismatch"]
    assert r["arch"] == "seq" and r["mismatches"] == 0 and r["steps"] >= 1
    assert r["hw_return"] == r["ref_return"]
    assert "(seq core)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.parametrize("game", ["breakout", "spaceinvaders"])
def test_bundled_atari_models_100_steps(game, tmp_path):
    """The bundled combined Atari agents, 100 consecutive steps bit-exact on Verilator
    (~1.5 min each; not selected by `make test`)."""
    if not have("verilator"):
        pytest.skip("verilator not found")
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(MODELS_DIR / "atari" / f"{game}.npz"),
               "--max-steps", "100", "--sim", "verilator", "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["steps"] == 100 and res["mismatches"] == 0

"""The event-driven core ``deltanet_core`` on its generated Verilog, closed loop, bit for bit.

* the generator (:func:`hw.generate_core.generate_core`): files, JSON fields, the Verilog
  header, ``$readmemh`` files of their own per lane, identical bytes on two runs;
* Verilator closed loops through the cocotb bench :mod:`sim.bench_core` (the hardware chooses
  the actions; outputs, events, significant MACs, the cycles port and the clock edges elapsed
  checked against pysim and :class:`pysim.corecycles.CoreCycleModel` at every step): the
  bundled CartPole at L = 4 (4 codes per observation word, changed words only) and L = 3 (1
  code per word, every word, two episodes), Pendulum (continuous actions, decoded on the host)
  at L = 2; the per-step records also equal an independent pysim run;
* Icarus (skipped with its reason when ``iverilog`` is absent);
* a design with one corrupted weight must FAIL at the step pysim predicts, naming the field,
  and stop there;
* ``deltanet verify``.

Designs are generated once per session under build/closed_loop (the key ``deltanet verify``
uses, so the CLI test finds them), builds are cached by the runner under build/sim; a corrupted
weight lives in a ``$readmemh`` file, so that design reuses the clean build.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from deltanet.hw.core import DeltaCore
from deltanet.hw.generate_core import TOPLEVEL, design_fields, generate_core
from deltanet.pysim import DeltaNetwork, load_model
from deltanet.pysim.artifact import model_meta
from deltanet.pysim.corecycles import CoreCycleModel
from deltanet.sim.driver import CoreDesign
from deltanet.sim.envs import make_env
from deltanet.sim.tools import have

from deltanet import MODELS_DIR
from deltanet.cli import main
from deltanet.closed_loop import mutate, work_dir

# cores built only to read their fields, or refused by their constructor, are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CARTPOLE = MODELS_DIR / "cartpole.npz"
PENDULUM = MODELS_DIR / "pendulum.npz"


def design(path, lanes: int, obs_words: int | None = None):
    """``(model, design_dir, reference path)`` of the clean core design, as ``deltanet verify``
    generates it."""
    from deltanet.sim.runner import default_obs_words, prepare

    model = load_model(path)
    p = default_obs_words(model, obs_words)
    design_dir, ref = prepare(model, lanes, work_dir(model, lanes, f"core{p}-clean"),
                              obs_words=p)
    return model, design_dir, ref


def closed_loop(path, lanes: int, tmp_path, sim: str = "verilator", obs_words=None,
                **kw) -> dict:
    from deltanet.sim.runner import run_closed_loop

    _, design_dir, ref = design(path, lanes, obs_words)
    return run_closed_loop(design_dir, ref, sim=sim, work_dir=tmp_path / sim, **kw)


def pysim_run(model, lanes: int, seed: int, steps: int) -> list:
    """The reference alone as the policy: per step ``(cycles, out, events, macs)``."""
    env = make_env(model.meta["env_id"], seed)()
    net, cm = DeltaNetwork(model, mode="fixed", delta=True), CoreCycleModel(model, lanes)
    obs, _ = env.reset(seed=seed)
    out = []
    for t in range(steps):
        y = net.step(net.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1)))
        c = net.last_counts
        out.append((cm.schedule(net.last_events, first=t == 0).cycles, y[0],
                    list(c["events"][:, 0]), list(c["significant"][:, 0])))
        obs, _, term, trunc, _ = env.step(net.decode(y)[0])
        if term or trunc:
            break
    env.close()
    return out


def check_passed(r: dict, steps: int) -> None:
    assert r["first_mismatch"] is None, r["first_mismatch_text"]
    assert r["steps"] == steps and r["mismatches"] == 0 and not r["stopped_at_first_mismatch"]
    assert r["returns_equal"] and r["hw_return"] == r["ref_return"]


# ---- the generator ---------------------------------------------------------------------------
def test_generate_core_files_and_determinism(tmp_path):
    model = load_model(CARTPOLE)
    a = generate_core(model, 4, tmp_path / "a", memory_files=True)
    b = generate_core(model, 4, tmp_path / "b", memory_files=True)
    assert set(a) == {"verilog", "json", "report", "memory_files"}
    names = [p.name for p in a["memory_files"]]
    assert names == [p.name for p in b["memory_files"]]
    for kind in ("verilog", "json", "report"):
        assert a[kind].read_bytes() == b[kind].read_bytes(), kind
    for pa, pb in zip(a["memory_files"], b["memory_files"]):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert not list(tmp_path.glob("a/.*.tmp"))  # no temporary files left behind

    info = json.loads(a["json"].read_text())
    d = CoreDesign.from_json(info)  # everything the step driver needs
    fields = design_fields(DeltaCore(model, lanes=4))  # the same, without elaboration
    assert CoreDesign.from_json(fields).to_dict() == fields == {k: info[k] for k in fields}
    cfg = model.config
    assert (d.n_layers, d.n_in, d.n_out, d.lanes, d.obs_words) == (len(cfg.layers), cfg.n_in,
                                                                     cfg.n_out, 4, 4)
    assert (d.in_width, d.out_width) == (cfg.input_fmt.width, cfg.output_fmt.width)
    assert info["toplevel"] == TOPLEVEL and info["network"] == cfg.to_dict()
    assert info["model_checksum"] == model.meta["checksum"] == model_meta(model)["checksum"]
    assert info["thresholds_raw"] == [cfg.threshold_raw(i) for i in range(len(cfg.layers))]
    assert info["cycle_model"]["mac_latency"] > 0 and "formula" in info["cycle_model"]
    assert info["ports"]["obs__payload"] == {
        "direction": "input", "width": d.obs_addr_width + d.obs_words * d.in_width}
    assert info["plan"]["nonzero_weights"] == [int((w != 0).sum()) for w in model.w_raw]
    assert info["memory_bits"] == sum(m["bits"] for m in info["memories"]) > 0
    assert info["memory_init_files"] == sorted(names)

    v = a["verilog"].read_text()
    head = v[:v.index("module ")]
    assert model.meta["checksum"] in head and "lanes 4, obs_words 4" in head
    assert "CartPole-v1" in head and "SQ" in head
    assert f"module {TOPLEVEL}(" in v
    for name, p in info["ports"].items():  # every port of the contract, at its width
        w = p["width"]
        assert (f"{p['direction']} [{w - 1}:0] {name};" if w > 1
                else f"{p['direction']} {name};") in v, name
    # every lane reads its own weights (memories of one name in several modules: one file each)
    assert v.count("$readmemh") == len(names)
    w0, w1 = (tmp_path / "a" / f"{TOPLEVEL}_lane{k}_weights.hex" for k in (0, 1))
    assert w0.read_text() != w1.read_text()
    report = a["report"].read_text()
    assert "Cycles per step" in report and "lane0.weights" in report

    inline = generate_core(model, 4, tmp_path / "c")  # the same design, contents inline
    assert set(inline) == {"verilog", "json", "report"}
    assert "$readmemh" not in inline["verilog"].read_text()


def test_generate_core_errors(tmp_path):
    model = load_model(CARTPOLE)
    with pytest.raises(ValueError, match="lanes"):
        generate_core(model, 0, tmp_path)
    with pytest.raises(ValueError, match="observations"):
        generate_core(model, 2, tmp_path, observations=np.zeros((3, model.config.n_in + 1)))
    with pytest.raises(TypeError, match="model"):
        generate_core(str(CARTPOLE), 2, tmp_path)
    gc.collect()  # the refused core, while this test's warning filter holds


# ---- Verilator closed loops ------------------------------------------------------------------
@pytest.mark.verilator
def test_cartpole_l4_verilator(tmp_path):
    """150 steps, changed observation words only; the per-step record equals a pysim run."""
    r = closed_loop(CARTPOLE, 4, tmp_path, seed=3, max_steps=150)
    check_passed(r, 150)
    ref = pysim_run(load_model(CARTPOLE), 4, seed=3, steps=150)
    steps = r["per_step"]
    np.testing.assert_array_equal([s["cycles"] for s in steps], [c for c, *_ in ref])
    np.testing.assert_array_equal([s["events"] for s in steps], [e for *_, e, _ in ref])
    np.testing.assert_array_equal([s["macs"] for s in steps], [m for *_, m in ref])
    assert [s["action"] for s in steps] == [int(np.argmax(y)) for _, y, *_ in ref]
    assert r["obs_writes"] == "changed" and r["obs_words"] == 4
    assert steps[0]["writes"] == 1 and r["obs_writes_per_step"] <= 1
    c = r["cycles_per_step"]
    assert c["first"] == c["max"] > c["min"]
    # latency from the first observation write to done: the writes and the start come on top
    assert all(s["latency"] > s["cycles"] for s in steps)
    assert r["sim_cycles"] >= sum(s["latency"] for s in steps)


@pytest.mark.verilator
def test_cartpole_l3_one_code_per_word_verilator(tmp_path):
    """An odd lane count (rows of unequal fill), one input code per observation word, every
    word every step, two episodes (the second starts with ``first`` again, without a reset)."""
    r = closed_loop(CARTPOLE, 3, tmp_path, obs_words=1, seed=11, episodes=2, max_steps=60,
                    obs_writes="all")
    check_passed(r, 120)
    assert r["obs_writes"] == "all" and r["obs_words"] == 1
    assert all(s["writes"] == 4 for s in r["per_step"])
    for ep in (0, 1):  # an episode start: bias initialisation and a full pass
        cyc = [s["cycles"] for s in r["per_step"] if s["episode"] == ep]
        assert cyc[0] > max(cyc[1:])


@pytest.mark.verilator
def test_run_time_threshold_writes_in_the_closed_loop_verilator(tmp_path):
    """A threshold register written at run time every 7 steps (layers in turn, halved and
    restored) in the design and the reference alike: bit-exact, and the step after each
    write re-examines every neuron (its cycles equal the model's rescan schedule)."""
    r = closed_loop(CARTPOLE, 3, tmp_path, seed=2, max_steps=60, threshold_writes=7,
                    coverage=True)
    check_passed(r, 60)
    writes = r["coverage"]["bins"]["threshold_writes"]
    assert sum(writes.values()) == 60 // 7 and all(v > 0 for v in writes.values())


@pytest.mark.verilator
def test_pendulum_continuous_actions_verilator(tmp_path):
    """Continuous actions: the host decodes the hardware's raw outputs (pysim's decoder)."""
    model = load_model(PENDULUM)
    assert model.config.decoder.kind != "argmax"
    r = closed_loop(PENDULUM, 2, tmp_path, seed=0, max_steps=100)
    check_passed(r, 100)
    ref = pysim_run(model, 2, seed=0, steps=100)
    np.testing.assert_array_equal([s["cycles"] for s in r["per_step"]], [c for c, *_ in ref])
    net = DeltaNetwork(model)
    for s, (_, y, *_) in zip(r["per_step"], ref):
        np.testing.assert_array_equal(np.asarray(s["action"], dtype=np.float32),
                                      net.decode(y[None])[0])


@pytest.mark.icarus
def test_cartpole_icarus(tmp_path):
    if not have("icarus"):
        pytest.skip("Icarus Verilog is not installed (apt-get install -y iverilog)")
    r = closed_loop(CARTPOLE, 3, tmp_path, sim="icarus", seed=5, max_steps=30)
    check_passed(r, 30)
    assert r["simulator"] == "icarus"


# ---- the checker can fail --------------------------------------------------------------------
def predicted_weight_mismatch(model, seed: int, max_steps: int) -> dict:
    """Where ``mutate(model, "weight")`` in the design must first differ from the reference:
    the first step (of the episode the clean reference drives) whose outputs differ, and the
    first differing output. Only the output layer changed, so its inputs' events and MACs, and
    the cycles, agree until then."""
    bad = mutate(model, "weight")
    env = make_env(model.meta["env_id"], seed)()
    net, hw = DeltaNetwork(model), DeltaNetwork(bad)
    obs, _ = env.reset(seed=seed)
    last = len(model.config.layers) - 1
    for t in range(max_steps):
        x = net.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))
        y, yb = net.step(x)[0], hw.step(x)[0]
        np.testing.assert_array_equal(hw.last_counts["events"], net.last_counts["events"])
        if (y != yb).any():
            k = int(np.flatnonzero(y != yb)[0])
            env.close()
            return {"episode": 0, "step": t, "layer": last, "field": "out", "index": k,
                    "hw": int(yb[k]), "ref": int(y[k])}
        obs, _, term, trunc, _ = env.step(net.decode(y[None])[0])
        assert not (term or trunc)
    raise AssertionError("the corrupted weight never shows in this episode")


@pytest.mark.verilator
def test_corrupted_weight_fails_at_the_predicted_step(tmp_path):
    want = predicted_weight_mismatch(load_model(CARTPOLE), seed=3, max_steps=150)
    out = tmp_path / "m.json"
    rc = main(["verify", "--model", str(CARTPOLE), "--lanes", "4",
               "--seed", "3", "--max-steps", "150", "--mutate", "weight", "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 1
    assert r["first_mismatch"] == want
    assert r["stopped_at_first_mismatch"] and r["steps"] == want["step"] + 1
    assert r["mismatches"] == 1 and not r["returns_equal"]
    assert r["first_mismatch_text"] == (
        f"episode 0 step {want['step']} layer {want['layer']} out[{want['index']}]: expected "
        f"{want['ref']} (pysim), got {want['hw']} (hardware)")


# ---- the CLI ---------------------------------------------------------------------------------
@pytest.mark.verilator
def test_cli_verify(tmp_path, capsys):
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(CARTPOLE), "--lanes", "4",
               "--seed", "3", "--max-steps", "60", "--json", str(out)])
    r = json.loads(out.read_text())
    text = " ".join(capsys.readouterr().out.split())
    assert rc == 0, r["first_mismatch"]
    assert "PASS: 60 steps checked on verilator (event-driven core)" in text
    assert r["steps"] == 60 and r["mismatches"] == 0
    assert r["obs_words"] == 4 and r["obs_writes"] == "changed"
    assert r["latency_per_step"]["mean"] > r["cycles_per_step"]["mean"]


@pytest.mark.verilator
def test_parallel_verify_runs_never_mix_results(tmp_path):
    """Two `deltanet verify` runs started together from one folder (one build folder, one
    cache) each report their own episodes: different seeds, different step counts, each run
    in a folder of its own (its log, its cocotb results file)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [str(Path(sys.executable).parent / "deltanet"), "verify", "--model",
           str(root / "deltanet" / "models" / "cartpole.npz"), "--lanes", "3", "--sim",
           "verilator"]
    runs = {seed: tmp_path / f"v{seed}.json" for seed in (11, 12)}
    procs = [subprocess.Popen(cmd + ["--seed", str(seed), "--max-steps", str(40 + seed),
                                     "--json", str(out)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for seed, out in runs.items()]
    logs = [p.communicate(timeout=900)[0].decode() for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    folders = set()
    for seed, out in runs.items():
        res = json.loads(out.read_text())
        assert res["steps"] == 40 + seed, res
        assert res["mismatches"] == 0
        folders.add(Path(res["log"]).parent)
    assert len(folders) == 2 and all(f.name.startswith("run-") for f in folders)


# ---- the Nature-DQNs (conv layers) -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.parametrize("game", sorted(p.stem for p in (MODELS_DIR / "atari").glob("*.npz")))
def test_verify_bundled_atari_agents_100_steps(game, tmp_path, capsys):
    """Each bundled combined Atari agent (conv2d + dense) plays 100 consecutive steps on the
    generated core in Verilator, bit-exact with pysim, its cycles equal to the model's."""
    path = MODELS_DIR / "atari" / f"{game}.npz"
    out = tmp_path / "v.json"
    rc = main(["verify", "--model", str(path), "--max-steps", "100", "--seed", "0",
               "--lanes", "4", "--json", str(out)])
    r = json.loads(out.read_text())
    text = " ".join(capsys.readouterr().out.split())
    assert rc == 0, r["first_mismatch"]
    assert r["steps"] == 100 and r["mismatches"] == 0 and r["first_mismatch"] is None
    assert r["hw_return"] == r["ref_return"] and r["returns_equal"]
    assert "PASS: 100 steps checked on verilator (event-driven core)" in text
    # verify compared every step's cycles with the cycle model (mismatches == 0); a later step
    # may pass the first (pixels turning to zero are events too), but on average the delta
    # steps cost less than the first one's bias init and full pass
    c = r["cycles_per_step"]
    assert c["first"] > c["mean"] and c["min"] > 0

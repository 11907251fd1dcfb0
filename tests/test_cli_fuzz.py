"""Bad input gets one clear line (issue 14): a seeded fuzz over every subcommand.

Each variant is a command line with something wrong in it - a number out of range, not finite
or not a number, an output path that cannot be written (empty, a folder where a file goes or
the reverse, under a file, read-only, a parent that cannot be made, a name too long), a model
that cannot be read or does not fit the task. Run in-process through ``deltanet.cli.main``,
every one must end with a non-zero exit code and exactly one non-empty line on stderr (no
traceback), and must create or change nothing. The checks fire before any heavy work: the
functions that train, roll out, generate, simulate or synthesize are replaced by ones that fail
the test if they are ever reached.
"""

from __future__ import annotations

import argparse
import json
import os
import string
from dataclasses import dataclass

import numpy as np
import pytest
from deltanet.pysim import load_model, save_model
from deltanet.sim import runner as sim_runner

from deltanet import amaranth_engine, bundled_model, design
from deltanet import synth as synth_lib
from deltanet.cli import build as cmd_build
from deltanet.cli import build_parser, main
from deltanet.cli import calibrate as cmd_calibrate
from deltanet.cli import compress as cmd_compress
from deltanet.cli import eval as cmd_eval
from deltanet.cli import import_ as cmd_import
from deltanet.cli import prune as cmd_prune
from deltanet.cli import quantize as cmd_quantize
from deltanet.cli import run as cmd_run
from deltanet.cli import sweep as cmd_sweep
from deltanet.cli import synth as cmd_synth
from deltanet.cli import train as cmd_train
from deltanet.synth import DoesNotFit

from .conftest import random_model
from .test_options import tree

SEED = 14
CARTPOLE = str(bundled_model("cartpole"))
MOUNTAINCAR = str(bundled_model("mountaincar"))
CARTPOLE_DENSE = str(bundled_model("cartpole_dense"))
ROOT_USER = os.geteuid() == 0
T = "{T}"  # the test folder, filled in when a variant runs

#: a valid command line of every subcommand (its outputs under {T}/out, which never appears)
BASE = {
    "eval": ["--model", CARTPOLE, "--no-progress"],
    "train": ["--env", "CartPole-v1", "--algo", "ppo", "--out", f"{T}/out/t.npz",
              "--no-progress"],
    "prune": ["--model", CARTPOLE, "--sparsity", "0.5", "--finetune-steps", "0",
              "--out", f"{T}/out/p.npz"],
    "quantize": ["--model", CARTPOLE, "--out", f"{T}/out/q.npz"],
    "calibrate": ["--model", CARTPOLE, "--out", f"{T}/out/c.npz"],
    "sweep": ["--model", CARTPOLE, "--thresholds", "0", "--out", f"{T}/out/sw",
              "--no-progress"],
    "compress": ["--model", CARTPOLE_DENSE, "--out", f"{T}/out/x.npz", "--no-progress"],
    "generate": ["--model", CARTPOLE, "--out", f"{T}/out/gen"],
    "verify": ["--model", CARTPOLE],
    "simulate": ["--model", CARTPOLE],
    "synth": ["--model", CARTPOLE],
    "build": ["--model", CARTPOLE, "--board", "icebreaker", "--lanes", "2",
              "--out", f"{T}/out/board"],
    "import": [f"{T}/policy.zip", "--out", f"{T}/out/i.npz"],
    "run": ["--model", CARTPOLE, "--sim", "amaranth"],
}

#: every numeric option, with values out of its own range (beyond GENERIC_BAD)
NUMERIC = {
    "eval": {"--episodes": ["0", "100001"], "--seed": ["2147483648"],
             "--epsilon": ["-0.1", "1.01"]},
    "train": {"--steps": ["0", "1000000001"], "--seed": ["2147483648"], "--net": ["0", "4097"],
              "--checkpoint-every": ["0"], "--eval-every": ["0"], "--eval-episodes": ["1001"],
              "--time-limit": ["0", "0.5", "1e8"]},
    "prune": {"--sparsity": ["1", "1.5", "0.5,1", "0.5,,0.5", ","],
              "--balanced-lanes": ["0", "65", "1000000"],
              "--out-sparsity": ["1"], "--finetune-steps": ["1000000001"],
              "--eval-episodes": ["1001"]},
    "quantize": {"--act-bits": ["1", "33"], "--weight-bits": ["1", "17"],
                 "--headroom": ["0.5", "0", "65537"], "--max-input-shift": ["17"],
                 "--episodes": ["0"], "--seed": ["2147483648"]},
    "calibrate": {"--fraction": ["0", "1.01"], "--episodes": ["0", "19", "100001"],
                  "--max-evals": ["0", "100001"]},
    "sweep": {"--thresholds": ["1e10"], "--sparsities": ["1"], "--seeds": ["2147483648"],
              "--episodes": ["0"], "--workers": ["0", "1025"]},
    "compress": {"--budget": ["0", "1.01"], "--lanes": ["0", "65"], "--trials": ["0", "100001"],
                 "--episodes": ["0", "100001"], "--holdout-episodes": ["1", "100001"],
                 "--confidence": ["0.49", "1"], "--candidates": ["0", "10001"],
                 "--finetune-steps": ["1000000001"], "--workers": ["0", "1025"],
                 "--seed": ["2147483648"]},
    "generate": {"--lanes": ["0", "65"], "--seed": ["2147483648"], "--steps": ["0"],
                 "--obs-words": ["0", "257"]},
    "verify": {"--episodes": ["0"], "--seed": ["2147483648"], "--lanes": ["0", "65"],
               "--max-steps": ["1000000001"], "--obs-words": ["0", "257"]},
    "simulate": {"--episodes": ["0"], "--seed": ["2147483648"], "--lanes": ["0", "65"],
                 "--clock-mhz": ["0", "10001"], "--max-steps": ["1000000001"],
                 "--obs-words": ["0", "257"], "--waves-from": ["1000000001"],
                 "--waves-to": ["1000000001"]},
    "synth": {"--lanes": ["0", "65"], "--freq-mhz": ["0", "10001"], "--obs-words": ["0", "257"]},
    # 6 Mbaud is in the option's range but needs a 24 MHz clock: the iCEBreaker has 12 MHz
    "build": {"--lanes": ["0", "65"], "--obs-words": ["0", "257"],
              "--baud": ["299", "12000001", "6000000"]},
    "import": {"--input-shape": ["0", "16777217"]},
    # --baud and --timeout belong to --port: with --sim even a value in range is refused
    "run": {"--episodes": ["0"], "--seed": ["2147483648"], "--max-steps": ["1000000001"],
            "--lanes": ["0", "65"], "--obs-words": ["0", "257"],
            "--baud": ["299", "12000001", "9600"], "--timeout": ["0", "601", "1"]},
}
#: out of range, not finite or not a number for every numeric option
GENERIC_BAD = ["-1", "nan", "inf", "-inf", "1e400", "1e12", "123456789012345678901234567890",
               "abc", "", "0x10"]
#: not an integer
INT_BAD = ["2.5", "1e3"]

#: every output: a file or a folder
OUTPUTS = {
    "eval": {"--json": "file"},
    "train": {"--out": "file"},
    "prune": {"--out": "file"},
    "quantize": {"--out": "file", "--json": "file"},
    "calibrate": {"--out": "file", "--json": "file"},
    "sweep": {"--out": "dir"},
    "compress": {"--out": "file", "--json": "file", "--journal": "file"},
    "generate": {"--out": "dir"},
    "verify": {"--json": "file"},
    "simulate": {"--json": "file", "--waves": "file"},
    "synth": {"--json": "file"},
    "build": {"--out": "dir"},
    "import": {"--out": "file"},
    "run": {"--json": "file"},
}
_RO = [] if ROOT_USER else [f"{T}/ro/x.out", f"{T}/ro/sub/x.out"]  # root writes anywhere
BAD_FILE = ["", " ", f"{T}/adir", f"{T}/afile/x.out", f"{T}/afile/sub/x.out", "/proc/x.out",
            "/proc/nodir/x.out", f"{T}/" + "n" * 250, "/dev/null", *_RO]
BAD_DIR = ["", f"{T}/afile", f"{T}/afile/sub", "/proc/x", "/proc/nodir/y", "/dev/null",
           f"{T}/dangling",
           *([] if ROOT_USER else [f"{T}/ro", f"{T}/ro/sub"])]

#: models that cannot be used: missing, not a model, a folder, empty
BAD_MODELS = [f"{T}/nope.npz", f"{T}/junk.npz", f"{T}/adir", ""]


@dataclass(frozen=True)
class Variant:
    argv: tuple
    id: str


def with_option(argv: list, option: str, values: list) -> list:
    """``argv`` with ``option`` set to ``values`` (replacing its values if it is there)."""
    out = list(argv)
    if option in out:
        i = out.index(option)
        j = i + 1
        while j < len(out) and not out[j].startswith("--"):
            j += 1
        return out[:i + 1] + values + out[j:]
    return out + [option, *values]


def _numeric_options() -> dict:
    """{command: {option: is_int}} of every int/float option, from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        out[name] = {}
        for a in p._actions:
            kind = getattr(a.type, "kind", None) or {int: "integer", float: "number"}.get(a.type)
            if kind is not None:
                out[name][a.option_strings[0]] = kind == "integer"
    return out


def _variants() -> list:
    numeric = _numeric_options()
    rng = np.random.default_rng(SEED)
    out = []

    def add(cmd, argv, tag):
        if cmd in numeric or cmd not in BASE:  # a command not registered (yet): skipped
            out.append(Variant((cmd, *argv), f"{cmd}-{tag}-{len(out)}"))

    for cmd, base in BASE.items():
        if cmd not in numeric:
            continue
        for opt, is_int in numeric[cmd].items():
            for v in GENERIC_BAD + NUMERIC[cmd][opt] + (INT_BAD if is_int else []):
                add(cmd, with_option(base, opt, [v]), f"{opt}={v[:12]}")
        for opt, kind in OUTPUTS[cmd].items():
            for v in BAD_FILE if kind == "file" else BAD_DIR:
                add(cmd, with_option(base, opt, [v]), f"{opt}=path")
        if "--model" in base:
            for v in BAD_MODELS:
                add(cmd, with_option(base, "--model", [v]), "model")
    # one bad value among good ones
    add("sweep", with_option(BASE["sweep"], "--thresholds", ["0", "0.1", "nan"]), "list")
    add("sweep", with_option(BASE["sweep"], "--sparsities", ["0", "0.5", "1"]), "list")
    add("sweep", with_option(BASE["sweep"], "--model", [CARTPOLE, f"{T}/junk.npz"]), "list")
    add("train", with_option(BASE["train"], "--net", ["64", "-3"]), "list")
    # sizes a model cannot hold
    add("train", with_option(BASE["train"], "--net", ["1"] * 64), "net-depth")
    add("train", with_option(BASE["train"], "--net", ["4096"] * 3), "net-weights")
    # options that contradict each other or the model
    add("prune", with_option(with_option(BASE["prune"], "--model", [f"{T}/narrow.npz"]),
                             "--balanced-lanes", ["16"]), "lanes-vs-width")
    add("prune", [*BASE["prune"], "--global", "--balanced-lanes", "4"], "global-lanes")
    add("prune", [*BASE["prune"], "--whole-columns"], "whole-columns")
    add("prune", [*BASE["prune"], "--out-sparsity", "0.5"], "out-sparsity-oneshot")
    add("calibrate", [*BASE["calibrate"], "--reference", MOUNTAINCAR], "reference-task")
    add("compress", with_option(BASE["compress"], "--model", [CARTPOLE]), "quantized")
    add("compress", [*BASE["compress"], "--finetune-steps", "100"], "finetune-no-sb3")
    add("calibrate", [*BASE["calibrate"], "--reference", f"{T}/3inputs.npz"], "reference-size")
    add("calibrate", [*BASE["calibrate"], "--reference", f"{T}/junk.npz"], "reference-junk")
    for cmd in ("verify", "simulate", "generate", "run"):
        add(cmd, with_option(BASE[cmd], "--model", [f"{T}/wrongenv.npz"]), "env")
    add("simulate", [*with_option(BASE["simulate"], "--model", [f"{T}/wrongenv.npz"]),
                     "--engine", "amaranth"], "env-amaranth")
    for cmd, opt, v in [("eval", "--mode", "half"), ("verify", "--sim", "xcelium"),
                        ("simulate", "--engine", "spice"), ("synth", "--target", "virtex"),
                        ("build", "--board", "virtex"),
                        ("simulate", "--obs-writes", "some"), ("verify", "--mutate", "bias"),
                        ("train", "--algo", "ddpg"), ("eval", "--bogus", "1"),
                        ("run", "--sim", "icarus"), ("run", "--mutate", "bias")]:
        add(cmd, with_option(BASE[cmd], opt, [v]), "choice")
    add("import", with_option(BASE["import"], "--input-shape", ["4", "84"]), "input-shape")
    # run: the options of the other kind of run, a design.json that is not one, no port
    run_port = ["--model", CARTPOLE, "--port", f"{T}/afile"]
    for opt, v in (("--lanes", "2"), ("--obs-words", "2"), ("--mutate", "weight")):
        add("run", with_option(run_port, opt, [v]), "port-vs-sim")
    add("run", with_option(BASE["run"], "--design", [f"{T}/junk.npz"]), "design")
    add("run", with_option(BASE["run"], "--design", [f"{T}/nope.json"]), "design")
    add("run", with_option(run_port, "--port", [f"{T}/nope"]), "no-port")
    add("run", with_option(run_port, "--port", [""]), "empty-port")
    add("run", ["--model", CARTPOLE], "port-or-sim")
    add("eval", [], "missing-model")
    add("nosuchcommand", [], "command")

    # seeded random garbage: 1-3 numeric options of a random command at once
    def garbage(is_int):
        k = rng.integers(6 if is_int else 5)
        if k == 0:
            return str(-int(rng.integers(1, 10**9)))
        if k == 1:
            return f"{int(rng.integers(1, 10))}e{int(rng.integers(12, 400))}"
        if k == 2:
            return str(rng.choice(["nan", "NaN", "inf", "+inf", "-Infinity", "infinity"]))
        if k == 3:
            letters = string.ascii_letters + "_/,:"
            return "".join(rng.choice(list(letters), size=int(rng.integers(1, 8))))
        if k == 4:
            return f"-{rng.random() * 10.0 ** int(rng.integers(-2, 8)) + 0.01:.4f}"
        return f"{int(rng.integers(1, 60))}.{int(rng.integers(1, 9))}"

    commands = sorted(numeric)
    for _ in range(150):
        cmd = commands[int(rng.integers(len(commands)))]
        opts = sorted(numeric[cmd])
        pick = rng.choice(len(opts), size=min(len(opts), int(rng.integers(1, 4))), replace=False)
        argv = list(BASE[cmd])
        for i in pick:
            argv = with_option(argv, opts[i], [garbage(numeric[cmd][opts[i]])])
        add(cmd, argv, "random")
    return out


VARIANTS = _variants()


def test_every_numeric_option_and_output_is_fuzzed():
    numeric = _numeric_options()
    assert set(BASE) == set(NUMERIC) == set(OUTPUTS)
    assert set(numeric) <= set(BASE), f"subcommands not fuzzed: {set(numeric) - set(BASE)}"
    for cmd in numeric:
        assert set(numeric[cmd]) == set(NUMERIC[cmd]), cmd
    assert len(VARIANTS) >= 300


class HeavyWork(AssertionError):
    pass


def _heavy(name):
    def fail(*args, **kwargs):
        raise HeavyWork(f"{name} was reached: a check did not fire before the work")
    return fail


#: what trains, imports, rolls out, generates, simulates or synthesizes
HEAVY = [(cmd_import, "import_policy"),
         (cmd_train, "train"), (cmd_prune, "prune_finetune"), (cmd_prune, "prune_oneshot"),
         (cmd_quantize, "quantize_model"), (cmd_calibrate, "calibrate"), (cmd_sweep, "sweep"),
         (cmd_compress, "compress"), (cmd_build, "build_bitstream"),
         (cmd_eval, "run_episodes"), (design, "write_design"), (synth_lib, "synth"),
         (sim_runner, "prepare"), (sim_runner, "run_closed_loop"),
         (amaranth_engine, "_run_core"), (cmd_run, "run_sim"), (cmd_run, "run_port")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The test folder: a folder, a file, a read-only folder, unusable models, and the working
    folder (verify, simulate and synth build under ./build)."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "adir").mkdir()
    (root / "afile").write_text("keep")
    (root / "junk.npz").write_text("not a model\n")
    (root / "cwd").mkdir()
    (root / "dangling").symlink_to(root / "nowhere")
    cart = load_model(CARTPOLE)
    save_model(cart.replace(meta={**cart.meta, "env_id": "MountainCar-v0"}),
               root / "wrongenv.npz")
    save_model(random_model(1, [4, 8, 2]), root / "narrow.npz")  # CartPole, widest layer 8
    save_model(random_model(3, [3, 8, 2]), root / "3inputs.npz")  # CartPole, but 3 inputs
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield root
    ro.chmod(0o755)


@pytest.fixture
def no_heavy_work(world, monkeypatch):
    """Work in the test folder; fail the test if heavy work starts."""
    monkeypatch.chdir(world / "cwd")
    for module, name in HEAVY:
        monkeypatch.setattr(module, name, _heavy(f"{module.__name__}.{name}"))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
def test_bad_input_gets_one_line(variant, world, no_heavy_work, capsys):
    argv = [a.replace(T, str(world)) for a in variant.argv]
    before = tree(world)
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None), f"accepted: {argv}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"{argv}: stderr {err!r}"
    assert lines[0].startswith("deltanet") and "Traceback" not in err
    assert tree(world) == before, f"{argv} created or changed files"


# ---- the cases the issue names, one by one ------------------------------------------------------
def run_cli(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    assert len(out.err.splitlines()) == 1, out.err
    return rc, out.err


@pytest.mark.parametrize("argv, needles", [
    (["calibrate", "--model", CARTPOLE, "--out", "c.npz", "--max-evals", "-1"],
     ["--max-evals", "'-1'", "1..100000"]),
    (["sweep", "--model", CARTPOLE, "--thresholds", "0", "--out", "sw", "--episodes", "-1"],
     ["--episodes", "'-1'", "1..100000"]),
    (["prune", "--model", CARTPOLE, "--sparsity", "0.5", "--balanced-lanes", "1000000",
      "--out", "p.npz"], ["--balanced-lanes", "'1000000'", "1..64"]),
    (["simulate", "--model", CARTPOLE, "--clock-mhz", "nan"],
     ["--clock-mhz", "'nan'", "finite", "(0, 10000]"]),
    (["synth", "--model", CARTPOLE, "--freq-mhz=-1"], ["--freq-mhz", "'-1'", "(0, 10000]"]),
    (["calibrate", "--model", CARTPOLE, "--out", "c.npz", "--reference", MOUNTAINCAR],
     ["--reference", "'MountainCar-v0'", "'CartPole-v1'", "mountaincar.npz", "cartpole.npz"]),
])
def test_named_cases(argv, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(capsys, *argv)
    assert rc == 2
    for n in needles:
        assert n in err, (n, err)
    assert not any(tmp_path.iterdir())


def test_balanced_lanes_beyond_the_widest_layer(tmp_path, capsys):
    save_model(random_model(1, [4, 8, 2]), tmp_path / "narrow.npz")
    rc, err = run_cli(capsys, "prune", "--model", tmp_path / "narrow.npz", "--sparsity", "0.5",
                      "--finetune-steps", "0", "--balanced-lanes", "9", "--out",
                      tmp_path / "p.npz")
    assert rc == 2 and "--balanced-lanes 9" in err and "1..8" in err
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("cmd", [["verify"], ["simulate"], ["simulate", "--engine", "amaranth"]])
def test_model_that_does_not_fit_its_env(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    m = load_model(CARTPOLE)
    save_model(m.replace(meta={**m.meta, "env_id": "MountainCar-v0"}), tmp_path / "bad.npz")
    rc, err = run_cli(capsys, cmd[0], "--model", tmp_path / "bad.npz", *cmd[1:])
    assert rc == 2
    assert "4 inputs" in err and "MountainCar-v0" in err and "no results" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]  # nothing built


@pytest.mark.parametrize("cmd, option, named", [
    ("verify", "--sim", "--sim"), ("simulate", "--engine", "--engine"),
    # one name for the simulator in every command: each takes the other's spelling too
    ("verify", "--engine", "--sim"), ("simulate", "--sim", "--engine")])
def test_icarus_missing(cmd, option, named, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no iverilog on it
    rc, err = run_cli(capsys, cmd, "--model", CARTPOLE, option, "icarus")
    assert rc == 2
    assert "iverilog is not installed" in err and "apt install iverilog" in err
    assert f"{named} verilator" in err


def test_synth_that_does_not_fit(tmp_path, monkeypatch, capsys):
    result = {"target": "ice40-up5k", "fits": False, "error": "luts: needs 9000, ice40-up5k "
              "has 5280", "reason": "luts: needs 9000, ice40-up5k has 5280",
              "needs": {"luts": 9000}, "capacity": {"luts": 5280}}

    def too_big(*args, **kwargs):
        raise DoesNotFit("the design does not fit ice40-up5k (luts: needs 9000, ice40-up5k "
                         "has 5280; counts after yosys, see build/x/stat.txt)", result)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cmd_synth, "synth_model", too_big)
    out = tmp_path / "r.json"
    rc, err = run_cli(capsys, "synth", "--model", CARTPOLE, "--target", "ice40-up5k",
                      "--json", out)
    assert rc == 1 and "does not fit ice40-up5k" in err
    r = json.loads(out.read_text())
    assert r["fits"] is False and r["reason"] == result["reason"] and r["lanes"] == 4
    out.unlink()
    rc, err = run_cli(capsys, "synth", "--model", CARTPOLE, "--target", "ice40-up5k")
    assert rc == 1 and "does not fit" in err
    assert not any(tmp_path.iterdir())


@pytest.fixture
def old_design(tmp_path):
    out = tmp_path / "design"
    out.mkdir()
    (out / "deltanet_core.v").write_text("// 2 lanes\n")
    (out / "deltanet_core.json").write_text('{"lanes": 2}\n')
    return out


def _half_writer(exc):
    """A generator that writes some of its files and then fails."""
    def write(model, lanes, out_dir, **kwargs):
        (out_dir / "deltanet_core.json").write_text('{"lanes": 4}\n')
        raise exc
    return write


@pytest.mark.parametrize("exc, rc_want", [(ValueError("lanes: no"), 2), (KeyboardInterrupt(), 130)])
def test_generate_failure_keeps_the_old_design(old_design, exc, rc_want, monkeypatch, capsys):
    monkeypatch.setattr(design, "write_design", _half_writer(exc))
    before = tree(old_design.parent)
    try:
        rc = main(["generate", "--model", CARTPOLE, "--out", str(old_design), "--no-episode"])
    finally:
        err = capsys.readouterr().err
    assert rc == rc_want and len(err.splitlines()) == 1
    assert tree(old_design.parent) == before  # old files, no temporary folder, no .tmp file


def test_generate_writes_all_files_together(old_design, monkeypatch, capsys):
    seen = {}

    def write(model, lanes, out_dir, **kwargs):
        seen["dir"] = out_dir
        assert out_dir.parent == old_design.parent and out_dir != old_design
        assert (old_design / "deltanet_core.v").read_text() == "// 2 lanes\n"  # not yet
        paths = {"verilog": out_dir / "deltanet_core.v", "json": out_dir / "deltanet_core.json",
                 "memory_files": [out_dir / "m0.hex"]}
        for p in (paths["verilog"], paths["json"], *paths["memory_files"]):
            p.write_text(f"{lanes} lanes\n")
        return paths

    monkeypatch.setattr(design, "write_design", write)
    rc = main(["generate", "--model", CARTPOLE, "--out", str(old_design), "--lanes", "4",
               "--no-episode"])
    out = capsys.readouterr().out
    assert rc == 0
    assert {p.name: p.read_text() for p in old_design.iterdir()} == {
        "deltanet_core.v": "4 lanes\n", "deltanet_core.json": "4 lanes\n", "m0.hex": "4 lanes\n"}
    assert f"wrote verilog: {old_design / 'deltanet_core.v'}" in out and "1 memory files" in out
    assert not seen["dir"].exists()
    assert sorted(p.name for p in old_design.parent.iterdir()) == ["design"]


def test_nan_observation_is_one_line(tmp_path, capsys):
    """A NaN from the env (float mode used to take it silently) ends eval with one line."""
    import gymnasium as gym
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    class NanCartPole(CartPoleEnv):
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            self.t = getattr(self, "t", 0) + 1
            if self.t >= 3:
                obs = obs.copy()
                obs[2] = np.nan
            return obs, r, term, trunc, info

    env_id = "DeltanetNanCartPole-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=NanCartPole, max_episode_steps=500,
                     disable_env_checker=True)
    m = load_model(CARTPOLE)
    save_model(m.replace(meta={**m.meta, "env_id": env_id}), tmp_path / "nan.npz")
    for mode in ("float", "fixed"):
        rc, err = run_cli(capsys, "eval", "--model", tmp_path / "nan.npz", "--episodes", "1",
                          "--mode", mode, "--no-progress", "--json", tmp_path / "r.json")
        assert rc == 2 and "observation[2] is nan" in err, err
    assert not (tmp_path / "r.json").exists()

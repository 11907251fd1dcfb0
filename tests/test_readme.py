"""Every ``deltanet`` command line of the README runs as written (with small budgets), so the
README cannot rot.

The command lines come from the README's ``sh`` blocks; optional ``[...]`` parts are left out,
the relative paths (``runs/``, ``build/``) live in a temporary working folder, and the budgets
shrink (training steps, episodes, fine-tuning steps, evaluations) by replacing an option's value
or appending an option the command already has, never by dropping a command. The CartPole chain
(train -> prune -> quantize -> calibrate -> sweep, then generate/simulate/verify on the bundled
model, and the bring-your-own-policy chain) runs by default; synthesis and the Atari lines take
minutes each and run under the ``slow`` marker.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deltanet.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: option -> small value, applied wherever the README line has the option
SMALLER = {"--steps": "3000", "--episodes": "2", "--finetune-steps": "0", "--max-steps": "30"}
#: options appended per command (each exists in that command's --help)
APPEND = {"calibrate": ["--episodes", "20", "--max-evals", "2"],
          "sweep": ["--episodes", "1", "--workers", "1", "--no-progress"],
          "compress": ["--trials", "3", "--episodes", "2", "--holdout-episodes", "10",
                       "--workers", "1", "--no-progress"],
          "eval": ["--no-progress"], "verify": ["--max-steps", "30"],
          "simulate": ["--max-steps", "30"]}
#: lines that take minutes each (synthesis, bitstreams, Atari games): the slow test
SLOW = ("deltanet synth", "deltanet build", "Breakout", "atari/")
#: lines that show a variant on a file the reader brings (tests/test_import.py covers them)
EXAMPLES = ("policy.onnx",)


def readme_lines() -> list:
    """The ``deltanet ...`` lines of the README's ``sh`` blocks, in order."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("deltanet "):
                out.append(line)
    return out


def as_run(line: str) -> list:
    """argv of a README line with its optional parts dropped and small budgets."""
    line = re.sub(r"\s*\[[^\]]*\]", "", line)
    argv = shlex.split(line)[1:]
    for i, a in enumerate(argv[:-1]):
        if a in SMALLER:
            argv[i + 1] = SMALLER[a]
    return argv + APPEND.get(argv[0], [])


def test_readme_has_the_command_lines():
    lines = readme_lines()
    commands = {shlex.split(line)[1] for line in lines}
    assert {"eval", "train", "prune", "quantize", "calibrate", "sweep", "compress", "generate",
            "simulate", "verify", "synth", "build", "import"} <= commands


def _run_all(tmp_path, monkeypatch, slow: bool):
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "deltanet").symlink_to(ROOT / "deltanet")  # the README's bundled-model paths
    # the bring-your-own-policy chain starts from an SB3 agent trained by the README's own
    # python line (fewer steps)
    py = next(line for line in (ROOT / "README.md").read_text().splitlines()
              if line.startswith("python -c") and "ppo_cartpole.zip" in line)
    code = shlex.split(py)[2].replace("learn(30_000)", "learn(2_000)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    ran = 0
    for line in readme_lines():
        if any(s in line for s in EXAMPLES) or any(s in line for s in SLOW) != slow:
            continue
        argv = as_run(line)
        rc = main(argv)
        # with these tiny budgets calibrate and compress may find nothing that meets the rule
        # (exit 1, as documented); compress then still writes its report
        may_fail = argv[0] in ("calibrate", "compress")
        assert rc in (0, 1) if may_fail else rc == 0, f"{line} -> exit {rc}"
        if argv[0] == "compress":
            out = Path(argv[argv.index("--out") + 1])
            assert out.with_suffix(".md").is_file(), f"{line}: no report"
            assert out.is_file() == (rc == 0), f"{line} -> exit {rc}, model written: {out}"
        ran += 1
    return ran


def test_readme_command_lines_run(tmp_path, monkeypatch):
    assert _run_all(tmp_path, monkeypatch, slow=False) >= 15


@pytest.mark.slow
def test_readme_slow_command_lines_run(tmp_path, monkeypatch):
    assert _run_all(tmp_path, monkeypatch, slow=True) >= 3

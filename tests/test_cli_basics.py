"""The command itself: ``--version`` and ``python -m deltanet``."""

import subprocess
import sys

import pytest

from deltanet import __version__
from deltanet.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"deltanet {__version__}"


def test_python_dash_m_runs_the_same_command():
    r = subprocess.run([sys.executable, "-m", "deltanet", "--version"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip() == f"deltanet {__version__}"
    r = subprocess.run([sys.executable, "-m", "deltanet", "eval"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "deltanet eval: error: the following arguments are required: --model"]


def test_quiet_hides_progress_and_status(tmp_path):
    """``deltanet --quiet``: no progress bar or status line on stderr, the results as usual."""
    from deltanet import bundled_model

    args = [sys.executable, "-m", "deltanet", "{}", "eval", "--model",
            str(bundled_model("cartpole")), "--episodes", "2"]
    loud = subprocess.run([a for a in args if a != "{}"], capture_output=True, text=True,
                          check=False)
    quiet = subprocess.run([a if a != "{}" else "--quiet" for a in args], capture_output=True,
                           text=True, check=False)
    assert loud.returncode == quiet.returncode == 0
    assert "ep/s" in loud.stderr or "it/s" in loud.stderr or "ep]" in loud.stderr
    assert quiet.stderr == "" and quiet.stdout == loud.stdout

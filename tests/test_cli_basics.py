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

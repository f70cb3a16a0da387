"""How the command line is reached: `diffuse --version` and `python -m diffuse`."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from diffuse.cli import main


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"diffuse {version('diffuse')}\n"


def test_python_dash_m_diffuse_runs_the_command_line():
    # A fresh interpreter with this test run's import path (the source tree under test).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "diffuse", "--version"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"diffuse {version('diffuse')}\n"), done.stderr

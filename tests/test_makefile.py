"""The Makefile's venv step says what it is doing before each long, quiet command (a first
``make`` otherwise prints nothing for about two minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_venv_step_announces_each_long_command() -> None:
    # -n prints the recipe without running it; -B as if the venv were missing. Run under
    # `make test`, the parent's MAKEFLAGS would add "Entering directory" lines: not inherited.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", ".venv/.installed-stamp"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    long_steps = [i for i, line in enumerate(dry) if " -m venv " in line or "pip install" in line]
    assert len(long_steps) == 3, dry
    for index in long_steps:
        assert index > 0 and dry[index - 1].startswith("echo "), dry
    assert "first run" in dry[0] and "about 2 minutes" in dry[0]

"""Every CLI usage error is one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["run"], "Missing argument"),
    (["run", "--workers", "abc", "x.yaml"], "integer"),
    (["--bogus"], "No such option"),
    (["select", "--method", "random"], "Missing option"),
    (["plan"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
])
def test_usage_errors_are_one_line(args, message):
    res = subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "╭" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), res.stderr


def test_no_arguments_prints_help_and_exits_non_zero():
    res = subprocess.run([sys.executable, "-m", "proxyscale.cli"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Usage" in res.stdout + res.stderr and "Traceback" not in res.stderr

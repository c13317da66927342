"""The oracle import helper: a missing oracle skips on a developer's machine and fails under CI=true."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import oracles
from oracles import oracle

MISSING = "proxyscale_no_such_oracle"


def test_present_oracle_is_the_module():
    assert oracle("json") is json
    assert oracle("os.path") is os.path


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_missing_oracle_skips_outside_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match=f"oracle '{MISSING}' is not installed.*`make test` installs it"):
        oracle(MISSING)


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_oracle_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=f"CI=true: oracle '{MISSING}' is not installed.*`make test`"):
        oracle(MISSING)
    assert oracles.in_ci()


def test_unset_ci_is_local(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not oracles.in_ci()
    with pytest.raises(pytest.skip.Exception, match="^Chromium is not installed; apt-get installs it$"):
        oracles.missing("Chromium", hint="apt-get installs it")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="^CI=true: Chromium is not installed; apt-get installs it$"):
        oracles.missing("Chromium", hint="apt-get installs it")


def _pytest_on(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """A real pytest run of a test module that needs a missing oracle at import time."""
    (tmp_path / "test_needs_oracle.py").write_text(f"from oracles import oracle\n\nmod = oracle({MISSING!r})\n\n\n"
                                                   "def test_uses_it():\n    assert mod\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path / "test_needs_oracle.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_real_pytest_run_fails_only_under_ci(tmp_path):
    local = _pytest_on(tmp_path, None)
    # 5: pytest ran no test (the module skipped whole); 2: a collection error stopped the run
    assert local.returncode == 5 and "1 skipped" in local.stdout, local.stdout
    ci = _pytest_on(tmp_path, "true")
    assert ci.returncode == 2, ci.stdout
    assert "1 error" in ci.stdout and "`make test` installs it" in ci.stdout, ci.stdout

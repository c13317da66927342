"""Independent implementations the tests check against ("oracles"), imported so that a missing
one can never pass unnoticed in CI.

``make test`` installs every oracle (the ``test`` extra, plus traker and mup). On a developer's
machine without one, the tests that need it skip; under ``CI=true`` they fail, because a check
that silently skips in CI checks nothing.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

INSTALL_HINT = "`make test` installs it"


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, why: str = "") -> None:
    """Skip the calling test (or module) because ``what`` is missing; fail it instead under CI."""
    line = f"{what} is not installed{f' ({why})' if why else ''}; {INSTALL_HINT}"
    if in_ci():
        pytest.fail(f"CI=true: {line}", pytrace=False)
    pytest.skip(line, allow_module_level=True)


def oracle(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.stats"``); skip locally, fail under ``CI=true``, if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing(f"oracle '{module}'", str(e))
        raise  # unreachable: missing() always raises

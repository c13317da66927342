"""Independent implementations the tests check against ("oracles"), imported so that a missing
one can never pass unnoticed in CI.

``make test`` installs every oracle (the ``test`` extra, plus traker and mup). On a developer's
machine without one, the tests that need it skip; under ``CI=true`` they fail, because a check
that silently skips in CI checks nothing.
"""
from __future__ import annotations

import importlib
import math
import os
from types import ModuleType

import pytest

INSTALL_HINT = "`make test` installs it"


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, why: str = "", hint: str = INSTALL_HINT) -> None:
    """Skip the calling test (or module) because ``what`` is missing; fail it instead under CI.
    ``hint`` says what installs it."""
    line = f"{what} is not installed{f' ({why})' if why else ''}; {hint}"
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


# -- oracles written out here, loop by loop, from their definitions -------------------------------


def holm_by_hand(p_values) -> list[float]:
    """Holm's step-down adjustment from its definition, in plain Python: ``nan`` entries are not
    tests; the rest sorted ascending p_(1) ≤ … ≤ p_(m) get adjusted p_(i) = max over j ≤ i of
    min(1, (m − j + 1) · p_(j)). Tied p-values get the same adjusted value whatever their order."""
    p = [float(v) for v in p_values]
    tests = [i for i, v in enumerate(p) if not math.isnan(v)]
    ranked = sorted(tests, key=lambda i: p[i])
    m = len(ranked)
    out = [math.nan] * len(p)
    running = 0.0
    for j, i in enumerate(ranked, start=1):
        running = max(running, min(1.0, (m - j + 1) * p[i]))
        out[i] = running
    return out

"""How much one training distribution, or the number of tests run, moves a conclusion.

With ~8 distributions per fit, one outlying distribution can carry an R² on its own (SPEC §4),
and a table of proxy × test-set permutation tests makes some p < 0.05 by chance. This module
holds the plain-numpy tools the analysis uses against both:

- :func:`loo_r2`: the R² of the line refitted with each point left out in turn.
- :func:`cooks_distance`: Cook's distance of each point in the simple regression y ≈ a + b·x,
  ``D_i = e_i² / (p·s²) · h_ii / (1 − h_ii)²`` with p = 2 coefficients, s² = SSE / (n − 2),
  e_i the residual and h_ii the leverage.
- :func:`holm`: Holm's step-down adjustment of a family of p-values (controls the
  family-wise error rate under any dependence between the tests — the test sets here share
  distributions and models, so they are far from independent).
- :func:`carried_by_one`: the rule the report uses to flag a result one point carries.

Written here rather than taken from statsmodels, which is not a runtime dependency; the
tests check each against its definition (refits, the brute-force Holm closure).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from . import stats


def loo_r2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² of the linear fit without point i, for each i: shape (n,). ``nan`` for n < 4."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if len(y) != n:
        raise DataError(f"x and y need the same number of points, got {n} and {len(y)}")
    if n < 4:  # 2 points left would always fit exactly
        return np.full(n, np.nan)
    keep = ~np.eye(n, dtype=bool)  # row i keeps every point but i
    xs = np.broadcast_to(x, (n, n))[keep].reshape(n, n - 1)
    ys = np.broadcast_to(y, (n, n))[keep].reshape(n, n - 1)
    return np.asarray(stats.r2_linear(xs, ys), dtype=np.float64)


def cooks_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cook's distance of each point in the OLS fit y ≈ a + b·x: shape (n,).

    ``nan`` everywhere when the fit has no residual degrees of freedom (n ≤ 2), x is constant,
    or the fit is exact (s² = 0); ``inf`` for a point with leverage 1.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n, p = len(x), 2
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if n <= p or sxx <= 0:
        return np.full(n, np.nan)
    b = float(xc @ (y - y.mean())) / sxx
    resid = y - (y.mean() + b * xc)
    s2 = float(resid @ resid) / (n - p)
    yc = y - y.mean()
    if s2 <= 1e-20 * float(yc @ yc) / (n - p) or s2 <= 1e-300:  # an exact fit up to rounding
        return np.full(n, np.nan)
    h = 1.0 / n + xc * xc / sxx
    with np.errstate(divide="ignore"):
        return resid * resid / (p * s2) * h / np.square(1.0 - h)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, same shape as the input; ``nan`` entries are not tests.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
    Rejecting where the adjusted p ≤ α controls the family-wise error rate at α.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise DataError("p-values must lie in [0, 1]")
    vals = p[ok]
    m = len(vals)
    if m == 0:
        return out
    order = np.argsort(vals, kind="mergesort")
    scaled = np.minimum(1.0, (m - np.arange(m)) * vals[order])
    adj = np.empty(m)
    adj[order] = np.maximum.accumulate(scaled)
    out[ok] = adj
    return out


def carried_by_one(r2: float, r2_loo_min: float, threshold: float, min_drop: float = 0.1,
                   min_r2: float = 0.25) -> bool:
    """True when dropping one distribution halves an R² of at least ``min_r2`` (below it there is
    no agreement to carry), or takes a passing R² below ``threshold`` by at least ``min_drop``
    (0.93 → 0.89 at a 0.9 threshold is noise, 0.95 → 0.64 is not)."""
    if not (math.isfinite(r2) and math.isfinite(r2_loo_min)):
        return False
    halved = r2 >= min_r2 and r2_loo_min < 0.5 * r2
    return bool(halved or (r2 >= threshold > r2_loo_min and r2 - r2_loo_min >= min_drop))


def loo_decision_accuracy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Decision accuracy without point i, for each i: shape (n,). ``nan`` for n < 4."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 4:
        return np.full(n, np.nan)
    keep = ~np.eye(n, dtype=bool)
    xs = np.broadcast_to(x, (n, n))[keep].reshape(n, n - 1)
    ys = np.broadcast_to(y, (n, n))[keep].reshape(n, n - 1)
    return np.asarray(stats.decision_accuracy(xs, ys), dtype=np.float64)


def carried_past_threshold(value: float, loo_min: float, threshold: float, min_drop: float = 0.05) -> bool:
    """True when a passing score falls below ``threshold`` by at least ``min_drop`` without one
    distribution: the decision-accuracy test (halving means nothing for a score whose chance
    level is 0.5; leaving one of 8 distributions out removes a quarter of the pairs)."""
    if not (math.isfinite(value) and math.isfinite(loo_min)):
        return False
    return bool(value >= threshold > loo_min and value - loo_min >= min_drop)

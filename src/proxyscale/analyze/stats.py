"""Small-sample statistics in plain numpy (no scipy at runtime).

Every function here works on the handful of points a proxy study produces (one per training
distribution), so clarity beats asymptotic speed. Conventions:

- A statistic that is undefined (constant input, fewer than 2 points) is ``nan``, never an error.
- :func:`pearson`, :func:`r2_linear` and :func:`decision_accuracy` also accept batched inputs of
  shape ``(..., n)`` and reduce over the last axis, so bootstraps and permutation tests run as
  array operations instead of Python loops.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from ..errors import DataError

Alternative = Literal["greater", "less", "two-sided"]
_PAIR_CHUNK = 2_000_000  # pair comparisons per block in decision_accuracy
_EXACT_MAX_N = 8  # 8! = 40,320 permutations: cheap as one array, exact p-values


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[-1] != y.shape[-1]:
        raise DataError(f"x and y need the same number of points, got {x.shape[-1]} and {y.shape[-1]}")
    return x, y


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """Pearson correlation over the last axis; ``nan`` where either side is constant."""
    x, y = _pair(x, y)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / den
    r = np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)
    return float(r) if r.ndim == 0 else r


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array; tied values share the average of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks, so ties are handled)."""
    x, y = _pair(x, y)
    return float(pearson(rankdata(x), rankdata(y)))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b: (concordant − discordant) / sqrt((n0 − ties_x)(n0 − ties_y)).

    O(n²) over all pairs, which is right for tens to a few thousand points.
    """
    x, y = _pair(x, y)
    i, j = np.triu_indices(len(x), k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[i] - y[j])
    n_x = np.count_nonzero(sx)  # pairs not tied in x
    n_y = np.count_nonzero(sy)
    if n_x == 0 or n_y == 0:
        return math.nan
    return float(np.sum(sx * sy) / math.sqrt(n_x * n_y))


def r2_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """R² of the ordinary least-squares line y ≈ a + b·x (equals pearson² for one regressor).

    ``nan`` when y is constant (R² undefined); 0 when x is constant (the fit is the mean).
    """
    x, y = _pair(x, y)
    yc = y - y.mean(axis=-1, keepdims=True)
    ss_tot = (yc * yc).sum(axis=-1)
    r = np.asarray(pearson(x, y))
    xc = x - x.mean(axis=-1, keepdims=True)
    x_const = (xc * xc).sum(axis=-1) == 0
    out = np.where(ss_tot > 0, np.where(x_const, 0.0, r * r), np.nan)
    return float(out) if out.ndim == 0 else out


def decision_accuracy(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """Fraction of pairs i < j with sign(x_i − x_j) == sign(y_i − y_j).

    Tie rule: sign(0) = 0 on both sides, so a pair tied in both x and y agrees and a pair tied
    on one side only disagrees (the proxy failed to make, or made a spurious, distinction).
    ``nan`` with fewer than two points.
    """
    x, y = _pair(x, y)
    n = x.shape[-1]
    xb, yb = np.broadcast_arrays(x, y)
    lead = xb.shape[:-1]
    if n < 2:
        out = np.full(lead, np.nan)
        return float(out) if out.ndim == 0 else out
    i, j = np.triu_indices(n, k=1)
    fx, fy = xb.reshape(-1, n), yb.reshape(-1, n)
    flat = np.empty(len(fx))
    step = max(1, _PAIR_CHUNK // len(i))  # bounded temporaries: 1000 replicates × 400 points is 80M pairs
    for s in range(0, len(fx), step):
        xs, ys = fx[s:s + step], fy[s:s + step]
        agree = np.sign(xs[:, i] - xs[:, j]).astype(np.int8) == np.sign(ys[:, i] - ys[:, j]).astype(np.int8)
        flat[s:s + step] = agree.mean(axis=1)
    out = flat.reshape(lead)
    return float(out) if out.ndim == 0 else out


def _design(z: np.ndarray | None, n: int) -> np.ndarray:
    """Intercept column plus the controls z ((n,) or (n, k))."""
    cols = [np.ones((n, 1))]
    if z is not None:
        z = np.asarray(z, dtype=np.float64)
        z = z.reshape(n, -1) if z.ndim == 1 else z
        if z.shape[0] != n:
            raise DataError(f"controls z have {z.shape[0]} rows, expected {n}")
        cols.append(z)
    return np.hstack(cols)


def residualize(v: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """Residuals of v (…, n) after least-squares regression on [1, z]."""
    v = np.asarray(v, dtype=np.float64)
    a = _design(z, v.shape[-1])  # (n, k+1)
    coef, *_ = np.linalg.lstsq(a, np.moveaxis(v, -1, 0).reshape(v.shape[-1], -1), rcond=None)
    fitted = (a @ coef).reshape((v.shape[-1],) + v.shape[:-1])
    return v - np.moveaxis(fitted, 0, -1)


def partial_correlation(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> float:
    """Correlation of x and y after removing what a linear function of z explains.

    z may be one control (n,) or a matrix of controls (n, k); ``None`` gives plain Pearson.
    """
    x, y = _pair(x, y)
    return float(pearson(residualize(x, z), residualize(y, z)))


@dataclass(frozen=True)
class PermutationResult:
    """Observed statistic, its p-value, and how the null was formed."""

    statistic: float
    p_value: float
    n_permutations: int
    exact: bool


@functools.lru_cache(maxsize=_EXACT_MAX_N)
def _all_permutations(n: int) -> np.ndarray:
    out = np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(-1, n)  # (n!, n)
    out.setflags(write=False)  # shared by every caller through the cache
    return out


def _permutations(n: int, rng: np.random.Generator | None, n_resamples: int) -> tuple[np.ndarray, bool]:
    if n <= _EXACT_MAX_N:
        return _all_permutations(n), True
    if rng is None:
        raise DataError(f"{n} points is too many for an exact permutation test; pass an np.random.Generator")
    perms = np.argsort(rng.random((n_resamples, n)), axis=1)
    return np.vstack([np.arange(n), perms]), False  # the observed order counts once


def permutation_test(statistic: Callable[[np.ndarray], np.ndarray], n: int, *,
                     rng: np.random.Generator | None = None, n_resamples: int = 9999,
                     alternative: Alternative = "greater") -> PermutationResult:
    """Permutation test over ``n`` exchangeable units (e.g. training distributions).

    ``statistic(perms)`` receives an int array (P, n) of index permutations (row 0 is the
    identity) and returns (P,) values. With n ≤ 8 all n! orders are enumerated (an exact p);
    otherwise ``n_resamples`` random orders are drawn from ``rng`` and the identity is added,
    giving the usual (1 + #extreme) / (1 + n_resamples). "two-sided" compares |stat|.
    """
    perms, exact = _permutations(n, rng, n_resamples)
    if not np.array_equal(perms[0], np.arange(n)):  # exact enumeration starts at identity too
        raise AssertionError("first permutation must be the identity")
    values = np.asarray(statistic(perms), dtype=np.float64)
    obs = values[0]
    if not np.isfinite(obs):
        return PermutationResult(math.nan, math.nan, len(perms), exact)
    tol = 1e-12 * max(1.0, abs(obs))  # equal-up-to-rounding counts as "as extreme"
    vals = np.nan_to_num(values, nan=-np.inf if alternative != "less" else np.inf)
    if alternative == "greater":
        hits = vals >= obs - tol
    elif alternative == "less":
        hits = vals <= obs + tol
    else:
        hits = np.abs(np.nan_to_num(values, nan=0.0)) >= abs(obs) - tol
    return PermutationResult(float(obs), float(hits.mean()), len(perms), exact)


def partial_corr_permutation(x: np.ndarray, y: np.ndarray, z: np.ndarray | None, *,
                             rng: np.random.Generator | None = None, n_resamples: int = 9999,
                             alternative: Alternative = "greater") -> PermutationResult:
    """Permutation p for the partial correlation of x and y given z (Freedman–Lane).

    Under the null, x carries nothing about y beyond z, so the residuals of x on z are
    exchangeable: permute them, re-residualize on z and correlate with y's residuals.
    With z ``None`` this is the plain permutation test of Pearson's r.
    """
    x, y = _pair(x, y)
    rx = residualize(x, z)
    ry = residualize(y, z)

    def stat(perms: np.ndarray) -> np.ndarray:
        rxp = residualize(rx[perms], z)  # (P, n)
        return np.asarray(pearson(rxp, np.broadcast_to(ry, rxp.shape)))

    return permutation_test(stat, len(x), rng=rng, n_resamples=n_resamples, alternative=alternative)


def bootstrap_seeds_ci(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       x_seeds: np.ndarray, y_seeds: np.ndarray, *, rng: np.random.Generator,
                       n_boot: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``statistic(mean x, mean y)`` resampling seeds within each model.

    ``x_seeds`` (Sx, n) and ``y_seeds`` (Sy, n) hold one row per seed and one column per
    point (distribution). Each replicate draws Sx rows of x and Sy rows of y with replacement,
    averages them, and evaluates ``statistic`` on the batch (B, n), (B, n) → (B,). A model
    with one seed contributes no variation. Replicates giving ``nan`` are dropped.

    With 2 seeds this is degenerate (three distinct means per point, variance halved; on
    synthetic studies it covers the truth far less often than it claims). The analysis uses
    :mod:`proxyscale.analyze.bootstrap` (test examples × seeds); this stays for comparison.
    """
    x_seeds = np.atleast_2d(np.asarray(x_seeds, dtype=np.float64))
    y_seeds = np.atleast_2d(np.asarray(y_seeds, dtype=np.float64))
    if not 0 < level < 1:
        raise DataError(f"confidence level must be in (0, 1), got {level}")
    ix = rng.integers(0, len(x_seeds), size=(n_boot, len(x_seeds)))
    iy = rng.integers(0, len(y_seeds), size=(n_boot, len(y_seeds)))
    xb = x_seeds[ix].mean(axis=1)  # (B, n)
    yb = y_seeds[iy].mean(axis=1)  # (B, n)
    vals = np.asarray(statistic(xb, yb), dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(vals, [alpha, 1 - alpha])
    return float(lo), float(hi)

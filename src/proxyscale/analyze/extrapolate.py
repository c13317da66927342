"""Ladder extrapolation: predict the reference's loss from the proxy rungs' losses.

For each (test set, distribution) the proxies give points (C_i, L_i) (training FLOPs, mean
test loss averaged over seeds). With ≥ 3 rungs we fit the saturating power law

    L(C) = E + A · (C / C_max)^(−α),   E ≥ 0, A ≥ 0, α ∈ [0.005, 4]

(C_max = the largest proxy's compute, so A is a loss and the fit is well scaled). For a fixed α
the model is linear in (E, A); we solve that non-negative least squares exactly by checking
its few active sets, scan α on a log grid and refine the best with a golden-section search.
With exactly 2 rungs the fit is a line in log C; with 1 it is a constant ("single").
The fitted curve is evaluated at the reference's compute. Whether these predictions track
the reference across distributions better than the best single proxy is then reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError
from . import stats
from .bootstrap import robust_ci

_ALPHA_GRID = np.geomspace(0.005, 4.0, 160)
_FINE_GRID = np.geomspace(0.005, 4.0, 1200)  # predict_many: no refinement, so α steps of 0.6%


@dataclass(frozen=True)
class LadderFit:
    """A fitted loss-vs-compute curve; ``method`` is 'power_law', 'log_linear' or 'single'."""

    method: str
    E: float
    A: float
    alpha: float
    c_scale: float
    sse: float

    def predict(self, c: np.ndarray | float) -> np.ndarray | float:
        """Loss at compute ``c`` (FLOPs)."""
        x = np.asarray(c, dtype=np.float64) / self.c_scale
        if self.method == "power_law":
            out = self.E + self.A * x ** (-self.alpha)
        elif self.method == "log_linear":
            out = self.E + self.A * np.log(x)  # E intercept at C_max, A slope per e-fold
        else:
            out = np.full_like(x, self.E)
        return float(out) if np.ndim(out) == 0 else out


def _nnls2(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """min ‖E + A·u − y‖² over E ≥ 0, A ≥ 0, by enumerating the active sets."""
    best = (math.inf, 0.0, 0.0)
    a = np.column_stack([np.ones_like(u), u])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    cands = [(float(coef[0]), float(coef[1]))] if coef.min() >= 0 else []
    uu = float(u @ u)
    if uu > 0:
        cands.append((0.0, max(float(u @ y) / uu, 0.0)))
    cands.append((max(float(y.mean()), 0.0), 0.0))
    for e, amp in cands:
        r = e + amp * u - y
        sse = float(r @ r)
        if sse < best[0]:
            best = (sse, e, amp)
    return best


def _profile(alpha: float, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    return _nnls2(x ** (-alpha), y)


def fit_ladder(compute: np.ndarray, loss: np.ndarray) -> LadderFit:
    """Fit loss against compute over the proxy rungs (see the module docstring)."""
    c = np.asarray(compute, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(y) & (c > 0)
    c, y = c[ok], y[ok]
    if len(c) == 0:
        raise DataError("no rung with positive compute and a finite loss to extrapolate from")
    scale = float(c.max())
    x = c / scale
    if len(np.unique(c)) == 1:
        return LadderFit("single", float(y.mean()), 0.0, 0.0, scale, float(((y - y.mean()) ** 2).sum()))
    if len(np.unique(c)) == 2:
        slope, icpt = np.polyfit(np.log(x), y, 1)
        r = icpt + slope * np.log(x) - y
        return LadderFit("log_linear", float(icpt), float(slope), 0.0, scale, float(r @ r))
    sse = np.array([_profile(a, x, y)[0] for a in _ALPHA_GRID])
    i = int(np.argmin(sse))
    lo, hi = _ALPHA_GRID[max(i - 1, 0)], _ALPHA_GRID[min(i + 1, len(_ALPHA_GRID) - 1)]
    alpha = _golden(lambda a: _profile(a, x, y)[0], lo, hi)
    if _profile(alpha, x, y)[0] > sse[i]:
        alpha = float(_ALPHA_GRID[i])
    s, e, amp = _profile(alpha, x, y)
    return LadderFit("power_law", e, amp, float(alpha), scale, s)


def _golden(f, lo: float, hi: float, iters: int = 60) -> float:
    """Minimise a unimodal f on [lo, hi] (log-spaced, since α spans decades)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(lo), math.log(hi)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def extrapolate(points: pd.DataFrame, rungs: pd.DataFrame, reference_flops: float) -> pd.DataFrame:
    """Per (test_set, distribution): fit the ladder and predict the reference's loss.

    ``points``: columns test_set, model, distribution, x (proxy mean loss), y (reference mean
    loss). ``rungs``: columns model, flops for the neural proxies to use. Returns test_set,
    distribution, method, E, A, alpha, n_rungs, predicted, reference.
    """
    if not reference_flops > 0:
        raise DataError("the reference model's flops must be positive to extrapolate to it")
    flops = rungs.set_index("model")["flops"].astype(float)
    p = points[points["model"].isin(flops.index)]
    rows = []
    for (ts, dist), g in p.groupby(["test_set", "distribution"], sort=True):
        fit = fit_ladder(flops.loc[g["model"]].to_numpy(), g["x"].to_numpy())
        rows.append((ts, dist, fit.method, fit.E, fit.A, fit.alpha, len(g),
                     float(fit.predict(reference_flops)), float(g["y"].iloc[0])))
    cols = ["test_set", "distribution", "method", "E", "A", "alpha", "n_rungs", "predicted", "reference"]
    return pd.DataFrame(rows, columns=cols)


def extrapolation_summary(extra: pd.DataFrame, summary: pd.DataFrame, points: pd.DataFrame,
                          rungs: list[str], diffs: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Per test set: how well the extrapolated losses track the reference, vs the best proxy.

    Affine-invariant scores (R², decision accuracy) compare with the summary's best neural
    proxy; MAE measures absolute calibration against using the largest proxy's loss as is.
    ``diffs`` (test set -> :func:`paired_difference`) gives the differences' intervals:
    ``beats_best_r2`` / ``beats_best_decision`` are True only when the interval lies above 0
    (a difference inside the resampling noise is not a win).
    """
    rows = []
    if not rungs:
        return pd.DataFrame()
    for ts, g in extra.groupby("test_set", sort=True):
        pred, ref = g["predicted"].to_numpy(), g["reference"].to_numpy()
        s = summary[(summary["test_set"] == ts) & summary["model"].isin(rungs)]
        best = s.loc[s["r2"].idxmax()] if s["r2"].notna().any() else None
        largest = rungs[-1]  # rungs arrive ordered by compute
        lp = points[(points["test_set"] == ts) & (points["model"] == largest)]
        r2 = float(stats.r2_linear(pred, ref))
        da = float(stats.decision_accuracy(pred, ref))
        rows.append({
            "test_set": ts, "n_dist": len(g), "method": ",".join(sorted(set(g["method"]))),
            "r2": r2, "pearson": float(stats.pearson(pred, ref)), "decision_accuracy": da,
            "mae": float(np.mean(np.abs(pred - ref))),
            "best_proxy": None if best is None else best["model"],
            "best_proxy_r2": math.nan if best is None else float(best["r2"]),
            "best_proxy_decision_accuracy": math.nan if best is None else float(best["decision_accuracy"]),
            "largest_proxy": largest,
            "largest_proxy_mae": float(np.mean(np.abs(lp["x"] - lp["y"]))) if len(lp) else math.nan,
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    keys = ("r2_diff", "r2_diff_lo", "r2_diff_hi", "decision_diff", "decision_diff_lo", "decision_diff_hi")
    for k in keys:
        out[k] = [float((diffs or {}).get(ts, {}).get(k, math.nan)) for ts in out["test_set"]]
    out["r2_diff"] = out["r2"] - out["best_proxy_r2"]
    out["decision_diff"] = out["decision_accuracy"] - out["best_proxy_decision_accuracy"]
    out["beats_best_r2"] = out["r2_diff_lo"] > 0
    out["beats_best_decision"] = out["decision_diff_lo"] > 0
    return out


def predict_many(compute: np.ndarray, losses: np.ndarray, target: float) -> np.ndarray:
    """:func:`fit_ladder` for many series at once, evaluated at ``target`` compute: (N,).

    ``losses`` (N, K) over the K rungs of ``compute`` (K,), e.g. bootstrap replicates of every
    distribution's rung losses. The power law's α is taken from the grid without the golden-section
    refinement, on a grid fine enough (steps of 0.6% in α) that 15× beyond the largest rung the
    prediction moves by a few 10⁻³ of a loss. Rows with a non-finite loss give ``nan``."""
    c = np.asarray(compute, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    out = np.full(len(y), np.nan)
    ok = np.isfinite(y).all(axis=1)
    y = y[ok]
    scale, n_unique = float(c.max()), len(np.unique(c))
    x, xt = c / scale, target / scale
    if n_unique == 1:
        out[ok] = y.mean(axis=1)
    elif n_unique == 2:
        a = np.column_stack([np.ones_like(x), np.log(x)])
        coef = np.linalg.lstsq(a, y.T, rcond=None)[0]  # (2, N)
        out[ok] = coef[0] + coef[1] * math.log(xt)
    else:
        out[ok] = _power_law_many(x, y, xt)
    return out


def _power_law_many(x: np.ndarray, y: np.ndarray, xt: float) -> np.ndarray:
    """Grid search over α of the non-negative fit E + A·x^−α, from sums (no per-series loop)."""
    k = len(x)
    sy, syy = y.sum(axis=1), (y * y).sum(axis=1)
    best = np.full(len(y), np.inf)
    pred = np.zeros(len(y))
    for alpha in _FINE_GRID:
        u = x ** (-alpha)
        su, suu = float(u.sum()), float(u @ u)
        suy = y @ u  # (N,)
        det = k * suu - su * su
        cands = []
        if det > 0:
            e = (suu * sy - su * suy) / det
            amp = (k * suy - su * sy) / det
            cands.append((np.where((e >= 0) & (amp >= 0), e, np.nan), np.where((e >= 0) & (amp >= 0), amp, np.nan)))
        cands.append((np.zeros_like(sy), np.maximum(suy / suu, 0.0)))
        cands.append((np.maximum(sy / k, 0.0), np.zeros_like(sy)))
        ut = xt ** (-alpha)
        for e, amp in cands:
            sse = syy - 2 * e * sy - 2 * amp * suy + k * e * e + 2 * e * amp * su + amp * amp * suu
            better = np.isfinite(sse) & (sse < best)
            best = np.where(better, sse, best)
            pred = np.where(better, e + amp * ut, pred)
    return pred


def paired_difference(pred_b: np.ndarray, best_b: np.ndarray, ref_b: np.ndarray, point: tuple[float, float],
                      level: float) -> dict[str, float]:
    """Replicate differences (extrapolation − best proxy) of R² and decision accuracy against the
    reference, on the same replicates (B, D) for all three, and their intervals."""
    out = {}
    for key, fn, est in (("r2", stats.r2_linear, point[0]), ("decision", stats.decision_accuracy, point[1])):
        ok = np.isfinite(pred_b).all(axis=1) & np.isfinite(best_b).all(axis=1) & np.isfinite(ref_b).all(axis=1)
        diff = np.asarray(fn(pred_b[ok], ref_b[ok])) - np.asarray(fn(best_b[ok], ref_b[ok]))
        lo, hi = robust_ci(diff, est, level, (-1.0, 1.0)) if ok.sum() >= 2 else (math.nan, math.nan)
        out[f"{key}_diff"], out[f"{key}_diff_lo"], out[f"{key}_diff_hi"] = est, lo, hi
    return out

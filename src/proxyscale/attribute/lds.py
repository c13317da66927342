"""The linear datamodeling score (LDS) and the retraining that produces its ground truth.

For attribution scores τ(z) ∈ Rⁿ of a target z, the attribution's prediction for a model
trained on subset D_i is Σ_{k∈D_i} τ(z)_k (= maskᵢ · τ(z)). LDS is the Spearman correlation,
over subsets, between that prediction and the measured output f(z; θ(D_i)), averaged over
targets (SPEC §5). Ground truth: train models on each α-subset with several seeds and
average their outputs (the classification margin, as in the attribution itself); the
retraining lives in :mod:`proxyscale.attribute.retrain`. Pure numpy: no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ..errors import ConfigError
from .subsets import check_masks


@dataclass(frozen=True)
class LDSResult:
    """Per-target Spearman (T,) (NaN where undefined), their mean and a bootstrap CI."""

    per_target: np.ndarray
    mean: float
    ci_low: float
    ci_high: float
    n_valid: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "n_valid": self.n_valid, "n_targets": int(len(self.per_target))}


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks along axis 0 (1-based), ties sharing their average rank, for every column."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    ranks = np.empty_like(flat)
    for c in range(flat.shape[1]):
        col = flat[:, c]
        order = np.argsort(col, kind="mergesort")
        sorted_col = col[order]
        # run boundaries of equal values: each run gets the mean of the ranks it spans
        starts = np.r_[True, sorted_col[1:] != sorted_col[:-1]]
        run_id = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        last = np.r_[first[1:], len(col)] - 1
        avg = (first + last) / 2.0 + 1.0
        ranks[order, c] = avg[run_id]
    return ranks.reshape(a.shape)


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column pair of ``a`` and ``b`` (m, T) → (T,); NaN for a
    constant column."""
    if a.shape != b.shape or a.ndim != 2:
        raise ConfigError(f"need two (m, T) arrays of equal shape; got {a.shape} and {b.shape}")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    denom = np.sqrt((ra ** 2).sum(axis=0) * (rb ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=0) / np.where(denom > 0, denom, 1.0), np.nan)


def bootstrap_mean_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling the values)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def lds(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray, rng: Optional[np.random.Generator] = None,
        n_boot: int = 1000, level: float = 0.95) -> LDSResult:
    """LDS of ``scores`` (n_train, T) against ground truth ``outputs`` (m, T) measured on models
    trained on ``masks`` (m, n_train). Outputs with a seed axis (m, S, T) are averaged over
    seeds first. The CI resamples targets (needs ``rng``; NaN without one)."""
    scores = np.asarray(scores, dtype=np.float64)
    masks = check_masks(masks, scores.shape[0] if scores.ndim == 2 else None)
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 3:
        outputs = outputs.mean(axis=1)
    if scores.ndim != 2 or outputs.shape != (masks.shape[0], scores.shape[1]):
        raise ConfigError(f"need scores (n_train, T), masks (m, n_train), outputs (m, T); got "
                          f"{scores.shape}, {masks.shape}, {outputs.shape}")
    predicted = masks.astype(np.float64) @ scores  # (m, T)
    per = spearman_columns(predicted, outputs)
    valid = per[np.isfinite(per)]
    if len(valid) == 0:
        raise ConfigError("LDS is undefined for every target (constant predictions or outputs); "
                          "check that scores are not all zero and that models differ across subsets")
    lo, hi = bootstrap_mean_ci(valid, rng, n_boot, level) if rng is not None else (float("nan"),) * 2
    return LDSResult(per, float(valid.mean()), lo, hi, int(len(valid)))


def seed_agreement(outputs: np.ndarray) -> float:
    """Noise ceiling of the ground truth: mean over targets of the Spearman correlation, over
    subsets, between two seeds' outputs (m, S ≥ 2, T) (the first two seeds are compared)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 3 or outputs.shape[1] < 2:
        raise ConfigError(f"need outputs (m, S ≥ 2, T) to compare seeds; got shape {outputs.shape}")
    return float(np.nanmean(spearman_columns(outputs[:, 0], outputs[:, 1])))


def lds_ceiling(outputs: np.ndarray) -> float:
    """The LDS a perfect predictor could reach against these outputs (m, S ≥ 2, T) averaged
    over their S seeds, mean over targets.

    With y_s = f + e_s (independent seed noise) the seed-to-seed agreement is ρ = var f /
    (var f + var e), and the correlation of f with the S-seed mean is √(Sρ / (1 + (S − 1)ρ))
    (Spearman–Brown). ρ is estimated per target from the first two seeds (floored at 0). This,
    not ρ itself, bounds the LDS: a noise-free predictor can exceed the seed-to-seed agreement."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 3 or outputs.shape[1] < 2:
        raise ConfigError(f"need outputs (m, S ≥ 2, T) to compare seeds; got shape {outputs.shape}")
    rho = np.clip(spearman_columns(outputs[:, 0], outputs[:, 1]), 0.0, 1.0)
    s = outputs.shape[1]
    return float(np.nanmean(np.sqrt(s * rho / (1 + (s - 1) * rho))))


def paired_difference(a: LDSResult, b: LDSResult, rng: np.random.Generator, n_boot: int = 1000,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Mean over targets of LDS(a) − LDS(b) on the same targets, with a bootstrap CI that
    resamples targets (pairs kept together): (mean, low, high)."""
    d = np.asarray(a.per_target, dtype=np.float64) - np.asarray(b.per_target, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        raise ConfigError("no target has both LDS values defined")
    lo, hi = bootstrap_mean_ci(d, rng, n_boot, level)
    return float(d.mean()), lo, hi


def choose_by_lds(candidates: Mapping[str, np.ndarray], masks: np.ndarray,
                  outputs: np.ndarray) -> tuple[str, dict[str, float]]:
    """The candidate score matrix with the best mean LDS on (held-out) subsets, and all means."""
    if not candidates:
        raise ConfigError("choose_by_lds needs at least one candidate score matrix")
    means = {name: lds(s, masks, outputs).mean for name, s in candidates.items()}
    return max(means, key=means.get), means  # type: ignore[arg-type]

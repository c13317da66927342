"""Warnings about a finished selection that its numbers alone would hide.

**Length bias.** A score that sums over a document's n-grams (DSIR's log importance weight) grows
or shrinks with the document's length, so on whole documents of uneven length such a method
chooses by length as much as by content. :func:`length_bias` measures it: the Spearman rank
correlation ρ between score and length (characters) over the documents with a finite score, and
the lengths' coefficient of variation (std / mean). Lengths are *uneven* when that is at least
:data:`UNEVEN_CV`; the selection *follows length* when also ``|ρ| ≥`` :data:`BIAS_RHO` (over at
least :data:`MIN_DOCS` documents).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .progress import note, warn

UNEVEN_CV = 0.5  # e.g. lengths spread as 100 ± 50 characters or wider
BIAS_RHO = 0.5  # a rank correlation this strong means length explains much of the ordering
MIN_DOCS = 10


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of two equal-length samples: Pearson's r of their ranks (ties share the mean rank)."""
    import pandas as pd

    ra = pd.Series(a).rank().to_numpy(dtype=np.float64)
    rb = pd.Series(b).rank().to_numpy(dtype=np.float64)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def length_bias(scores: np.ndarray, lengths: np.ndarray) -> Optional[dict[str, float]]:
    """``{"rho", "cv", "n"}`` over the finitely scored documents, or None below :data:`MIN_DOCS`."""
    ok = np.isfinite(scores)
    s, n = np.asarray(scores, dtype=np.float64)[ok], np.asarray(lengths, dtype=np.float64)[ok]
    if len(s) < MIN_DOCS or n.mean() <= 0:
        return None
    return {"rho": round(spearman(s, n), 4), "cv": round(float(n.std() / n.mean()), 4), "n": int(len(s))}


def check_length_bias(method: str, scores: np.ndarray, lengths: np.ndarray) -> Optional[dict[str, float]]:
    """Record :func:`length_bias` and warn (one line) when the scores follow uneven lengths."""
    bias = length_bias(scores, lengths)
    if bias is None:
        return None
    note("length_bias", bias)
    if bias["cv"] >= UNEVEN_CV and abs(bias["rho"]) >= BIAS_RHO:
        favours = "short" if bias["rho"] < 0 else "long"
        warn(f"{method}: scores follow document length (Spearman ρ = {bias['rho']:+.2f} between score and "
             f"characters over {bias['n']:,} documents whose lengths vary widely, std/mean = {bias['cv']:.2f}), so "
             f"the selection favours {favours} documents; split the pool into pieces of similar length (e.g. "
             "paragraphs) and select again")
    return bias

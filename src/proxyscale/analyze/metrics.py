"""Per-example metrics the analysis can rank distributions by, and their orientation.

A results table always carries ``loss`` (per-token loss of the gold continuation, nats) and may
carry ``bpb`` (bits per byte), ``correct_prob`` (the gold choice's share of the choices'
probability) and ``accuracy`` (1 if the gold choice scores best; the scaling study's evaluator
calls it ``correct``, the lm-eval and Hugging Face readers ``accuracy``). SPEC §9 defines them.

Every statistic of the analysis (R², decision accuracy, the ladder fit) reads a metric as
"lower is better", like a loss. Loss and bpb already are; the two higher-is-better metrics are
turned into their complements, ``1 − correct_prob`` and ``1 − accuracy`` (the error rate), which
keeps them non-negative (the ladder fit's power law needs that) and keeps every ranking
pointing the same way. :func:`oriented` is the only place that flip happens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError


@dataclass(frozen=True)
class Metric:
    """One per-example metric: its results column, direction and how the report names it."""

    name: str
    columns: tuple[str, ...]  # the results column, first present wins
    higher_is_better: bool
    label: str          # what the analysed (lower-is-better) value is
    continuous: bool


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("loss", ("loss",), False, "per-token loss (nats)", True),
    Metric("bpb", ("bpb",), False, "bits per byte", True),
    Metric("correct_prob", ("correct_prob",), True, "1 − correct-choice probability", True),
    Metric("accuracy", ("accuracy", "correct"), True, "error rate (1 − accuracy)", False),
)}


def metric(name: str) -> Metric:
    """The metric called ``name``; a clear error for any other name."""
    if name not in METRICS:
        raise DataError(f"metric '{name}' is not one of {list(METRICS)}; set analysis.metric to one of them")
    return METRICS[name]


def oriented(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The metric's per-row values as "lower is better" (float64; nan where the row has none)."""
    m = metric(name)
    col = next((c for c in m.columns if c in frame.columns), None)
    if col is None:
        return np.full(len(frame), np.nan)
    v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    return 1.0 - v if m.higher_is_better else v


def coverage(values: np.ndarray) -> str:
    """'all', 'none' or 'partial': which rows of one test set carry the metric (``values``
    from :func:`oriented`).

    'partial' means some models (or some of their examples) lack it; the caller decides whether
    that is an error (the analysed metric) or a reason to leave the metric out (a side metric).
    """
    ok = np.isfinite(values)
    if ok.all():
        return "all"
    return "none" if not ok.any() else "partial"


def lacking_models(frame: pd.DataFrame, values: np.ndarray) -> list[str]:
    """Models with at least one row of ``frame`` lacking the metric (sorted)."""
    return sorted(set(frame.loc[~np.isfinite(values), "model"].astype(str)))

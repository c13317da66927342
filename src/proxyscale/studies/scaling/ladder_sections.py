"""The report's ladder sections: how small a proxy can be, and extrapolating along the ladder."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ...report.body import Body
from ...report.section import Section
from ...report.tables import from_frame

_METRIC_NAMES = {"r2": "R²", "decision_accuracy": "decision accuracy"}


def _ordered(df: pd.DataFrame, test_sets: list[str], *first: str) -> pd.DataFrame:
    order = {t: i for i, t in enumerate(test_sets)}
    df = df.assign(_o=df["test_set"].map(order))
    return df.sort_values([*first, "_o"], ascending=[False] * len(first) + [True])


def smallest_section(a: Mapping[str, pd.DataFrame], test_sets: list[str]) -> Section:
    """Per test set and metric: the smallest proxy from which every larger one passes."""
    b = Body()
    sp = a.get("smallest_proxy", pd.DataFrame())
    b.p("Per metric, the least-compute neural proxy from which every larger proxy reaches the threshold too. "
        "'Smallest passing' is the least-compute proxy that reaches it at all; where a larger proxy then fails "
        "('larger that fail'), that smaller one is no safe choice. Each row's 'carried by one distribution' is "
        "that metric's own leave-one-distribution-out test (R²: halved, or pushed below the threshold by ≥ 0.1; "
        "decision accuracy: pushed below the threshold by ≥ 0.05). The n-gram columns show whether a "
        "zero-compute baseline already reaches it.")
    if not sp.empty:
        sp = _ordered(sp, test_sets, "metric").assign(metric=lambda d: d["metric"].map(_METRIC_NAMES))
        b.table("How small can I go?", from_frame(sp, {
            "test_set": "test set", "metric": "metric", "threshold": "threshold",
            "model": "smallest proxy (every larger passes)", "compute_ratio": "compute saving (×)", "value": "value",
            "first_passing": "smallest passing", "fails_above": "larger that fail",
            "carried_by_one": "carried by one distribution",
            "best_ngram": "best n-gram", "best_ngram_value": "n-gram value", "ngram_reaches": "n-gram reaches"}))
    return b.section("Smallest sufficient proxy")


def beats_text(diff: float, lo: float, hi: float) -> str:
    """'yes' only when the paired interval of the difference lies above 0."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval" if np.isfinite(diff) else "—"
    ci = f"Δ {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    if lo > 0:
        return f"yes: {ci}"
    return f"no, worse: {ci}" if hi < 0 else f"no clear difference: {ci}"


def extrapolation_section(a: Mapping[str, pd.DataFrame], test_sets: list[str]) -> Section:
    """Extrapolated reference losses against the best single proxy, with paired intervals."""
    b = Body()
    es = a.get("extrapolation_summary", pd.DataFrame())
    b.p("Per distribution, loss is fitted against training compute across the neural rungs (a saturating power "
        "law E + A·C^−α with ≥ 3 rungs, a line in log C with 2) and evaluated at the reference's compute. "
        "R² and decision accuracy compare those predictions with the reference across distributions, beside "
        "the best single proxy; 'beats it' is yes only when the 95% bootstrap interval of the difference, "
        "paired over the same resamples of examples and seeds, lies above 0. MAE measures absolute error, beside "
        "using the largest proxy's loss as is.")
    if es.empty:
        b.p("Not available: the study has no neural proxy rungs with positive compute.")
        return b.section("Ladder extrapolation")
    es = _ordered(es, test_sets)
    cols = {k: es[k] if k in es.columns else np.nan for k in ("r2_diff", "r2_diff_lo", "r2_diff_hi", "decision_diff",
                                                            "decision_diff_lo", "decision_diff_hi")}
    es = es.assign(beats_r2=[beats_text(*v) for v in zip(cols["r2_diff"], cols["r2_diff_lo"], cols["r2_diff_hi"])],
                   beats_da=[beats_text(*v) for v in zip(cols["decision_diff"], cols["decision_diff_lo"],
                                                         cols["decision_diff_hi"])])
    b.table("Extrapolated reference loss", from_frame(es, {
        "test_set": "test set", "method": "fit", "r2": "R²", "decision_accuracy": "decision acc.",
        "mae": "MAE", "best_proxy": "best proxy", "best_proxy_r2": "its R²",
        "best_proxy_decision_accuracy": "its decision acc.", "beats_r2": "beats it (R²)",
        "beats_da": "beats it (decision acc.)", "largest_proxy_mae": "largest proxy MAE"}))
    return b.section("Ladder extrapolation")

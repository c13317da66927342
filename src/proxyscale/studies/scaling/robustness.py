"""The small-to-large report's robustness parts: what the numbers are, and how much one
training distribution moves them (leave-one-distribution-out R², Cook's distance)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...report.body import Body
from ...report.section import Section
from ...report.tables import fmt, from_frame, pivot

_LOSS_TEXT = {
    "example_mean": "the mean over test examples of each example's mean per-token loss (every example weighs "
                    "the same, however many tokens it predicts)",
    "token_mean": "the total loss over all predicted tokens divided by their number (long examples weigh more)",
}


def methods_text(st: pd.Series) -> str:
    """What every number below is, in one paragraph (loss, intervals, tests, robustness)."""
    loss = str(st.get("loss", "example_mean"))
    ci = st.get("ci_method", "percentile bootstrap over seeds")
    level = float(st.get("ci_level", 0.95))
    n_tests = st.get("n_tests", math.nan)
    # The family is every partial-r test of the summary: each proxy, the n-grams other than the best
    # one included, against the reference given the best n-gram, on each test set.
    adjust = (f"Holm-adjusted over the {int(n_tests)} partial-r tests of the summary (every proxy against the "
              f"reference given the best n-gram, on every test set; family-wise error). The family includes the "
              f"tests of the other n-gram baselines against the best n-gram: the report shows them in the same "
              f"table, so a reader could pick any of them, and leaving them out would make the adjustment "
              f"smaller than the number of p-values on show"
              if str(st.get("p_adjust", "")) == "holm" and np.isfinite(n_tests) else "not adjusted")
    metric = str(st.get("metric", "loss"))
    what = (f"Mean test loss is {_LOSS_TEXT.get(loss, loss)} [analysis.loss: {loss}]. " if metric == "loss" else
            f"Distributions are ranked by the mean over test examples of {st.get('metric_label', metric)} "
            f"[analysis.metric: {metric}]; lower is better. ")
    return (what + f"Intervals: {level:.0%}, {ci}, {int(st['n_boot'])} resamples; a seed term needs ≥ 2 seeds of "
            f"both models, otherwise the interval covers test-example sampling only. Permutation p-values are "
            f"one-sided and exact over distributions (≤ 8), {adjust}; findings use the adjusted p. "
            f"Leave-one-distribution-out: each R² is refitted with every distribution left out in turn; a result "
            f"is flagged as carried by one distribution when leaving it out halves an R² ≥ 0.25 or takes a passing "
            f"R² below the threshold (by at least 0.1). Influence: Cook's distance of each point in the fit of "
            f"reference on proxy loss (D > 1 is large; D > 4/n worth a look).")


def _loo_cell(r: pd.Series) -> str:
    if "r2_loo_min" not in r or not np.isfinite(r["r2_loo_min"]):
        return "—"
    flag = " (!)" if bool(r.get("one_point_carries", False)) else ""
    return (f"{fmt(r['r2_loo_min'], 2)} w/o {r['r2_loo_min_dist']}{flag}; "
            f"D {fmt(r['cooks_max'], 2)} ({r['cooks_max_dist']})")


def robustness_section(summary: pd.DataFrame, points: pd.DataFrame, test_sets: list[str],
                       models: list[str]) -> Section:
    """Leave-one-distribution-out R² and Cook's distance per proxy × test set, then the most influential points."""
    b = Body()
    b.p("With one point per training distribution, one distribution can carry a fit. Each cell: the lowest R² "
        "with one distribution left out (and which), then the largest Cook's distance (and whose point). "
        "(!): carried by one distribution — leaving it out halves an R² ≥ 0.25 or takes a passing R² below the "
        "threshold (by at least 0.1).")
    b.table("Leave-one-distribution-out R²; largest Cook's distance",
            pivot(summary, test_sets, _loo_cell, models=models))
    pts = points
    if "cooks_d" in pts.columns and len(pts):
        top = pts[np.isfinite(pts["cooks_d"])].sort_values("cooks_d", ascending=False).head(10)
        b.table("Most influential points", from_frame(top, {
            "test_set": "test set", "model": "proxy", "distribution": "distribution", "cooks_d": "Cook's D",
            "r2_without": "R² without it", "x": "proxy loss", "y": "reference loss"}))
    return b.section("Robustness: one distribution")

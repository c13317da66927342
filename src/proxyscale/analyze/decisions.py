"""Decision accuracy under every metric a test set carries, side by side (SPEC §9).

DataDecide (Magnusson et al., 2025) asks whether small models' rankings predict the large
model's ranking on the *target* metric, and found continuous metrics (correct-choice
probability) do better than accuracy at small scale. Here the target is the reference's
ranking by accuracy when the test set carries accuracy, otherwise by the analysed metric; each
proxy's ranking under each available metric is scored against it. Every metric is oriented
"lower is better" (:mod:`proxyscale.analyze.metrics`), so a proxy's loss ranking and the
reference's error-rate ranking point the same way.

Intervals: the metrics' replicates share example resamples and seed draws (paired), so the
difference of a continuous metric's decision accuracy and accuracy's has its own interval;
:func:`verdict` reads only differences whose interval excludes 0.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import bootstrap as bs
from . import metrics as mt
from . import stats


def _cell_means(run_means: pd.DataFrame, model: str, dists: list[str]) -> np.ndarray:
    g = run_means[run_means["model"] == model].groupby("distribution")["value"].mean()
    return g.reindex(dists).to_numpy(dtype=np.float64)


def _ci(vals: np.ndarray, est: float, level: float, bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = bs.robust_ci(vals, est, level, bounds)
    if not np.isfinite(lo):
        lo, hi = bs.percentile_ci(vals, level) if np.isfinite(vals).any() else (math.nan, math.nan)
    return lo, hi


def metric_decisions(test_set: str, run_means: Mapping[str, pd.DataFrame], reps: Mapping[str, bs.Replicates],
                     reference: str, proxies: list[str], chosen: str, level: float) -> list[dict[str, Any]]:
    """Rows (test_set, model, metric, target_metric, decision accuracy and CI, difference from
    accuracy and its paired CI) for every proxy × metric available on one test set; none when
    the test set carries one metric only."""
    if len(run_means) < 2:  # one metric: the summary's decision accuracy says it all
        return []
    target = "accuracy" if "accuracy" in run_means else chosen
    ref_m = run_means[target]
    ref_d = sorted(set(ref_m.loc[ref_m["model"] == reference, "distribution"]))
    rows = []
    for m in proxies:
        base: dict[str, tuple[float, np.ndarray | None]] = {}
        for name, rm in run_means.items():
            dists = sorted(set(rm.loc[rm["model"] == m, "distribution"]) & set(ref_d))
            if len(dists) < 2:
                continue
            y = _cell_means(ref_m, reference, dists)
            est = float(stats.decision_accuracy(_cell_means(rm, m, dists), y))
            vals = None
            if name in reps and target in reps and len(dists) >= 3:
                vals = np.asarray(stats.decision_accuracy(reps[name].take(m, dists),
                                                          reps[target].take(reference, dists)))
            base[name] = (est, vals)
            lo, hi = _ci(vals, est, level, (0.0, 1.0)) if vals is not None else (math.nan, math.nan)
            rows.append({"test_set": test_set, "model": m, "metric": name, "target_metric": target,
                         "continuous": mt.METRICS[name].continuous, "n_dist": len(dists),
                         "decision_accuracy": est, "decision_accuracy_lo": lo, "decision_accuracy_hi": hi})
        _differences(rows, base, level)
    return rows


def _differences(rows: list[dict[str, Any]], base: dict[str, tuple[float, np.ndarray | None]], level: float) -> None:
    """Add each metric's difference from accuracy (paired over the same replicates)."""
    acc = base.get("accuracy")
    for r in rows[len(rows) - len(base):]:
        r["diff_vs_accuracy"] = r["diff_lo"] = r["diff_hi"] = math.nan
        if acc is None or r["metric"] == "accuracy":
            continue
        est, vals = base[r["metric"]]
        r["diff_vs_accuracy"] = est - acc[0]
        if vals is not None and acc[1] is not None:
            r["diff_lo"], r["diff_hi"] = _ci(vals - acc[1], est - acc[0], level, (-1.0, 1.0))


def verdict(table: pd.DataFrame, small: list[str]) -> dict[str, Any]:
    """Does a continuous metric decide better than accuracy for the ``small`` proxies?

    Counts, over test sets × small proxies × continuous metrics, differences whose interval lies
    above 0 (continuous better), below 0 (accuracy better) or straddles 0. ``holds`` is True
    when more lie above than below and at least one does, False when more lie below, ``None``
    when none is clear either way or there is nothing to compare."""
    if table.empty or "diff_lo" not in table.columns:
        return {"n": 0, "better": 0, "worse": 0, "unclear": 0, "holds": None}
    t = table[table["model"].isin(small) & table["continuous"].astype(bool) & np.isfinite(table["diff_lo"])]
    better = int((t["diff_lo"] > 0).sum())
    worse = int((t["diff_hi"] < 0).sum())
    holds = None if better == worse == 0 else (True if better > worse else (False if worse > better else None))
    return {"n": len(t), "better": better, "worse": worse, "unclear": len(t) - better - worse, "holds": holds}

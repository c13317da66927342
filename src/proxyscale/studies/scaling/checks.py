"""The report's warnings and metric comparison: sanity checks read before any finding, and
decision accuracy under every metric the results carry, side by side."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from ...analyze.decisions import verdict
from ...analyze.metrics import METRICS
from ...analyze.sanity import SPREAD_RATIO, UNIFORM_FRACTION
from ...report.body import Body
from ...report.section import Section
from ...report.tables import Table, fmt, with_ci


def distrust(a: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Test set -> why its rank and partial-r results are not findings (only test sets that fail)."""
    ref = a.get("sanity_reference", pd.DataFrame())
    out = {}
    for _, r in ref.iterrows():
        why = []
        if bool(r["not_learned"]):
            why.append(f"the reference has not learned ({r['not_learned_why']})")
        if bool(r["indistinct"]):
            why.append(f"its distributions cannot be told apart (their spread is {fmt(float(r['spread_ratio']), 2)}× "
                       f"the seed noise of a mean, under {SPREAD_RATIO:g}×)")
        if why:
            out[str(r["test_set"])] = " and ".join(why)
    return out


def flag_untrusted(b: Body, a: Mapping[str, pd.DataFrame], test_sets: list[str]) -> None:
    """A lead line over a results table: which of its columns are not findings, and why."""
    bad = [t for t in test_sets if t in distrust(a)]
    if bad:
        b.p(f"Not findings: the {', '.join(bad)} column(s) — the sanity checks fail there (see Sanity checks), so "
            "these rank correlations, R² and partial r describe noise or an untrained reference.", cls="lead")


def overview_warning(a: Mapping[str, pd.DataFrame], test_sets: list[str]) -> str:
    """One sentence for the top of the report: which test sets fail the sanity checks, or none."""
    bad = distrust(a)
    if "sanity_reference" not in a:
        return ""
    if not bad:
        return ("Sanity checks pass on every test set: the reference has learned and its distributions differ by "
                "more than its seed noise.")
    names = [t for t in test_sets if t in bad]
    return (f"Read with care: on {len(names)} of {len(test_sets)} test sets ({', '.join(names)}) the sanity checks "
            "fail, so their rank and partial-r results are flagged below, not given as findings.")


def _model_rows(a: Mapping[str, pd.DataFrame], test_sets: list[str], models: list[str]) -> list[tuple[str, ...]]:
    sm = a["sanity_models"]
    rows = []
    for m in models:
        g = sm[sm["model"] == m].set_index("test_set")
        cells = []
        for ts in test_sets:
            if ts not in g.index:
                cells.append("—")
                continue
            r = g.loc[ts]
            ratio = "" if not np.isfinite(r["loss_over_uniform"]) else f" ({r['loss_over_uniform']:.0%} of ln V)"
            cells.append(fmt(float(r["loss"])) + ratio + (" (!)" if bool(r["near_uniform"]) else ""))
        rows.append(tuple([m] + cells))
    return rows


def sanity_section(a: Mapping[str, pd.DataFrame], test_sets: list[str], models: list[str]) -> Section:
    """Has the reference learned, and do its distributions differ beyond seed noise?"""
    b = Body()
    if "sanity_reference" not in a or "sanity_models" not in a:
        b.p("This analysis has no sanity tables; re-run the analysis step to get them.")
        return b.section("Sanity checks")
    bad = distrust(a)
    for ts in [t for t in test_sets if t in bad]:
        b.p(f"{ts}: {bad[ts]}. Its R², Spearman, decision accuracy and partial r below are not findings.", cls="lead")
    if not bad:
        b.p("Every test set passes: the reference is well below a uniform predictor (and below the best n-gram "
            "where there is one), and its distributions differ by more than its seed noise.")
    uniform = a["sanity_models"]["uniform_loss"]
    b.table("Mean per-token loss against a uniform predictor (ln V)", Table(
        tuple(["model"] + test_sets), tuple(_model_rows(a, test_sets, models)),
        note=("Mean over distributions and seeds; (!): at least "
              f"{UNIFORM_FRACTION:.0%} of ln V, no better than guessing. " if uniform.notna().any() else
              "The models table gives no vocab_size, so the uniform bound ln V is not shown. ")
        + "Bits per byte has no model-free uniform bound (it depends on each tokenizer's bytes per token), so "
          "this check reads the per-token loss whatever the analysed metric."))
    ref = a["sanity_reference"].set_index("test_set")
    rows = tuple((ts, fmt(float(ref.at[ts, "spread_sd"]), 4), fmt(float(ref.at[ts, "seed_sd"]), 4),
                  str(int(ref.at[ts, "n_ref_seeds"])), fmt(float(ref.at[ts, "spread_ratio"]), 2),
                  "no" if bool(ref.at[ts, "not_learned"]) else "yes",
                  "no" if bool(ref.at[ts, "indistinct"]) else ("unknown (one seed)" if not np.isfinite(
                      ref.at[ts, "spread_ratio"]) else "yes")) for ts in test_sets if ts in ref.index)
    b.table("The reference: learned, and distributions apart?", Table(
        ("test set", "sd across distributions", "seed sd", "seeds", "spread / noise of a seed mean", "learned",
         "distributions apart"), rows,
        note=f"Spread / noise is about 1 when distributions do not differ at all; under {SPREAD_RATIO:g} they "
             "cannot be told apart. The values are of the analysed metric."))
    return b.section("Sanity checks")


def _small(a: Mapping[str, pd.DataFrame], neural: list[str]) -> list[str]:
    """The smaller half of the neural proxies by compute (at least one)."""
    asc = neural[::-1]
    return asc[:max(1, len(asc) // 2)]


def metric_finding(a: Mapping[str, pd.DataFrame], neural: list[str]) -> str:
    """Whether a continuous metric decided better than accuracy for the small proxies, from the numbers."""
    md = a.get("metric_decisions", pd.DataFrame())
    if md.empty or "accuracy" not in set(md["metric"]):
        return ""
    v = verdict(md, _small(a, neural))
    if v["n"] == 0:
        return ""
    head = (f"Continuous metrics against accuracy for the smaller half of the proxies: in {v['better']} of "
            f"{v['n']} comparisons the paired interval of the difference in decision accuracy lies above 0, in "
            f"{v['worse']} below 0")
    tail = {True: "DataDecide's finding (continuous metrics decide better at small scale) holds here.",
            False: "DataDecide's finding does not hold here: accuracy decided better.",
            None: "so this study does not show DataDecide's finding either way."}[v["holds"]]
    return f"{head}; {tail}"


def metrics_section(a: Mapping[str, pd.DataFrame], test_sets: list[str], neural: list[str]) -> Section:
    """Decision accuracy under each available metric, proxies × metrics, one column per test set."""
    b = Body()
    md = a.get("metric_decisions", pd.DataFrame())
    st = a["settings"].iloc[0]
    chosen = str(st.get("metric", "loss"))
    b.p(f"The analysis ranks distributions by {METRICS[chosen].label} [analysis.metric: {chosen}]; higher-is-better "
        "metrics are read as their complements (1 − value), so every ranking points the same way. Here each "
        "proxy's ranking under every metric its results carry is scored against the reference's ranking by "
        "accuracy where the test set has accuracy (DataDecide's target), else by the analysed metric.")
    if md.empty:
        b.p("The results carry one metric only, so there is nothing to set side by side.")
        return b.section("Decision accuracy by metric")
    rows = []
    for m in neural:
        for name in [k for k in METRICS if k in set(md["metric"])]:
            cells = []
            for ts in test_sets:
                r = md[(md["test_set"] == ts) & (md["model"] == m) & (md["metric"] == name)]
                cells.append(_metric_cell(r.iloc[0]) if len(r) else "—")
            rows.append(tuple([m, name] + cells))
    b.table("Decision accuracy by metric", Table(
        tuple(["proxy", "metric"] + test_sets), tuple(rows),
        note="Brackets: 95% bootstrap CI; Δ: difference from accuracy with its paired CI (same resamples)."))
    text = metric_finding(a, neural)
    if text:
        b.p(text, cls="lead")
    return b.section("Decision accuracy by metric")


def _metric_cell(r: pd.Series) -> str:
    text = with_ci(r["decision_accuracy"], r["decision_accuracy_lo"], r["decision_accuracy_hi"])
    d = r.get("diff_vs_accuracy", math.nan)
    if np.isfinite(d):
        text += f"; Δ {d:+.2f}" + (f" [{r['diff_lo']:+.2f}, {r['diff_hi']:+.2f}]" if np.isfinite(r["diff_lo"]) else "")
    return text

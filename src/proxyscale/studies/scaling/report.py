"""The small-to-large study's report: its sections, each built from the analysis tables alone.

:func:`report_parts` reads the study's analysis directory and returns the sections and extra
files (``summary.csv``) that :func:`proxyscale.report.write_report` renders. Order follows
SPEC §4's honest framing: mixed and never-trained-on test sets lead every table and figure;
per-source test sets follow, with a leave-source-out table beside them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ...analyze.io import read_analysis
from ...errors import DataError
from ...report.body import Body
from ...report.section import ReportFigure, Section
from ...report.tables import Table, fmt, from_frame, pivot, with_ci, with_p
from . import figures as plots
from .checks import distrust, flag_untrusted, metric_finding, metrics_section, overview_warning, sanity_section
from .compute import compute_records, compute_section
from .ladder_sections import extrapolation_section, smallest_section
from .robustness import methods_text, robustness_section

KIND = "scaling"  # the study kind of the analyses this module reads
FIGURE_NAMES = ("fig1_scatter", "fig2_r2_vs_compute", "fig_partial", "fig_per_example")  # built-in figure files
REQUIRED_TABLES = ("summary", "points", "test_sets", "models", "settings")
SUMMARY_CSV_COLUMNS = (
    "test_set", "framing", "model", "kind", "params", "train_tokens", "flops", "compute_ratio", "n_dist",
    "n_seeds", "ref_n_seeds", "r2", "r2_lo", "r2_hi", "pearson", "spearman", "kendall", "decision_accuracy",
    "decision_accuracy_lo", "decision_accuracy_hi", "ci_seed_term", "r2_loo_min", "r2_loo_min_dist", "cooks_max",
    "cooks_max_dist", "one_point_carries", "best_ngram", "partial_r", "partial_p", "partial_p_holm", "partial_exact",
)


@dataclass(frozen=True)
class _Ctx:
    a: Mapping[str, pd.DataFrame]
    test_sets: list[str]   # lead (mixed / never-trained-on) first
    neural: list[str]      # neural proxies, largest first
    ngrams: list[str]
    reference: str
    colour_models: list[str]

    @property
    def summary(self) -> pd.DataFrame:
        return self.a["summary"]

    def lead(self, ts: str) -> bool:
        t = self.a["test_sets"]
        return bool(t.loc[t["test_set"] == ts, "lead"].iloc[0])


def _context(a: Mapping[str, pd.DataFrame]) -> _Ctx:
    s = a["summary"]
    present = set(s["test_set"]) if len(s) else set()
    ts = [t for t in a["test_sets"]["test_set"] if t in present]
    models = a["models"]
    ref = str(a["settings"]["reference"].iloc[0])
    in_s = set(s["model"]) if len(s) else set()
    neural = [m for m in models.sort_values("flops", ascending=False)["model"] if m in in_s
              and models.set_index("model").at[m, "kind"] == "neural"]
    ngrams = [m for m in models["model"] if m in in_s and models.set_index("model").at[m, "kind"] == "ngram"]
    return _Ctx(a, ts, neural, ngrams, ref, ngrams + neural[::-1])


def _overview(c: _Ctx) -> Section:
    a, b = c.a, Body()
    st = a["settings"].iloc[0]
    m = a["models"].set_index("model")
    b.p(f"Do {len(c.neural)} neural proxies and {len(c.ngrams)} n-gram baselines rank {len(a['distributions'])} "
        f"training distributions as the reference {c.reference} ({fmt(int(m.at[c.reference, 'params']))} "
        f"parameters, {fmt(float(m.at[c.reference, 'flops']))} training FLOPs) does, on {len(c.test_sets)} test "
        f"sets, by {st.get('metric_label', 'mean test loss')}? The findings come next; how every number is made is "
        "in 'Methods and inputs' at the end.")
    warn = overview_warning(a, c.test_sets)
    if warn:
        b.p(warn, cls="lead")
    b.p("Test sets are ordered with mixed and never-trained-on sets first. On a per-source test set, the "
        "distributions trained on that source are outliers that flatter every proxy; such sets come last and "
        "are re-scored without those distributions (leave-source-out).")
    return b.section("Overview")


def _methods(c: _Ctx) -> Section:
    a, b = c.a, Body()
    st = a["settings"].iloc[0]
    b.p(methods_text(st) + f" Analysis seed {int(st['seed'])}.")
    skipped = str(st.get("skipped_test_sets", "") or "")
    if skipped:
        b.p(f"Left out: test set(s) {skipped}, whose results do not carry the analysed metric.")
    ladder = a["models"].assign(role=np.where(a["models"]["is_reference"], "reference", a["models"]["kind"]))
    b.table("Models", from_frame(ladder, {"model": "model", "role": "role", "params": "params",
                                          "train_tokens": "train tokens", "flops": "FLOPs",
                                          "compute_ratio": "reference / proxy compute"}))
    d = a["distributions"].assign(sources=a["distributions"]["sources"].map(lambda s: ", ".join(s)))
    has_mix = "mixture" in d.columns and d["mixture"].notna().any()
    b.table("Training distributions", from_frame(d, {"distribution": "distribution", "sources": "sources",
                                                     "mixture": "mixture weights"},
                                                 note=_mixture_note(d) if has_mix else ""))
    counts = getattr(a, "meta", {}).get("test_counts", {})
    ts = a["test_sets"].assign(examples=a["test_sets"]["test_set"].map(lambda t: _built(counts.get(t))))
    b.table("Test sets", from_frame(ts, {"test_set": "test set", "kind": "kind", "source": "source",
                                         "framing": "framing", "lead": "leads the report",
                                         "examples": "examples built / requested"}))
    return b.section("Methods and inputs")


def _mixture_note(d: pd.DataFrame) -> str:
    note = "Mixture weights are normalised to sum to 1"
    return note + ("; '—': a selection-induced distribution." if d["mixture"].isna().any() else ".")


def _built(c: Mapping | None) -> str:
    """Examples built / requested, marked "(short)" when fewer were built than asked for."""
    if not c or c.get("requested") is None:
        return "—"
    built, asked = int(c["built"]), int(c["requested"])
    return f"{built} / {asked}" + (" (short)" if built < asked else "")


def _smallest_text(c: _Ctx, ts: str) -> str:
    """The smallest-proxy finding: a proxy is named only if every larger proxy passes too."""
    sp = c.a.get("smallest_proxy", pd.DataFrame())
    thr = float(c.a["settings"]["r2_threshold"].iloc[0])
    row = sp[(sp["test_set"] == ts) & (sp["metric"] == "r2")] if len(sp) else sp
    if row.empty or ("first_passing" not in row.columns) or row.iloc[0]["first_passing"] is None:
        return f"no proxy reaches R² ≥ {thr:g}"
    r = row.iloc[0]
    if r["model"] is None:
        return (f"no proxy can be named for R² ≥ {thr:g}: {r['first_passing']} reaches it but the larger "
                f"{r['fails_above']} do(es) not")
    text = (f"smallest proxy with R² ≥ {thr:g} whose larger siblings all pass too: {r['model']} "
            f"({fmt(float(r['compute_ratio']), 1)}× less compute)")
    if r["first_passing"] != r["model"]:
        text += (f"; {r['first_passing']} also reaches it, but the larger {r['fails_above']} do(es) not, so it "
                 "is no safe choice")
    if bool(r.get("carried_by_one", False)):
        s = c.summary[(c.summary["test_set"] == ts) & (c.summary["model"] == r["model"])].iloc[0]
        text += (f", but carried by one distribution: without {s['r2_loo_min_dist']} R² = "
                 f"{fmt(float(s['r2_loo_min']))}")
    return text


def _finding(c: _Ctx, ts: str) -> str:
    why = distrust(c.a).get(ts)
    if why:
        return (f"{ts} ({'lead' if c.lead(ts) else 'per-source'}): not a finding — {why}; its R², rank "
                "correlations and partial r are shown below but say nothing about the proxies.")
    s = c.summary[c.summary["test_set"] == ts]
    neural = s[s["kind"] == "neural"].sort_values("flops")
    parts = [f"{ts} ({'lead' if c.lead(ts) else 'per-source'}): {_smallest_text(c, ts)}"]
    grams = s[s["kind"] == "ngram"]
    if len(grams) and grams["r2"].notna().any():
        g = grams.loc[grams["r2"].idxmax()]
        beat = int((neural["r2"] > g["r2"]).sum())
        pcol = "partial_p_holm" if "partial_p_holm" in neural.columns else "partial_p"
        sig = int((neural[pcol] < 0.05).sum())
        raw = int((neural["partial_p"] < 0.05).sum())
        text = (f"best n-gram {g['model']} R² = {fmt(float(g['r2']))}, beaten by {beat}/{len(neural)} proxies; "
                f"{sig}/{len(neural)} proxies add signal beyond it (Holm-adjusted p < 0.05)")
        if raw != sig and pcol == "partial_p_holm":
            text += f" — {raw} before adjusting for the number of tests"
        parts.append(text)
    parts.append(_ceiling_text(c, ts))
    return "; ".join(p for p in parts if p) + "."


def _ceiling_text(c: _Ctx, ts: str) -> str:
    ceil = c.a.get("noise_ceiling", pd.DataFrame())
    if ceil.empty or "ceiling_r2" not in ceil.columns or not (ceil["test_set"] == ts).any():
        return ""
    r = ceil[ceil["test_set"] == ts].iloc[0]
    if not np.isfinite(r["ceiling_r2"]):
        return "one reference seed: its own noise is unknown, so no ceiling"
    text = (f"reference seed vs seed R² = {fmt(float(r['r2']))}, so the {int(r['n_ref_seeds'])}-seed reference mean "
            f"has reliability {fmt(float(r['ceiling_r2']))}: a perfect proxy would reach about that R²")
    return text + (" — the reference is too noisy here to rank proxies" if r["ceiling_r2"] < 0.5 else "")


def _carried(c: _Ctx) -> list[str]:
    s = c.summary
    if "one_point_carries" not in s.columns:
        return []
    pts, out = c.a["points"], []
    for ts in c.test_sets:
        for _, r in s[(s["test_set"] == ts) & s["one_point_carries"].astype(bool)].iterrows():
            d = r["r2_loo_min_dist"]
            cook = pts.loc[(pts["test_set"] == ts) & (pts["model"] == r["model"]) & (pts["distribution"] == d),
                           "cooks_d"] if "cooks_d" in pts.columns else pd.Series(dtype=float)
            out.append(f"{ts} / {r['model']}: R² {fmt(float(r['r2']))} → {fmt(float(r['r2_loo_min']))} without {d}"
                       + (f" (its Cook's D: {fmt(float(cook.iloc[0]), 2)})" if len(cook) else ""))
    return out


def _findings(c: _Ctx) -> Section:
    b = Body()
    b.p("Generated from the tables below; lead test sets first. Test sets that fail the sanity checks are "
        "flagged, not summarised.")
    b.bullets([_finding(c, ts) for ts in c.test_sets])
    metric_text = metric_finding(c.a, c.neural)
    if metric_text:
        b.p(metric_text)
    carried = _carried(c)
    if carried:
        b.p(f"Results carried by one distribution ({len(carried)}): read these R² values as one point against "
            "the rest, not as agreement across distributions.", cls="lead")
        b.bullets(carried)
    return b.section("Key findings")


def _figures(c: _Ctx) -> list[Section]:
    a = c.a
    scatter = ReportFigure(FIGURE_NAMES[0], plots.scatter_png(a["points"], c.summary, c.test_sets, c.neural, c.ngrams),
                           "Proxy vs reference mean test loss: a row per test set, a panel per proxy with its own "
                           "axes, one labelled point per training distribution (bars: seed sd), the least-squares "
                           "line with its R² and the lowest R² with one distribution left out; (!) and a ring: one "
                           "distribution carries the result. Grey panels: n-gram baselines.")
    r2 = ReportFigure(FIGURE_NAMES[1], plots.r2_compute_png(c.summary, a.get("noise_ceiling", pd.DataFrame()),
                                                                 c.test_sets),
                      _fig2_caption(c))
    b1, b2 = Body(), Body()
    b1.p("Each row is one test set and each panel one proxy, on its own axes; colours (Okabe–Ito, colour-blind "
         "safe) and labels name the training distribution.")
    b2.p("The summary plot of the paper, with zero-compute n-gram baselines as horizontal lines.")
    return [b1.section("Proxy vs reference losses (Figure 1)", (scatter,)),
            b2.section("R² against compute (Figure 2)", (r2,))]


def _fig2_caption(c: _Ctx) -> str:
    """Figure 2's caption names only what is drawn: the ceiling line needs ≥ 2 reference seeds."""
    ceil = c.a.get("noise_ceiling", pd.DataFrame())
    drawn = "ceiling_r2" in ceil.columns and np.isfinite(ceil["ceiling_r2"].to_numpy(dtype=float)).any()
    text = ("R² of the linear fit against proxy/reference compute; bars: 95% bootstrap CI over test examples × "
            "seeds; dashed/dash-dot: n-gram baselines")
    if drawn:
        return text + "; dotted: reference ceiling (reliability of the seed-averaged reference)."
    return text + ". No ceiling line: with one reference seed its own noise is unknown."


def _summary(c: _Ctx) -> Section:
    b = Body()
    flag_untrusted(b, c.a, c.test_sets)
    rows = c.neural + c.ngrams
    ceil = c.a.get("noise_ceiling", pd.DataFrame())

    def ceiling_row(col: str) -> list[tuple[str, ...]]:
        if ceil.empty:
            return []
        vals = [fmt(float(ceil.loc[ceil["test_set"] == ts, col].iloc[0])) if (ceil["test_set"] == ts).any() else "—"
                for ts in c.test_sets]
        return [tuple(["reference seed vs seed"] + vals)]

    def ceiling_rows() -> list[tuple[str, ...]]:
        out = ceiling_row("r2")
        if out and "ceiling_r2" in ceil.columns:
            out += [("reference ceiling (reliability of seed mean)",) + ceiling_row("ceiling_r2")[0][1:]]
        return out

    note = ("Neural proxies largest first, then n-gram baselines; brackets: 95% bootstrap CI over test examples × "
            "seeds (none where nothing could be resampled). Reference ceiling: the R² a perfect proxy would reach "
            "against the seed-averaged reference.")
    b.table("R² of the linear fit", pivot(c.summary, c.test_sets, lambda r: with_ci(r["r2"], r["r2_lo"], r["r2_hi"]),
                                          models=rows, extra_rows=ceiling_rows(), note=note))
    b.table("Decision accuracy (pairs of distributions ordered alike)",
            pivot(c.summary, c.test_sets, lambda r: with_ci(r["decision_accuracy"], r["decision_accuracy_lo"],
                                                            r["decision_accuracy_hi"]),
                  models=rows, extra_rows=ceiling_row("decision_accuracy")))
    b.table("Spearman ρ / Kendall τ-b",
            pivot(c.summary, c.test_sets, lambda r: f"{fmt(r['spearman'], 2)} / {fmt(r['kendall'], 2)}",
                  models=rows))
    return b.section("Summary")


def _signal(c: _Ctx) -> Section:
    b = Body()
    flag_untrusted(b, c.a, c.test_sets)
    b.p("Partial correlation of each proxy's losses with the reference's, given the best n-gram baseline on that "
        "test set, with a one-sided permutation p over distributions (exact when there are ≤ 8) and the same p "
        "Holm-adjusted over every test in this table (one family: the test sets share distributions and models, "
        "so the tests are dependent; Holm holds under any dependence). The family includes the rows of the other "
        "n-gram baselines tested against the best one: they are p-values on show in this table like the "
        "proxies', and a reader scanning it for p < 0.05 would pick among all of them. A proxy near zero adds "
        "nothing a zero-compute count model does not already say. The last row is the same quantity between two "
        "reference seeds: the most a proxy could add.")
    if not c.ngrams:
        b.p("This study has no n-gram baselines, so there is nothing to control for. Fit unigram/bigram/trigram "
            "count models on each training distribution to make this check.")
        return b.section("Signal beyond n-grams")
    ceil = c.a.get("noise_ceiling", pd.DataFrame())
    extra = []
    if not ceil.empty:
        extra.append(tuple(["reference seed vs seed"] + [
            with_p(float(ceil.loc[ceil["test_set"] == ts, "partial_r"].iloc[0]), math.nan)
            if (ceil["test_set"] == ts).any() else "—" for ts in c.test_sets]))
    best = [str(c.summary.loc[c.summary["test_set"] == ts, "best_ngram"].iloc[0]) for ts in c.test_sets]
    b.table("Partial r given the best n-gram (p; Holm-adjusted p)",
            pivot(c.summary, c.test_sets, _partial_cell,
                  models=c.neural + c.ngrams, extra_rows=extra,
                  note="Best n-gram per test set: " + ", ".join(f"{t}: {g}" for t, g in zip(c.test_sets, best))))
    fig = ReportFigure(FIGURE_NAMES[2], plots.partial_png(c.summary, ceil, c.test_sets),
                       "Partial r with the reference given the best n-gram; filled markers: Holm-adjusted p < 0.05.")
    return b.section("Signal beyond n-grams", (fig,))


def _partial_cell(r: pd.Series) -> str:
    text = with_p(r["partial_r"], r["partial_p"])
    if "partial_p_holm" in r and np.isfinite(r["partial_p_holm"]):
        text = text[:-1] + f"; Holm {r['partial_p_holm']:.3g})"
    return text


def _per_example(c: _Ctx) -> Section:
    b = Body()
    pe = c.a.get("per_example", pd.DataFrame())
    b.p("For each test example, the Pearson r across training distributions between the proxy's and the "
        "reference's loss on that example.")
    if pe.empty:
        b.p("No per-example table in this analysis.")
        return b.section("Per-example correlation")
    med = pe.groupby(["test_set", "model"])["r"].median().reset_index()
    b.table("Median per-example r", pivot(med.rename(columns={"r": "median"}), c.test_sets,
                                          lambda r: fmt(r["median"], 2), models=c.neural + c.ngrams))
    fig = ReportFigure(FIGURE_NAMES[3], plots.per_example_png(pe, c.test_sets, c.colour_models),
                       "Histogram over test examples of the per-example proxy–reference correlation.")
    return b.section("Per-example correlation", (fig,))


def _loso(c: _Ctx) -> Section:
    b = Body()
    lo = c.a.get("summary_loso", pd.DataFrame())
    if lo.empty:
        b.p("No per-source test set in this study: nothing to leave out.")
        return b.section("Leave-source-out")
    b.p("Per-source test sets re-scored without the distributions that contain their source.")
    rows = []
    for ts in [t for t in c.test_sets if t in set(lo["test_set"])]:
        for m in c.neural + c.ngrams:
            full = c.summary[(c.summary["test_set"] == ts) & (c.summary["model"] == m)]
            part = lo[(lo["test_set"] == ts) & (lo["model"] == m)]
            if len(full) and len(part):
                f, p = full.iloc[0], part.iloc[0]
                rows.append((ts, m, fmt(f["r2"]), fmt(p["r2"]), fmt(f["decision_accuracy"]),
                             fmt(p["decision_accuracy"]), _partial_cell(p),
                             f"{int(p['n_dist'])} (left out: {p['left_out']})"))
    b.table("All distributions vs source left out", Table(
        ("test set", "model", "R² (all)", "R² (left out)", "decision acc. (all)", "decision acc. (left out)",
         "partial r (left out)", "distributions"), tuple(rows)))
    return b.section("Leave-source-out")


def study_sections(a: Mapping[str, pd.DataFrame]) -> list[Section]:
    """Every built-in section of the report, in reading order."""
    c = _context(a)
    return [_overview(c), sanity_section(a, c.test_sets, [c.reference] + c.neural + c.ngrams), _findings(c),
            *_figures(c), _summary(c), metrics_section(a, c.test_sets, c.neural),
            robustness_section(c.summary, c.a["points"], c.test_sets, c.neural + c.ngrams), _signal(c), _per_example(c),
            smallest_section(a, c.test_sets), extrapolation_section(a, c.test_sets), _loso(c), _methods(c)]


def summary_csv(analysis: Mapping[str, pd.DataFrame]) -> str:
    """The summary as CSV with fixed columns and a fixed row order (lead test sets first)."""
    s = analysis["summary"].copy()
    if s.empty:
        return ",".join(SUMMARY_CSV_COLUMNS) + "\n"
    ts = analysis["test_sets"].reset_index(drop=True)
    order = {t: i for i, t in enumerate(ts["test_set"])}
    s["framing"] = s["test_set"].map(dict(zip(ts["test_set"], ts["framing"])))
    s["_ts"] = s["test_set"].map(order)
    s["_kind"] = (s["kind"] != "neural").astype(int)
    s = s.sort_values(["_ts", "_kind", "compute_ratio", "model"], kind="mergesort")
    return s.reindex(columns=list(SUMMARY_CSV_COLUMNS)).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def report_parts(analysis_dir: str | Path) -> tuple[list[Section], dict[str, bytes | str]]:
    """The small-to-large study's report: its sections (the built-in ones, then the compute
    spent when the runs recorded it) and its extra files (``summary.csv``)."""
    a = read_analysis(analysis_dir, kind=KIND)
    for need in REQUIRED_TABLES:
        if need not in a:
            raise DataError(f"{analysis_dir}: analysis lacks the '{need}' table; re-run the analysis step")
    sections = study_sections(a)
    spent = compute_section(compute_records(analysis_dir, a.meta))
    if spent is not None:
        sections.append(spent)
    return sections, {"summary.csv": summary_csv(a)}

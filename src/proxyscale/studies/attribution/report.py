"""The attribution study's report: the "Attribution across scale" section, from its analysis.

:func:`report_parts` gives the attribution study's own report (for
:func:`proxyscale.report.write_report`); :func:`attribution_section` is the same section for any
other report to include (the demo joins it to the small-to-large report). Reads only the analysis
directory :func:`proxyscale.analyze.attribution.analyze_attribution` wrote; never trains; no torch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...analyze.io import read_analysis
from ...report.body import Body
from ...report.figures import new_figure, png_bytes
from ...report.section import ReportFigure, Section
from ...report.tables import Table, fmt, with_ci

KIND = "attribution"  # the study kind of the analyses this module reads
FIGURE_NAMES = ("attr_lds_vs_compute", "attr_order_similarity", "attr_counterfactual", "attr_lds_vs_m")


def _read(analysis_dir: str | Path) -> dict[str, Any]:
    """The meta record, tables and order-similarity array of an attribution analysis directory."""
    a = read_analysis(analysis_dir, kind=KIND)
    return {"meta": a.meta, "lds": a["lds"], "sim": a.arrays["order_similarity"], "cf": a["counterfactual"],
            "cf_r2": a["counterfactual_r2"], "compute": a["compute"],
            **{name: a.get(name, pd.DataFrame()) for name in ("lds_candidates", "lds_by_m")}}


def lds_png(lds: pd.DataFrame, ceiling: float, attainable: float = float("nan")) -> bytes:
    """LDS (against reference-width retraining) vs proxy compute ratio, with 95% bootstrap CIs."""
    fig = new_figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    for method, colour, label in (("trak", "#1f5fa8", "TRAK"), ("grad_dot", "#d08020", "gradient dot product")):
        s = lds[lds["method"] == method].sort_values("compute_ratio")
        err = np.vstack([s["lds"] - s["ci_low"], s["ci_high"] - s["lds"]]).clip(min=0)
        ax.errorbar(s["compute_ratio"], s["lds"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                    color=colour, label=label)
    if np.isfinite(ceiling):
        ax.axhline(ceiling, color="0.45", ls="--", lw=1, label="seed-to-seed agreement")
    if np.isfinite(attainable):
        ax.axhline(attainable, color="0.2", ls=":", lw=1, label="LDS of a perfect predictor")
    ax.set_xscale("log")
    ax.set_xlabel("reference compute / proxy compute (training FLOPs)")
    ax.set_ylabel("LDS vs reference-width models")
    ax.set_title("Attribution transfer across width", fontsize=10)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def lds_by_m_png(by_m: pd.DataFrame, reference: str) -> bytes:
    """LDS against the number of models M in each width's TRAK ensemble (95% bootstrap CIs)."""
    fig = new_figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    for lab in by_m.sort_values("width")["label"].unique():
        s = by_m[by_m["label"] == lab].sort_values("n_models")
        err = np.vstack([s["lds"] - s["ci_low"], s["ci_high"] - s["lds"]]).clip(min=0)
        ax.errorbar(s["n_models"], s["lds"], yerr=np.nan_to_num(err), marker="o", capsize=2,
                    lw=2 if lab == reference else 1, label=lab + (" (ref)" if lab == reference else ""))
    ax.set_xlabel("models in the TRAK ensemble (M)")
    ax.set_ylabel("LDS vs reference-width models")
    ax.set_xticks(sorted(by_m["n_models"].unique()))
    ax.set_title("LDS against ensemble size, per width", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return png_bytes(fig)


def similarity_png(sim: np.ndarray, labels: list[str]) -> bytes:
    """Order-similarity heatmap: Spearman of attribution vectors between widths."""
    fig = new_figure(5.2, 4.3)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.16, right=0.9, bottom=0.17, top=0.92)
    im = ax.imshow(sim, vmin=min(0.0, float(np.nanmin(sim))), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if sim[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Order similarity (Spearman, mean over targets)", fontsize=9)
    return png_bytes(fig)


def counterfactual_png(cf: pd.DataFrame, r2: pd.DataFrame) -> bytes:
    """Proxy margin vs reference margin after each removal set, one panel per proxy width."""
    proxies = r2[~r2["is_reference"]].sort_values("width")
    n = max(1, len(proxies))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = new_figure(3.9 * cols, 3.4 * rows)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14 / rows, top=1 - 0.1 / rows, wspace=0.3, hspace=0.45)
    kinds = sorted(cf["kind"].unique()) if len(cf) else []
    colours = {k: c for k, c in zip(kinds, ["#1f5fa8", "#d08020", "#2a9d4a", "#b03030", "#7a4fb0", "#666666"])}
    for i, (_, row) in enumerate(proxies.iterrows()):
        ax = fig.add_subplot(rows, cols, i + 1)
        s = cf[cf["label"] == row["label"]]
        for k in kinds:
            part = s[s["kind"] == k]
            ax.scatter(part["margin"], part["ref_margin"], s=14, color=colours[k], label=k)
        ax.set_title(f"{row['label']} ({row['compute_ratio']:.3g}× less) R² = {fmt(row['r2'], 2)}", fontsize=9)
        ax.set_xlabel("proxy margin", fontsize=8)
        ax.set_ylabel("reference margin", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    if not len(proxies):
        fig.add_subplot(1, 1, 1).text(0.5, 0.5, "no counterfactual runs", ha="center")
    return png_bytes(fig)


def _lds_table(lds: pd.DataFrame) -> Table:
    rows = []
    for lab in lds.sort_values("compute_ratio")["label"].unique():
        t = lds[(lds["label"] == lab) & (lds["method"] == "trak")].iloc[0]
        g = lds[(lds["label"] == lab) & (lds["method"] == "grad_dot")].iloc[0]
        setting = (f"{fmt(float(t['lambda_ratio']))}, {'on' if t['use_q'] else 'off'}"
                   if "lambda_ratio" in t and np.isfinite(t["lambda_ratio"]) else "")
        diff = (with_ci(t["minus_grad_dot"], t["minus_grad_dot_low"], t["minus_grad_dot_high"])
                if "minus_grad_dot" in t else "")
        rows.append((lab + (" (reference)" if t["is_reference"] else ""), fmt(int(t["params"])),
                     fmt(float(t["compute_ratio"])), with_ci(t["lds"], t["ci_low"], t["ci_high"]),
                     with_ci(g["lds"], g["ci_low"], g["ci_high"]), diff, setting))
    return Table(("width", "params", "compute ratio", "TRAK LDS [95% CI]", "grad-dot LDS [95% CI]",
                  "TRAK − grad-dot [95% CI]", "λ ratio, Q"),
                 tuple(rows),
                 "LDS: Spearman over α-subsets between summed scores and the margin of reference-width models "
                 "retrained on each subset (averaged over seeds), mean over targets; CI: bootstrap over targets "
                 "(paired for the difference). "
                 "λ = ratio · mean‖φ‖²; with several candidates, λ and Q weighting are chosen per width on "
                 "held-out subsets that the LDS shown does not use.")


def _candidates_table(cands: pd.DataFrame) -> Table:
    rows = tuple((r["label"], fmt(float(r["lambda_ratio"])), "on" if r["use_q"] else "off", fmt(r["lds_holdout"]),
                  fmt(r["lds"]), "✓" if r["chosen"] else "")
                 for _, r in cands.sort_values(["width", "lambda_ratio", "use_q"]).iterrows())
    return Table(("width", "λ ratio", "Q", "held-out LDS", "LDS", "chosen"), rows,
                 "Every candidate setting (full ensemble): the choice uses the held-out column only.")


def _compute_table(compute: pd.DataFrame, reference: str) -> Table:
    """Per width: FLOPs of its ensemble's training and of TRAK (SPEC §7), their sum relative to
    the reference's, and wall seconds; then every role's total for the whole study."""
    def total(g: pd.DataFrame, roles: tuple[str, ...], col: str = "flops") -> float:
        return float(g[g["role"].isin(roles)][col].sum())

    pipe = ("train ensemble", "TRAK")
    ref = total(compute[compute["label"] == reference], pipe)
    rows = []
    for lab, g in compute.groupby("label", sort=False):
        rows.append((str(lab), f"{total(g, pipe[:1]):.3g}", f"{total(g, pipe[1:]):.3g}",
                     fmt(total(g, pipe) / ref if ref > 0 else float("nan")), fmt(total(g, pipe, "wall_s"))))
    for role, g in compute.groupby("role", sort=False):
        if role not in pipe:
            rows.append((f"{role} (total)", "", "", f"{g['flops'].sum():.3g} FLOPs", fmt(float(g["wall_s"].sum()))))
    return Table(("width", "ensemble training FLOPs", "TRAK FLOPs", "(train + TRAK) / reference's", "wall s"),
                 tuple(rows), "The proxy's saving: attributing with a proxy costs the fraction shown of doing it "
                 "with the reference (ensemble training plus TRAK). Ground-truth and counterfactual retraining "
                 "only evaluate the method.")


def _headline(a: dict) -> str:
    m, lds = a["meta"], a["lds"]
    t = lds[lds["method"] == "trak"].sort_values("compute_ratio")
    ref = t[t["is_reference"]].iloc[0]
    small = t.iloc[-1]
    return (f"{m['dataset']} ({m['n_train']:,} train, {m['n_targets']} targets), {m['family']} widths "
            f"{', '.join(w['label'] for w in m['widths'])}; reference {m['reference']}. TRAK with "
            f"{m['models_per_width']} models per width, k = {m['trak']['k']}. At the reference width LDS = "
            f"{fmt(ref['lds'])}; the smallest proxy ({fmt(float(small['compute_ratio']))}× less training compute) "
            f"gives LDS = {fmt(small['lds'])} against the same reference-width ground truth. Two seeds of the "
            f"ground truth agree at {fmt(m['noise_ceiling'])} (Spearman); a perfect predictor of the "
            f"seed-averaged ground truth would reach LDS ≈ {fmt(m.get('lds_ceiling', float('nan')))}.")


def attribution_section(analysis_dir: str | Path, title: str = "Attribution across scale") -> Section:
    """The report section of an attribution analysis (plots of LDS vs compute, order
    similarity and counterfactual removal; tables of LDS, counterfactual R² and compute)."""
    a = _read(analysis_dir)
    m, b = a["meta"], Body()
    b.p(_headline(a))
    b.table("LDS per width", _lds_table(a["lds"]))
    labels = [w["label"] for w in m["widths"]]
    sim = a["sim"]
    b.table("Order similarity", Table(("width",) + tuple(labels), tuple(
        (lab,) + tuple(f"{v:.2f}" for v in sim[i]) for i, lab in enumerate(labels))))
    figs = [ReportFigure(FIGURE_NAMES[0], lds_png(a["lds"], m["noise_ceiling"], m.get("lds_ceiling", float("nan"))),
                         "LDS of each width's TRAK scores against reference-width retraining, vs compute ratio."),
            ReportFigure(FIGURE_NAMES[1], similarity_png(sim, labels),
                         "Spearman correlation between widths' attribution vectors, averaged over targets.")]
    if len(a["cf_r2"]):
        r2 = a["cf_r2"].sort_values("width")
        b.table("Counterfactual removal: proxy vs reference margins", Table(
            ("width", "compute ratio", "R²", "Pearson r", "removal sets"),
            tuple((r["label"], fmt(float(r["compute_ratio"])), fmt(r["r2"]), fmt(r["pearson"]), fmt(int(r["n_points"])))
                  for _, r in r2.iterrows()),
            "Each point: one removal set (random, top/bottom TRAK, most/least similar, part of the target's "
            "class); x = margin of a model of this width trained without it, y = the reference width's."))
        figs.append(ReportFigure(FIGURE_NAMES[2], counterfactual_png(a["cf"], a["cf_r2"]),
                                 "Counterfactual removal: target margin of proxy vs reference models."))
    if len(a["lds_by_m"]):
        bm = a["lds_by_m"]
        ms = sorted(bm["n_models"].unique())
        b.table("LDS against ensemble size M", Table(("width",) + tuple(f"M = {int(x)}" for x in ms), tuple(
            (lab,) + tuple(fmt(float(bm[(bm["label"] == lab) & (bm["n_models"] == x)]["lds"].iloc[0])) for x in ms)
            for lab in bm.sort_values("width")["label"].unique())))
        figs.append(ReportFigure(FIGURE_NAMES[3], lds_by_m_png(bm, m["reference"]),
                                 "LDS of TRAK with the first M models of each width's ensemble."))
    if len(a["lds_candidates"]):
        b.table("TRAK settings chosen on held-out subsets", _candidates_table(a["lds_candidates"]))
    b.table("Compute spent: training vs attribution", _compute_table(a["compute"], m["reference"]))
    b.p(f"{m['formulas']['train']}. {m['formulas']['attribution']}.")
    if m.get("lm"):
        b.table("Language model: LDS of TRAK scores against reference-size GPTs", _lm_table(m["lm"]))
    return b.section(title, figs)


def _lm_table(lm: dict) -> Table:
    rows = tuple((r["rung"] + (" (reference)" if r["is_reference"] else ""), fmt(int(r["params"])),
                  fmt(float(r["compute_ratio"])), with_ci(r["lds"], r["ci_low"], r["ci_high"]))
                 for r in lm["rows"])
    return Table(("rung", "params", "compute ratio", "TRAK LDS [95% CI]"), rows,
                 f"{lm['n_docs']} training documents, {lm['n_targets']} test targets, {lm['n_subsets']} α-subsets × "
                 f"{lm['seeds']} seeds of the reference; seed-to-seed ceiling {fmt(lm['noise_ceiling'])}.")


def report_parts(analysis_dir: str | Path) -> tuple[list[Section], dict[str, bytes | str]]:
    """The attribution study's own report: its one section, and no extra files."""
    return [attribution_section(analysis_dir)], {}

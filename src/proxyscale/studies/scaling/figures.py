"""The small-to-large study's figures as PNG bytes, drawn from the analysis tables only.

Every figure comes from the shared :func:`~proxyscale.report.figures.new_figure` and
:func:`~proxyscale.report.figures.png_bytes` (object API, Agg canvas, never pyplot).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd

from ...report.figures import new_figure, png_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NGRAM_NAMES = ("unigram", "bigram", "trigram")


def _grid(n: int, panel: tuple[float, float] = (4.2, 3.6), max_cols: int = 3) -> tuple[Figure, list]:
    cols = max(1, min(max_cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(panel[0] * cols, panel[1] * rows)
    # Fixed margins instead of tight_layout: one draw per figure instead of two.
    fig.subplots_adjust(left=0.06 * 3 / cols, right=0.98, bottom=0.13 / rows, top=1 - 0.08 / rows,
                        wspace=0.32, hspace=0.42)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n, 1))]
    return fig, axes


# Okabe & Ito's colour-blind-safe palette (black first, yellow last: faint on white).
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_NGRAM_STYLES = ("--", "-.", ":")


def _colours(models: Iterable[str]) -> dict[str, str]:
    """A fixed colour per model across every figure (Okabe–Ito; n-grams after the neural proxies)."""
    models = list(models)
    order = [m for m in models if m not in _NGRAM_NAMES] + [m for m in models if m in _NGRAM_NAMES]
    return {m: OKABE_ITO[(i + 1) % len(OKABE_ITO)] for i, m in enumerate(order)}


def distribution_styles(dists: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per training distribution: Okabe–Ito colours, then new marker shapes."""
    return {d: (OKABE_ITO[i % len(OKABE_ITO)], _MARKERS[(i // len(OKABE_ITO)) % len(_MARKERS)])
            for i, d in enumerate(sorted(dists))}


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _fit_line(ax, x: np.ndarray, y: np.ndarray) -> None:
    if len(x) >= 2 and np.ptp(x) > 0:
        b, a = np.polyfit(x, y, 1)
        xs = np.array([x.min(), x.max()])
        ax.plot(xs, a + b * xs, color="0.35", lw=1, zorder=1)


def _panel_title(r: pd.Series | None, model: str) -> str:
    if r is None:
        return model
    title = f"{model}: R² = {fmt_num(r['r2'])}"
    if "r2_loo_min" in r and np.isfinite(r["r2_loo_min"]):
        title += f"\nwithout {r['r2_loo_min_dist']}: {fmt_num(r['r2_loo_min'])}"
        if bool(r.get("one_point_carries", False)):
            title += " (!)"
    return title


def fmt_num(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:.2f}"


def _scatter_panel(ax, g: pd.DataFrame, r: pd.Series | None, model: str, styles: dict, ngram: bool) -> None:
    x, y = g["x"].to_numpy(dtype=float), g["y"].to_numpy(dtype=float)
    _fit_line(ax, x, y)
    for (_, p), xi, yi in zip(g.iterrows(), x, y):
        colour, marker = styles[p["distribution"]]
        ax.errorbar(xi, yi, xerr=np.nan_to_num(p["x_sd"]), yerr=np.nan_to_num(p["y_sd"]), fmt=marker, ms=5,
                    color=colour, mec="black" if colour == OKABE_ITO[-1] else colour, capsize=1.5, lw=0.7, zorder=3)
        ax.annotate(str(p["distribution"]), (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points",
                    color="0.2")
    carried = r is not None and bool(r.get("one_point_carries", False))
    if carried and r.get("r2_loo_min_dist") in set(g["distribution"]):
        hit = g[g["distribution"] == r["r2_loo_min_dist"]]
        ax.scatter(hit["x"], hit["y"], s=140, facecolors="none", edgecolors=OKABE_ITO[5], lw=1.4, zorder=4)
    ax.set_title(_panel_title(r, model), fontsize=8, color=OKABE_ITO[5] if carried else "black")
    ax.tick_params(labelsize=6)
    ax.margins(0.15)
    if ngram:
        ax.set_facecolor("#f3f3f3")


def scatter_png(points: pd.DataFrame, summary: pd.DataFrame, test_sets: list[str], neural: list[str],
                ngrams: list[str]) -> bytes:
    """Figure 1: proxy vs reference mean loss, one panel per test set (row) × proxy (column).

    Every panel has its own axes (a proxy's range is not squeezed by another's), one labelled
    point per training distribution (bars: seed sd), the least-squares line, its R² and the
    smallest leave-one-distribution-out R² (ringed: the most influential point, when one
    distribution carries the result). N-gram baselines sit in their own grey panels at the right.
    """
    from matplotlib.lines import Line2D

    models = list(neural) + list(ngrams)
    styles = distribution_styles(points["distribution"].unique() if len(points) else [])
    cols, rows = max(1, len(models)), max(1, len(test_sets))
    fig = new_figure(2.5 * cols + 0.4, 2.35 * rows + 0.7)
    fig.subplots_adjust(left=0.5 / (2.5 * cols + 0.4) + 0.04, right=0.99, bottom=0.35 / (2.35 * rows + 0.7) + 0.02,
                        top=1 - 0.7 / (2.35 * rows + 0.7), wspace=0.35, hspace=0.75)
    for i, ts in enumerate(test_sets):
        for j, m in enumerate(models):
            ax = fig.add_subplot(rows, cols, i * cols + j + 1)
            g = points[(points["test_set"] == ts) & (points["model"] == m)] if len(points) else points
            s = summary[(summary["test_set"] == ts) & (summary["model"] == m)] if len(summary) else summary
            if g.empty:
                _empty(ax)
                ax.set_title(m, fontsize=8)
            else:
                _scatter_panel(ax, g, s.iloc[0] if len(s) else None, m, styles, m in ngrams)
            if j == 0:
                ax.set_ylabel(f"{ts}\nreference loss", fontsize=8)
            if i == rows - 1:
                ax.set_xlabel("n-gram loss" if m in ngrams else "proxy loss", fontsize=7)
    handles = [Line2D([], [], ls="none", marker=mk, color=c, mec="black" if c == OKABE_ITO[-1] else c, label=d)
               for d, (c, mk) in styles.items()]
    if handles:
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 10), fontsize=7, frameon=False,
                   title="training distribution", title_fontsize=7)
    return png_bytes(fig)


def _ngram_lines(ax, s: pd.DataFrame, col: str, colours: dict[str, str]) -> None:
    for i, (_, r) in enumerate(s[s["kind"] == "ngram"].iterrows()):
        if np.isfinite(r[col]):
            ax.axhline(r[col], ls=_NGRAM_STYLES[i % 3], lw=1.2, color=colours.get(r["model"], "0.4"),
                       label=f"{r['model']} (0 FLOPs)")


def _r2_floor(ax) -> float:
    """A lower y-limit that shows differences among high R² values without hiding low ones."""
    lo = ax.get_ylim()[0]  # matplotlib has already fitted every line and error bar drawn
    lo = max(min(lo, 0.99), -0.05)
    return max(lo - 0.1 * (1.0 - lo), -0.05)


def _label_points(ax, frac: np.ndarray, r2: np.ndarray, names: Iterable[str]) -> None:
    """Name each proxy's point; the rightmost label sits to its left, so the axes never clip it."""
    last = int(np.argmax(frac)) if len(frac) else -1
    for i, (f, v, m) in enumerate(zip(frac, r2, names)):
        right = i != last or len(frac) == 1
        ax.annotate(m, (f, v), fontsize=7, xytext=(4 if right else -4, -11), textcoords="offset points",
                    ha="left" if right else "right")


def r2_compute_png(summary: pd.DataFrame, noise: pd.DataFrame, test_sets: list[str]) -> bytes:
    """Figure 2: R² against proxy compute / reference compute (log x), with bootstrap CIs.

    The legend sits below each panel, outside the data, so it never covers a proxy's point."""
    fig, axes = _grid(len(test_sets), panel=(4.2, 4.6))
    rows = math.ceil(max(len(test_sets), 1) / min(3, max(1, len(test_sets))))
    fig.subplots_adjust(bottom=0.25 / rows, hspace=0.85)
    colours = _colours(summary["model"].unique() if len(summary) else [])
    for ax, ts in zip(axes, test_sets):
        s = summary[summary["test_set"] == ts] if len(summary) else summary
        neural = s[s["kind"] == "neural"].sort_values("flops") if len(s) else s
        if neural.empty:
            _empty(ax)
            ax.set_title(ts)
            continue
        frac = 1.0 / neural["compute_ratio"].to_numpy(dtype=float)
        r2 = neural["r2"].to_numpy(dtype=float)
        lo = np.where(np.isfinite(neural["r2_lo"]), r2 - neural["r2_lo"], 0)
        hi = np.where(np.isfinite(neural["r2_hi"]), neural["r2_hi"] - r2, 0)
        ax.errorbar(frac, r2, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o-", color=OKABE_ITO[4], capsize=3,
                    label="neural proxies")
        _label_points(ax, frac, r2, neural["model"])
        _ngram_lines(ax, s, "r2", colours)
        ceil = noise[noise["test_set"] == ts] if len(noise) else noise
        col = "ceiling_r2" if "ceiling_r2" in ceil.columns else "r2"
        if len(ceil) and np.isfinite(ceil[col].iloc[0]):
            ax.axhline(float(ceil[col].iloc[0]), ls=(0, (1, 1)), color=OKABE_ITO[5], lw=1.4,
                       label="reference ceiling (seed reliability)")
        ax.set_xscale("log")
        ax.set_xlim(float(np.nanmin(frac)) / 3, float(np.nanmax(frac)) * 3)  # room for the end labels
        ax.set_ylim(_r2_floor(ax), 1.0 + 0.02)
        ax.set_title(ts)
        ax.set_xlabel("proxy compute / reference compute")
        ax.set_ylabel("R² (proxy vs reference)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return png_bytes(fig)


def partial_png(summary: pd.DataFrame, noise: pd.DataFrame, test_sets: list[str]) -> bytes:
    """Signal beyond n-grams: partial r given the best n-gram vs compute; filled = Holm-adjusted p < 0.05."""
    fig, axes = _grid(len(test_sets))
    for ax, ts in zip(axes, test_sets):
        s = summary[(summary["test_set"] == ts) & (summary["kind"] == "neural")] if len(summary) else summary
        s = s.sort_values("flops") if len(s) else s
        if s.empty or not np.isfinite(s["partial_r"]).any():
            _empty(ax, "no n-gram baseline or too few distributions")
            ax.set_title(ts)
            continue
        frac = 1.0 / s["compute_ratio"].to_numpy(dtype=float)
        pcol = "partial_p_holm" if "partial_p_holm" in s.columns else "partial_p"
        pr, pv = s["partial_r"].to_numpy(dtype=float), s[pcol].to_numpy(dtype=float)
        ax.plot(frac, pr, "-", color=OKABE_ITO[4], lw=1)
        sig = pv < 0.05
        ax.scatter(frac[sig], pr[sig], color=OKABE_ITO[4], zorder=3, label="Holm p < 0.05")
        ax.scatter(frac[~sig], pr[~sig], facecolors="white", edgecolors=OKABE_ITO[4], zorder=3, label="Holm p ≥ 0.05")
        ceil = noise[noise["test_set"] == ts] if len(noise) else noise
        if len(ceil) and np.isfinite(ceil["partial_r"].iloc[0]):
            ax.axhline(float(ceil["partial_r"].iloc[0]), ls=":", color=OKABE_ITO[5], label="reference seed vs seed")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{ts} (given {s['best_ngram'].iloc[0]})")
        ax.set_xlabel("proxy compute / reference compute")
        ax.set_ylabel("partial r with reference")
        ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


def per_example_png(per_example: pd.DataFrame, test_sets: list[str], models: list[str]) -> bytes:
    """Histograms over test examples of the per-example proxy–reference correlation."""
    colours = _colours(models)
    fig, axes = _grid(len(test_sets))
    for ax, ts in zip(axes, test_sets):
        pe = per_example[per_example["test_set"] == ts] if len(per_example) else per_example
        if pe.empty:
            _empty(ax)
            ax.set_title(ts)
            continue
        finite = pe["r"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        low = math.floor(20 * float(finite.min())) / 20 if len(finite) else -1.0  # zoom on the occupied range
        bins = np.linspace(max(min(low, 0.95), -1.0), 1.0, 31)
        for m in models:
            r = pe.loc[pe["model"] == m, "r"].to_numpy(dtype=float)
            r = r[np.isfinite(r)]
            if len(r):
                ax.hist(r, bins=bins, histtype="step", lw=1.4, color=colours[m],
                        label=f"{m} (median {np.median(r):.2f})")
        ax.set_title(ts)
        ax.set_xlabel("per-example r across distributions")
        ax.set_ylabel("examples")
        ax.legend(fontsize=7, loc="upper left")
    return png_bytes(fig)

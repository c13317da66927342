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


def _colours(models: Iterable[str]) -> dict[str, tuple]:
    """A fixed colour per model across every figure (n-grams in greys)."""
    from matplotlib import colormaps

    models = list(models)
    grams = [m for m in models if m in _NGRAM_NAMES]
    neural = [m for m in models if m not in _NGRAM_NAMES]
    cmap = colormaps["plasma"]
    out = {m: cmap(0.85 * i / max(len(neural) - 1, 1)) for i, m in enumerate(neural)}
    out.update({m: str(0.15 + 0.5 * i / max(len(grams), 1)) for i, m in enumerate(grams)})
    return out


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def scatter_png(points: pd.DataFrame, summary: pd.DataFrame, test_sets: list[str], models: list[str]) -> bytes:
    """Figure 1: proxy vs reference mean loss, one point per distribution, a panel per test set."""
    colours = _colours(models)
    fig, axes = _grid(len(test_sets))
    for ax, ts in zip(axes, test_sets):
        p = points[points["test_set"] == ts] if len(points) else points
        if p.empty:
            _empty(ax)
            ax.set_title(ts)
            continue
        for m in models:
            g = p[p["model"] == m]
            if g.empty:
                continue
            s = summary[(summary["test_set"] == ts) & (summary["model"] == m)]
            r2 = float(s["r2"].iloc[0]) if len(s) else math.nan
            ax.errorbar(g["x"], g["y"], xerr=g["x_sd"].fillna(0), yerr=g["y_sd"].fillna(0), fmt="o", ms=4,
                        color=colours[m], capsize=2, lw=0.8, label=f"{m} (R²={r2:.2f})")
        ax.set_title(ts)
        ax.set_xlabel("proxy mean test loss")
        ax.set_ylabel("reference mean test loss")
        ax.legend(fontsize=7, loc="best")
    return png_bytes(fig)


def _ngram_lines(ax, s: pd.DataFrame, col: str) -> None:
    for i, (_, r) in enumerate(s[s["kind"] == "ngram"].iterrows()):
        if np.isfinite(r[col]):
            ax.axhline(r[col], ls="--", lw=1, color=str(0.25 + 0.2 * (i % 3)), label=f"{r['model']} (0 FLOPs)")


def _r2_floor(ax) -> float:
    """A lower y-limit that shows differences among high R² values without hiding low ones."""
    lo = ax.get_ylim()[0]  # matplotlib has already fitted every line and error bar drawn
    lo = max(min(lo, 0.99), -0.05)
    return max(lo - 0.1 * (1.0 - lo), -0.05)


def r2_compute_png(summary: pd.DataFrame, noise: pd.DataFrame, test_sets: list[str]) -> bytes:
    """Figure 2: R² against proxy compute / reference compute (log x), with seed-bootstrap CIs."""
    fig, axes = _grid(len(test_sets))
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
        ax.errorbar(frac, r2, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o-", color="C0", capsize=3,
                    label="neural proxies")
        for f, v, m in zip(frac, r2, neural["model"]):
            ax.annotate(m, (f, v), fontsize=7, xytext=(3, -10), textcoords="offset points")
        _ngram_lines(ax, s, "r2")
        ceil = noise[noise["test_set"] == ts] if len(noise) else noise
        if len(ceil) and np.isfinite(ceil["r2"].iloc[0]):
            ax.axhline(float(ceil["r2"].iloc[0]), ls=":", color="C3", lw=1.2, label="reference seed vs seed")
        ax.set_xscale("log")
        ax.set_ylim(_r2_floor(ax), 1.0 + 0.02)
        ax.set_title(ts)
        ax.set_xlabel("proxy compute / reference compute")
        ax.set_ylabel("R² (proxy vs reference)")
        ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


def partial_png(summary: pd.DataFrame, noise: pd.DataFrame, test_sets: list[str]) -> bytes:
    """Signal beyond n-grams: partial r given the best n-gram vs compute; filled = p < 0.05."""
    fig, axes = _grid(len(test_sets))
    for ax, ts in zip(axes, test_sets):
        s = summary[(summary["test_set"] == ts) & (summary["kind"] == "neural")] if len(summary) else summary
        s = s.sort_values("flops") if len(s) else s
        if s.empty or not np.isfinite(s["partial_r"]).any():
            _empty(ax, "no n-gram baseline or too few distributions")
            ax.set_title(ts)
            continue
        frac = 1.0 / s["compute_ratio"].to_numpy(dtype=float)
        pr, pv = s["partial_r"].to_numpy(dtype=float), s["partial_p"].to_numpy(dtype=float)
        ax.plot(frac, pr, "-", color="C0", lw=1)
        sig = pv < 0.05
        ax.scatter(frac[sig], pr[sig], color="C0", zorder=3, label="p < 0.05")
        ax.scatter(frac[~sig], pr[~sig], facecolors="white", edgecolors="C0", zorder=3, label="p ≥ 0.05")
        ceil = noise[noise["test_set"] == ts] if len(noise) else noise
        if len(ceil) and np.isfinite(ceil["partial_r"].iloc[0]):
            ax.axhline(float(ceil["partial_r"].iloc[0]), ls=":", color="C3", label="reference seed vs seed")
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

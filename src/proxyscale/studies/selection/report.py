"""The "Selection across scale" report: holdout loss per method and proxy scale with CIs, the
gain over random, the smallest proxy that still beats it, the compute multiplier, and the
compute spent on selecting beside the reference's training."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ...analyze.io import read_analysis
from ...report.body import Body
from ...report.figures import new_figure, png_bytes
from ...report.section import ReportFigure, Section
from ...report.tables import Table, fmt


def _ci(v: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _label(r: Any) -> str:
    return f"{r.method} ({r.proxy})" if r.proxy else (r.method if r.budget == 1.0 else f"{r.method} ×{r.budget:g}")


def _diff(r: pd.Series) -> str:
    return f"{_label(SimpleNamespace(**r))} {_ci(r['minus_random'], r['minus_random_low'], r['minus_random_high'])}"


def _holdout_table(h: pd.DataFrame, mult: pd.DataFrame, meta: dict[str, Any]) -> Table:
    ref_flops = meta["rungs"][meta["reference"]]["flops"]
    m = {r.selection: r for r in mult.itertuples()} if len(mult) else {}
    rows = []
    for r in h.sort_values(["method", "budget", "selection_flops"]).itertuples():
        ratio = ref_flops / meta["rungs"][r.proxy]["flops"] if r.proxy else float("nan")
        mu = m.get(r.selection)
        mult_s = "—" if mu is None else f"{mu.multiplier:.2f}× [{mu.multiplier_low:.2f}, {mu.multiplier_high:.2f}]" + (
            " (extrap.)" if mu.extrapolated else "")
        rows.append((_label(r), fmt(ratio), f"{r.loss:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
                     "0 (baseline)" if r.method == "random" and r.budget == 1.0 else
                     _ci(r.minus_random, r.minus_random_low, r.minus_random_high),
                     fmt(r.accuracy), mult_s, fmt(r.selection_flops / r.reference_flops if r.proxy else float("nan"))))
    return Table(("selection", "ref/proxy compute", "holdout loss [95% CI]", "− random [95% CI]", "accuracy",
                  "random needs", "selection / reference compute"), tuple(rows),
                 "Loss: nats per predicted token, mean over holdout examples of the reference seeds' mean; CIs: "
                 "95% bootstrap over holdout examples × reference seeds, the seed noise pooled over the "
                 "target's selections. '− random': the difference from random at the same budget, paired "
                 "over examples (negative = better). 'random needs': the compute random selection needs to "
                 "match the loss, as a multiple of this selection's (monotone piecewise-linear in log compute "
                 "through random's measured budgets, so random at a measured budget needs 1.00×; CI from the "
                 "same replicates).")


def _figure(h: pd.DataFrame, meta: dict[str, Any], target: str) -> bytes:
    fig = new_figure(5.2, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ref = meta["rungs"][meta["reference"]]["flops"]
    for method, colour in (("dsdm", "tab:blue"), ("bot-dsdm", "tab:red")):
        g = h[h["method"] == method].copy()
        if not len(g):
            continue
        g["ratio"] = [ref / meta["rungs"][p]["flops"] for p in g["proxy"]]
        g = g.sort_values("ratio")
        ax.errorbar(g["ratio"], g["minus_random"], yerr=[g["minus_random"] - g["minus_random_low"],
                                                          g["minus_random_high"] - g["minus_random"]],
                    marker="o", capsize=3, color=colour, label=method)
    for method, style in (("dsir", "--"), ("classifier", ":")):
        g = h[h["method"] == method]
        if len(g):
            ax.axhline(float(g["minus_random"].iloc[0]), ls=style, color="tab:green", label=method)
    ax.axhline(0.0, color="grey", lw=0.8, label="random")
    ax.set_xscale("log")
    ax.set_xlabel("reference / proxy training compute")
    ax.set_ylabel("holdout loss − random (nats)")
    ax.set_title(f"target: {target}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def _headline(h: pd.DataFrame, meta: dict[str, Any], target: str) -> str:
    parts = []
    big = max(meta["proxies"], key=lambda p: meta["rungs"][p]["flops"]) if meta["proxies"] else None
    for method, proxy in (("dsdm", big), ("bot-dsdm", big), ("dsir", ""), ("classifier", "")):
        r = h[(h["method"] == method) & (h["proxy"] == (proxy or ""))]
        if len(r):
            x = r.iloc[0]
            parts.append(f"{method}{f' ({proxy})' if proxy else ''} "
                         f"{_ci(x['minus_random'], x['minus_random_low'], x['minus_random_high'])}")
    return f"Target '{target}': holdout loss minus random — " + "; ".join(parts) + "."


def verdict(h: pd.DataFrame, target: str) -> str:
    """The first line a reader needs about one target: whether any selection beat random (its
    difference CI entirely below zero), the best one, and what selecting cost beside training."""
    sel = h[(h["target"] == target) & (h["method"] != "random")]
    if not len(sel):
        return f"Target '{target}': no selection method besides random was run."
    best = sel.sort_values("minus_random").iloc[0]
    wins = sel[sel["minus_random_high"] < 0]
    ratio = sel["selection_flops"] / sel["reference_flops"]
    top_cost = ", ".join(_label(SimpleNamespace(**r)) for _, r in sel[ratio == ratio.max()].iterrows())
    spent = (f"Selecting cost up to {ratio.max():.3g}× the reference's training compute ({top_cost})"
             if ratio.max() > 0 else "Selecting cost no model training")
    free = ", ".join(sorted(set(sel[ratio == 0]["method"])))
    spent += f"; {free} {'need' if ', ' in free else 'needs'} no model training." if free and ratio.max() > 0 else "."
    if not len(wins):
        return (f"No gain on target '{target}': no method beat random selection (every difference CI reaches 0 "
                f"or above); the best was {_diff(best)} nats. {spent}")
    top = wins.sort_values("minus_random").iloc[0]
    return (f"Target '{target}': {len(wins)} of {len(sel)} selections beat random (difference CI below 0); the "
            f"best was {_diff(top)} nats. {spent}")


def selection_section(analysis_dir: Path, title: str = "Selection across scale") -> Section:
    a = read_analysis(analysis_dir, kind="selection")
    meta, h, b, figs = a.meta, a.tables["holdout"], Body(), []
    ref = meta["rungs"][meta["reference"]]
    for t in meta["targets"]:
        b.p(verdict(h, t), cls="lead")
    b.p(f"Pool: {meta['pool_windows']:,} windows of {meta['context']} tokens. Every selection has the "
        f"reference's budget ({ref['tokens']:,} tokens); the reference ({meta['reference']}, {ref['params']:,} "
        f"parameters) is trained on each with seeds {meta['reference_seeds']}.", cls="lead")
    for t in meta["targets"]:
        ht = h[h["target"] == t]
        b.p(_headline(ht, meta, t))
        hold = meta.get("holdouts", {}).get(t)
        if hold:
            b.p(f"Holdout of '{t}': {hold['n']} examples ({meta['target_kinds'][t]}); "
                f"{hold['dropped_in_pool']} dropped for text found in the pool and {hold['dropped_in_target']} "
                "for text found in the target (13-gram hashes).")
        b.table(f"Target '{t}': holdout loss per method and proxy scale",
                _holdout_table(ht, a.tables["multiplier"][a.tables["multiplier"]["target"] == t]
                               if len(a.tables["multiplier"]) else a.tables["multiplier"], meta))
        figs.append(ReportFigure(f"selection_{_slug(t)}", _figure(ht, meta, t),
                                 f"Target '{t}': holdout loss minus random's, by proxy compute (error bars: 95% CI)."))
    _smallest(b, a.tables["smallest_proxy"])
    ov = a.tables["overlap"]
    if len(ov):
        b.table("Overlap of selections (Jaccard)", Table(("target", "a", "b", "Jaccard"), tuple(
            (r.target, r.a, r.b, f"{r.jaccard:.2f}") for r in ov.itertuples())))
    return b.section(title, figs)


def _smallest(b: Body, sm: pd.DataFrame) -> None:
    if not len(sm):
        return
    b.table("Smallest proxy whose selection beats random", Table(
        ("target", "method", "smallest proxy", "ref/proxy compute", "all larger also beat"),
        tuple((r.target, r.method, r.smallest_proxy or "none", fmt(r.compute_ratio),
               fmt(r.all_larger_beat) if r.smallest_proxy else "—") for r in sm.itertuples())))


def _slug(t: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in t)


def report_parts(analysis_dir: Path) -> tuple[list[Section], dict[str, Any]]:
    return [selection_section(analysis_dir)], {}

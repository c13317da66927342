"""The study report: one self-contained HTML page and a Markdown twin, from analysis tables only.

:func:`write_report` reads the directory written by :func:`proxyscale.analyze.write_analysis`
and writes ``report.html`` (CSS inline, figures embedded as base64 PNG, no external assets),
``report.md`` (figures saved beside it under ``figures/``) and a stable ``summary.csv``.
Other parts of the system append their own :class:`Section` objects (e.g. attribution results).
"""
from __future__ import annotations

import base64
import html as _html
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..analyze.io import read_analysis
from ..errors import DataError
from ..store import write_bytes, write_text
from . import sections as sec
from .section import ReportFigure, Section, SectionLike, as_section

__all__ = ["write_report", "render_html", "render_markdown", "summary_csv", "Section", "ReportFigure"]

SUMMARY_CSV_COLUMNS = (
    "test_set", "framing", "model", "kind", "params", "train_tokens", "flops", "compute_ratio", "n_dist",
    "n_seeds", "ref_n_seeds", "r2", "r2_lo", "r2_hi", "pearson", "spearman", "kendall", "decision_accuracy",
    "decision_accuracy_lo", "decision_accuracy_hi", "best_ngram", "partial_r", "partial_p", "partial_exact",
)

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;
padding:0 16px;color:#1d2433;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #3b5b8c;padding-bottom:6px}
h2{font-size:1.3em;margin-top:1.8em;color:#26406b}
table{border-collapse:collapse;margin:10px 0;font-size:.86em}
th,td{border:1px solid #c9d1de;padding:3px 8px;text-align:right}
th{background:#eef2f8}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#f8f9fc}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #e1e5ec}
figcaption,.note{font-size:.85em;color:#555}
.lead{background:#fff7e0;border-left:4px solid #e0a800;padding:6px 12px}
nav a{margin-right:10px;font-size:.9em}
"""


def _anchor(title: str, i: int) -> str:
    return f"s{i}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The full page; every figure is a data: URI, so the file stands alone."""
    nav = "".join(f'<a href="#{_anchor(s.title, i)}">{_html.escape(s.title)}</a>' for i, s in enumerate(sections))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{_html.escape(title)}</h1><nav>{nav}</nav>"]
    for i, s in enumerate(sections):
        parts.append(f'<section id="{_anchor(s.title, i)}"><h2>{_html.escape(s.title)}</h2>{s.html}')
        for f in s.figures:
            b64 = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure><img alt="{_html.escape(f.caption or f.name)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{_html.escape(f.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """The Markdown page; figures are referenced as figures/<name>.png."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", "", s.markdown.strip(), ""]
        out += [f"![{f.caption or f.name}](figures/{f.name}.png)\n\n*{f.caption}*\n" for f in s.figures]
    return "\n".join(out).rstrip() + "\n"


def summary_csv(analysis: dict[str, pd.DataFrame]) -> str:
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


def write_report(analysis_dir: str | Path, out_dir: str | Path, *, title: str,
                 extra_sections: list[SectionLike] | None = None) -> tuple[Path, Path]:
    """Write report.html, report.md, figures/*.png and summary.csv; returns (html path, md path)."""
    analysis = read_analysis(analysis_dir)
    for need in ("summary", "points", "test_sets", "models", "settings"):
        if need not in analysis:
            raise DataError(f"{analysis_dir}: analysis lacks the '{need}' table; re-run the analysis step")
    extras = [as_section(s) for s in extra_sections or []]
    seen: set[str] = set(sec.FIGURE_NAMES)
    for f in (f for s in extras for f in s.figures):  # checked before the slow drawing starts
        if f.name in seen:
            raise DataError(f"two report figures are named {f.name!r}; give extra sections unique figure names")
        seen.add(f.name)
    sections = sec.study_sections(analysis) + extras
    out = Path(out_dir)
    for f in (f for s in sections for f in s.figures):
        write_bytes(out / "figures" / f"{f.name}.png", f.png)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(title, sections))
    write_text(md_path, render_markdown(title, sections))
    write_text(out / "summary.csv", summary_csv(analysis))
    return html_path, md_path

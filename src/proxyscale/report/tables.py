"""Tables for the report, rendered both as HTML and as GitHub-flavoured Markdown.

A table here is a list of column names plus rows of already formatted strings, so the two
renderings can never disagree about a number.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Table:
    """Formatted cells: ``columns`` and ``rows`` of strings; ``note`` is shown under it."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}'

    def to_markdown(self) -> str:
        def cell(v: str) -> str:
            return v.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in self.rows]
        if self.note:
            lines += ["", f"*{self.note}*"]
        return "\n".join(lines)


def fmt(v: object, digits: int = 3) -> str:
    """A number for a table: fixed digits, '—' for missing, '∞' for infinity, SI-ish for big."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.2e}"
        if abs(v) >= 100:  # compute ratios and counts: decimals would be noise
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def from_frame(df: pd.DataFrame, columns: dict[str, str], note: str = "", digits: int = 3) -> Table:
    """Select and rename ``columns`` (source → header) and format every cell."""
    cols = [c for c in columns if c in df.columns]
    rows = tuple(tuple(fmt(r[c], digits) for c in cols) for _, r in df.iterrows())
    return Table(tuple(columns[c] for c in cols), rows, note)


def with_ci(v: float, lo: float, hi: float) -> str:
    """'0.912 [0.88, 0.94]' (or just the value when there is no interval)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return fmt(v)
    return f"{fmt(v)} [{lo:.2f}, {hi:.2f}]"


def with_p(r: float, p: float) -> str:
    """'+0.45 (p=0.008)'."""
    if not np.isfinite(r):
        return "—"
    return f"{r:+.2f} (p={p:.3g})" if np.isfinite(p) else f"{r:+.2f}"


def pivot(summary: pd.DataFrame, test_sets: list[str], cell, *, models: list[str], first: str = "proxy",
          extra_rows: list[tuple[str, ...]] | None = None, note: str = "") -> Table:
    """Rows = models (in the given order), columns = test sets, cells from ``cell(row)``."""
    rows = []
    for m in models:
        out = [m]
        for ts in test_sets:
            s = summary[(summary["test_set"] == ts) & (summary["model"] == m)]
            out.append(cell(s.iloc[0]) if len(s) else "—")
        rows.append(tuple(out))
    rows += extra_rows or []
    return Table(tuple([first] + test_sets), tuple(rows), note)

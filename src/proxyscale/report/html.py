"""The one report writer: any study's sections as a self-contained HTML page and a Markdown twin.

:func:`write_report` takes a list of :class:`Section` objects (from whichever study kinds
contribute) and writes ``report.html`` (CSS inline, figures embedded as base64 PNG, no external
assets), ``report.md`` (figures saved beside it under ``figures/``) and any extra files a study
asks for (e.g. the scaling study's ``summary.csv``). It knows nothing about any study kind.
"""
from __future__ import annotations

import base64
import html as _html
import re
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from ..errors import DataError
from ..store import write_bytes, write_text
from .section import ReportFigure, Section, SectionLike, as_section

__all__ = ["write_report", "render_html", "render_markdown", "Section", "ReportFigure"]

HTML_NAME, MD_NAME, FIGURE_DIR = "report.html", "report.md", "figures"

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


def _check_figures(sections: Sequence[Section]) -> None:
    seen: set[str] = set()
    for f in (f for s in sections for f in s.figures):
        if f.name in seen:
            raise DataError(f"two report figures are named {f.name!r}; give each section's figures unique names")
        seen.add(f.name)


def _file_path(out: Path, name: str) -> Path:
    """Where an extra file goes: a relative path inside the report directory that is not the
    page, its Markdown twin or the figures folder."""
    rel = PurePosixPath(name)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise DataError(f"extra report file {name!r} must be a relative path inside the report directory")
    if str(rel) in (HTML_NAME, MD_NAME) or rel.parts[0] == FIGURE_DIR:
        raise DataError(f"extra report file {name!r} would overwrite the report's own {rel.parts[0]}; rename it")
    return out.joinpath(*rel.parts)


def write_report(out_dir: str | Path, title: str, sections: Sequence[SectionLike], *,
                 files: Mapping[str, bytes | str] | None = None) -> tuple[Path, Path]:
    """Write report.html, report.md, figures/<name>.png for every section's figures, and each
    of ``files`` (relative name → bytes, or text written as UTF-8); returns (html path, md path).

    Everything is checked before anything is written: figure names must be unique across
    sections, and extra files may not overwrite the report's own files.
    """
    secs = [as_section(s) for s in sections]
    _check_figures(secs)
    out = Path(out_dir)
    extra = {_file_path(out, name): data for name, data in (files or {}).items()}
    for f in (f for s in secs for f in s.figures):
        write_bytes(out / FIGURE_DIR / f"{f.name}.png", f.png)
    html_path, md_path = out / HTML_NAME, out / MD_NAME
    write_text(html_path, render_html(title, secs))
    write_text(md_path, render_markdown(title, secs))
    for path, data in extra.items():
        if isinstance(data, bytes):
            write_bytes(path, data)
        else:
            write_text(path, data)
    return html_path, md_path

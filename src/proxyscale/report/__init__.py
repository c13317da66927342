"""Reports, generic over study kinds: sections → one HTML + Markdown writer (never trains, no torch).

A study kind's report module builds :class:`Section` objects (with :class:`Body`, the tables
of :mod:`.tables` and figures from :mod:`.figures`); :func:`write_report` renders any list of them.
"""
from .body import Body
from .figures import new_figure, png_bytes
from .html import render_html, render_markdown, write_report
from .screenshot import screenshot
from .section import ReportFigure, Section, SectionLike, as_section

__all__ = ["write_report", "render_html", "render_markdown", "Body", "Section", "SectionLike", "ReportFigure",
           "as_section", "new_figure", "png_bytes", "screenshot"]

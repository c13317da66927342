"""Reports: HTML + Markdown pages and figures drawn from analysis tables (never trains, no torch)."""
from .html import render_html, render_markdown, summary_csv, write_report
from .screenshot import screenshot
from .section import ReportFigure, Section

__all__ = ["write_report", "render_html", "render_markdown", "summary_csv", "Section", "ReportFigure", "screenshot"]

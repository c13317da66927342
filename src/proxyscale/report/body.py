"""The one way report sections build their body: HTML and Markdown side by side."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

from .section import ReportFigure, Section
from .tables import Table


@dataclass
class Body:
    """Accumulates paragraphs, lists and tables as HTML and Markdown side by side, so the two
    renderings of a section never disagree; :meth:`section` turns them into a :class:`Section`."""

    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def p(self, text: str, cls: str = "") -> None:
        """A paragraph of plain text (escaped); ``cls="lead"`` marks it as the point to read first."""
        attr = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md.append(("> " if cls == "lead" else "") + text)

    def bullets(self, items: Sequence[str]) -> None:
        """A bulleted list of plain-text items (nothing when empty)."""
        if items:
            self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            self.md.append("\n".join(f"- {i}" for i in items))

    def table(self, caption: str, t: Table) -> None:
        """A captioned table."""
        self.html.append(f"<h3>{html.escape(caption)}</h3>{t.to_html()}")
        self.md.append(f"### {caption}\n\n{t.to_markdown()}")

    def section(self, title: str, figures: Sequence[ReportFigure] = ()) -> Section:
        """The finished section, with ``figures`` placed after the body."""
        return Section(title, "".join(self.html), "\n\n".join(self.md), tuple(figures))

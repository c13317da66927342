"""The unit other parts of the system use to add to a report: a titled section with figures."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ..errors import DataError


@dataclass(frozen=True)
class ReportFigure:
    """A PNG figure; ``name`` is its file stem under figures/ (letters, digits, '_' or '-')."""

    name: str
    png: bytes
    caption: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise DataError(f"figure name {self.name!r} must use only letters, digits, '_' and '-'")
        if not self.png.startswith(b"\x89PNG"):
            raise DataError(f"figure {self.name!r} is not PNG data")


@dataclass(frozen=True)
class Section:
    """One report section: a title, body as HTML and as Markdown, and figures placed after it.

    The HTML body is inserted as is (the caller escapes its own text); figures are embedded in
    the HTML page and saved as files for the Markdown page.
    """

    title: str
    html: str = ""
    markdown: str = ""
    figures: tuple[ReportFigure, ...] = ()


SectionLike = Union[Section, tuple[str, str, str]]


def as_section(s: SectionLike) -> Section:
    """Accept a :class:`Section` or a plain ``(title, html, markdown)`` tuple."""
    if isinstance(s, Section):
        return s
    if isinstance(s, tuple) and len(s) == 3 and all(isinstance(v, str) for v in s):
        return Section(title=s[0], html=s[1], markdown=s[2])
    raise DataError(f"an extra report section must be a Section or (title, html, markdown), got {type(s).__name__}")

"""The one figure helper of every report: a fresh Agg-backed figure and its PNG bytes.

Figures use matplotlib's object API with their own Agg canvas, never pyplot, so drawing a
report changes no global backend or state of the calling process. matplotlib is imported
only when a figure is drawn.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110  # every report figure: the size in inches × DPI is the size in pixels


def new_figure(width: float, height: float) -> Figure:
    """A ``width`` × ``height`` inch figure at :data:`DPI`, attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG at :data:`DPI`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()

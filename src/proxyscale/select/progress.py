"""What a selection tells its user while it runs: a tqdm bar with ETA per phase (on stderr), one
``warning:`` line per thing the user should know, and each phase's wall time for the manifest.

``proxyscale select`` makes a :class:`Tracker` current with :func:`tracking`; the methods call
:func:`phase` and :func:`warn` wherever they are. With no tracker current (a selection inside a
study step) both do nothing, so the methods keep one signature: ``select(pool, target, n, seed)``.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Optional

_CURRENT: ContextVar[Optional["Tracker"]] = ContextVar("selection_tracker", default=None)
PHASES = ("reading", "featurising", "proxy training", "TRAK featurisation", "scoring", "writing")


class Tracker:
    """Bars (when ``show``; ``None``: when stderr is a terminal), warnings and notes (always kept;
    printed on stderr), phase times."""

    def __init__(self, show: Optional[bool] = None) -> None:
        self.show = sys.stderr.isatty() if show is None else show
        self.seconds: dict[str, float] = {}
        self.warnings: list[str] = []
        self.notes: dict[str, Any] = {}
        self.pool_size: Optional[int] = None  # known once the pool has been read: later bars get an ETA

    @contextmanager
    def phase(self, name: str, total: Optional[float] = None, unit: str = "doc") -> Iterator[Any]:
        """A tqdm bar named ``name`` (a no-op bar when hidden); its wall time adds to ``seconds``."""
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"{name:<18}", unit=unit, unit_scale=unit == "B", file=sys.stderr,
                   disable=not self.show, smoothing=0.1, mininterval=0.5, dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            yield bar
        finally:
            bar.close()
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)

    def warn(self, message: str) -> None:
        """One ``warning: ...`` line on stderr (above any bar), kept for the manifest."""
        from tqdm import tqdm

        self.warnings.append(message)
        tqdm.write(f"warning: {message}", file=sys.stderr)

    def note(self, key: str, value: Any, line: Optional[str] = None) -> None:
        """A measured fact for the manifest (``key``), and a ``line`` on stderr if given."""
        from tqdm import tqdm

        self.notes[key] = value
        if line:
            tqdm.write(line, file=sys.stderr)


@contextmanager
def tracking(show: Optional[bool] = None) -> Iterator[Tracker]:
    """Make a new :class:`Tracker` current for the block."""
    tracker = Tracker(show)
    token = _CURRENT.set(tracker)
    try:
        yield tracker
    finally:
        _CURRENT.reset(token)


@contextmanager
def phase(name: str, total: Optional[float] = None, unit: str = "doc") -> Iterator[Any]:
    """The current tracker's bar for ``name``, or a disabled tqdm bar when none is current."""
    tracker = _CURRENT.get()
    if tracker is not None:
        with tracker.phase(name, total, unit) as bar:
            yield bar
        return
    from tqdm import tqdm

    with tqdm(total=total, disable=True) as bar:
        yield bar


def warn(message: str) -> None:
    """Tell the user (no-op without a current tracker: a study step records its own results)."""
    tracker = _CURRENT.get()
    if tracker is not None:
        tracker.warn(message)


def pool_size() -> Optional[int]:
    """The number of pool documents, when the current tracker has read the pool (else None)."""
    tracker = _CURRENT.get()
    return None if tracker is None else tracker.pool_size


def note(key: str, value: Any, line: Optional[str] = None) -> None:
    """Record a diagnostic for the manifest and say ``line`` (no-op without a current tracker)."""
    tracker = _CURRENT.get()
    if tracker is not None:
        tracker.note(key, value, line)

"""Where proxyscale may read and write at all: the system-directory rule shared by every input
(:func:`proxyscale.data.sources.local_files`) and every output (:mod:`proxyscale.store.output`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

SYSTEM_DIRS = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run")  # never read as data, never written


def system_dir(resolved: Path) -> Optional[str]:
    """The system directory that the resolved path ``resolved`` lies in (or is), else None.
    The filesystem root counts as one: it holds them all."""
    if resolved == Path(resolved.anchor):
        return resolved.anchor
    return next((d for d in SYSTEM_DIRS if resolved == Path(d) or resolved.is_relative_to(d)), None)

"""Data selection: one Selector protocol and registry — ``random``, ``dsir``, ``classifier``,
``dsdm`` and ``bot-dsdm`` (proxies trained on the pool, TRAK; :mod:`proxyscale.select.dsdm`).
Importing this package registers the built-in methods; each is a frozen dataclass of its settings
(:mod:`proxyscale.select.methods` lists them)."""
from __future__ import annotations

from typing import Any, Optional

from . import classifier, dsdm_docs, dsir, rand  # noqa: F401  (each registers itself)
from .base import SELECTORS, Pool, Selection, Selector
from .methods import build, describe_methods


def make_selector(method: str, flag: Optional[str] = None, **settings: Any) -> Selector:
    """Build a registered selector by name with its settings (unknown settings are errors that
    list the valid ones; ``flag``: how the user gave them, e.g. ``"--set"``)."""
    return build(method, settings, flag)


__all__ = ["SELECTORS", "Pool", "Selection", "Selector", "describe_methods", "make_selector"]

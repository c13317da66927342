"""Data selection: one Selector protocol and registry — ``random``, ``dsir``, ``classifier``,
``dsdm`` and ``bot-dsdm`` (proxies trained on the pool, TRAK; :mod:`proxyscale.select.dsdm`).
Importing this package registers the built-in methods."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import classifier, dsdm_docs, dsir, rand  # noqa: F401  (each registers itself)
from .base import SELECTORS, Pool, Selection, Selector


def make_selector(method: str, **settings: Any) -> Selector:
    """Build a registered selector by name with its settings (unknown settings are errors)."""
    import dataclasses

    from ..config import from_dict
    factory = SELECTORS.get(method)
    if dataclasses.is_dataclass(factory):  # typed settings: unknown keys get a hint
        return from_dict(factory, {k: v for k, v in settings.items()}, f"{method} settings")
    try:
        return factory(**settings)
    except TypeError as e:
        raise ConfigError(f"select --method {method}: {e}") from None


__all__ = ["SELECTORS", "Pool", "Selection", "Selector", "make_selector"]

"""Per-example evaluation of trained models (losses and accuracies as tables)."""
from __future__ import annotations

from typing import Any

_LAZY = {"evaluate_lm": "lm"}

__all__ = ["evaluate_lm"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

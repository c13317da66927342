"""Training: settings, AdamW and schedule, the single-model loop, batched tiny models, checkpoints.

``TrainConfig`` and ``lr_at`` import without torch; ``train_lm`` and ``train_lm_batched`` load
torch on first use, so planning code can build configs without it.
"""
from __future__ import annotations

from typing import Any

from .optim import TrainConfig, lr_at

_LAZY = {"train_lm": "loop", "run_hash": "loop", "train_lm_batched": "batched", "AdamW": "optim"}

__all__ = ["AdamW", "TrainConfig", "lr_at", "run_hash", "train_lm", "train_lm_batched"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

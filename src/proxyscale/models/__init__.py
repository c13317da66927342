"""Model families and the ladder size table.

``GPTConfig``, ``param_count`` and the ladder helpers import without torch; the torch modules
(``GPT``, ``load_gpt``, ``export_hf``) load on first use, so planning code stays torch-free.
"""
from __future__ import annotations

from typing import Any

from .ladder import (
    PAPER_LM_LADDER,
    PAPER_VOCAB,
    GPTConfig,
    Rung,
    compute_ratio,
    get_rung,
    param_count,
    train_flops,
    train_steps,
    train_tokens,
)

_LAZY = {"GPT": "gpt", "load_gpt": "gpt", "model_config_dict": "gpt", "export_hf": "hf_export"}

__all__ = ["GPT", "GPTConfig", "PAPER_LM_LADDER", "PAPER_VOCAB", "Rung", "compute_ratio", "export_hf",
           "get_rung", "load_gpt", "model_config_dict", "param_count", "train_flops", "train_steps",
           "train_tokens"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

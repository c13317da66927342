"""The size table of the language-model ladder, token budgets and compute (SPEC §2).

:class:`GPTConfig` and :func:`param_count` live here, free of torch, so that planning code can
size models without importing it (``proxyscale.models.gpt`` re-exports both).

Compute is ``C = 6·P·D`` (P parameters, D training tokens). At a fixed tokens-per-parameter
ratio, C grows as P², so the compute gap between two rungs is ``(P_ref / P_proxy)²``.

Worked numbers for the paper ladder (V = 50,368; exact counts from
:func:`param_count`):

=======  ===============  ==============  =========================
rung     shape            P               gap to 760M at 20 tok/P
=======  ===============  ==============  =========================
37M      d384 L10 T1024    37,479,936     411.7×
80M      d640 L10 T1024    82,127,360      85.7×
125M     d768 L12 T2048   125,311,488      36.8×
350M     d1024 L24 T2048  355,985,408       4.56×
760M     d1536 L24 T2048  760,470,528       1×
=======  ===============  ==============  =========================

The paper's "80M" and "350M" are nominal (the formula gives 82.1M and 356.0M). Its quoted
37M → 760M gap of 370× is not (P_ref/P_proxy)² = 411.7×; it matches the *realised* budgets,
which overshoot 20 tokens/param by different amounts — the SPEC's realised range 20.1–22.4, with
22.4 on the 37M and 20.1 on the 760M, gives 411.7 · 20.1 / 22.4 ≈ 369. Head counts are not given
in the paper; these use 64-wide heads except the 760M (12 heads of 128, as in MPT-760M).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT. ``context`` is the longest sequence the model accepts (T)."""

    vocab_size: int
    context: int
    d_model: int
    n_layers: int
    n_heads: int
    mup: bool = False
    mup_base_width: int = 64
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "mup_base_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"GPTConfig: d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                              "pick n_heads that divides the width")
        if self.mup and self.mup_base_width % self.n_heads:
            raise ConfigError(f"GPTConfig: mup_base_width {self.mup_base_width} is not divisible by n_heads "
                              f"{self.n_heads}; the base model needs whole heads")
        if not self.init_std > 0:
            raise ConfigError(f"GPTConfig.init_std must be > 0, got {self.init_std}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def width_mult(self) -> float:
        """d_model / mup_base_width under μP, else 1."""
        return self.d_model / self.mup_base_width if self.mup else 1.0

    @property
    def attn_scale(self) -> float:
        """Multiplier of q·k: 1/sqrt(d_head) normally, sqrt(base d_head)/d_head under μP."""
        if self.mup:
            return math.sqrt(self.mup_base_width / self.n_heads) / self.head_dim
        return 1.0 / math.sqrt(self.head_dim)

    @property
    def output_mult(self) -> float:
        """Multiplier of the output logits: 1/width_mult under μP, else 1."""
        return 1.0 / self.width_mult


def param_count(cfg: GPTConfig) -> int:
    """Exact parameter count ``V·d + T·d + L·(12·d² + 13·d) + 2·d`` (tied output layer)."""
    V, T, d, L = cfg.vocab_size, cfg.context, cfg.d_model, cfg.n_layers
    return V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d


@dataclass(frozen=True)
class Rung:
    """One ladder size. ``context`` is the paper's T for that size (None: set it per study)."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    context: int | None = None

    def config(self, vocab_size: int, context: int | None = None, mup: bool = False,
               mup_base_width: int = 64) -> GPTConfig:
        """The :class:`GPTConfig` of this rung for a vocabulary (and context, if not fixed)."""
        T = context if context is not None else self.context
        if T is None:
            raise ConfigError(f"rung '{self.name}' has no context length; pass context=")
        return GPTConfig(vocab_size=vocab_size, context=T, d_model=self.d_model, n_layers=self.n_layers,
                         n_heads=self.n_heads, mup=mup, mup_base_width=mup_base_width)

    def params(self, vocab_size: int, context: int | None = None) -> int:
        """Exact parameter count of this rung."""
        return param_count(self.config(vocab_size, context))


PAPER_VOCAB = 50_368

PAPER_LM_LADDER: tuple[Rung, ...] = (
    Rung("37M", 384, 10, 6, 1024),
    Rung("80M", 640, 10, 10, 1024),
    Rung("125M", 768, 12, 12, 2048),
    Rung("350M", 1024, 24, 16, 2048),
    Rung("760M", 1536, 24, 12, 2048),
)


def get_rung(name: str, ladder: tuple[Rung, ...] = PAPER_LM_LADDER) -> Rung:
    """Look a rung up by name."""
    for r in ladder:
        if r.name == name:
            return r
    from ..config import suggest

    raise ConfigError(f"unknown rung '{name}'{suggest(name, [r.name for r in ladder])}; "
                      f"known: {', '.join(r.name for r in ladder)}")


def train_tokens(params: int, tokens_per_param: float = 20.0, multiple: int = 1) -> int:
    """Training tokens for a model of ``params`` parameters.

    Rounding rule: ``tokens_per_param · params`` rounded *up* to a whole number of ``multiple``
    tokens (pass the tokens per optimiser step, ``batch_size · T``, so the budget is a whole number
    of steps). The realised ratio is therefore never below the target — as in the paper, whose
    realised ratios were 20.1–22.4.
    """
    if params < 1 or multiple < 1 or not tokens_per_param > 0:
        raise ConfigError(f"train_tokens needs params >= 1, multiple >= 1 and tokens_per_param > 0; got "
                          f"{params}, {multiple}, {tokens_per_param}")
    return math.ceil(tokens_per_param * params / multiple) * multiple


def train_steps(params: int, batch_tokens: int, tokens_per_param: float = 20.0) -> int:
    """Optimiser steps for the budget of :func:`train_tokens` with ``batch_tokens`` tokens per step."""
    return train_tokens(params, tokens_per_param, batch_tokens) // batch_tokens


TRAIN_FLOPS_FORMULA = "C_train = 6 · P · D (forward + backward ≈ 6 FLOPs per parameter per token or example)"
VISION_TRAIN_FLOPS_FORMULA = ("C_train = 6 · P · N_examples · epochs (forward + backward ≈ 6 FLOPs per parameter per "
                              "example)")
ATTR_FLOPS_FORMULA = ("C_attr = [(6·P·T + 4k² + 2kP)·n + 2P(3T + k)·n_targets + k³] per featurised checkpoint "
                      "(SPEC §7; T = 1 for classification)")


def train_flops(params: int, tokens: int) -> float:
    """Training compute ``6·P·D`` in FLOPs (D: training tokens, or examples × epochs for vision).

    The one place this formula lives: planners, trainers, analyses and reports all call it."""
    return 6.0 * params * tokens


def attribution_flops(params: int, k: int, n_train: int, n_targets: int, tokens: int = 1) -> float:
    """SPEC §7 cost of featurising and scoring with one checkpoint (``ATTR_FLOPS_FORMULA``)."""
    p, t = float(params), float(tokens)
    return (6 * p * t + 4 * k * k + 2 * k * p) * n_train + 2 * p * (3 * t + k) * n_targets + float(k) ** 3


@dataclass(frozen=True)
class Budget:
    """One training run's budget: parameters, tokens, optimiser steps, batch size, FLOPs."""

    params: int
    tokens: int
    n_steps: int
    batch_size: int
    flops: float

    def as_dict(self) -> dict:
        return {"params": self.params, "tokens": self.tokens, "n_steps": self.n_steps,
                "batch_size": self.batch_size, "flops": self.flops}


def lm_budget(cfg: GPTConfig, tokens_per_param: float, batch_size: int) -> Budget:
    """The Chinchilla-style budget of a GPT: ``tokens_per_param · P`` tokens rounded up to whole
    steps of ``batch_size · T`` tokens (:func:`train_tokens`), and its ``6·P·D`` FLOPs."""
    params = param_count(cfg)
    tokens = train_tokens(params, tokens_per_param, batch_size * cfg.context)
    return Budget(params, tokens, tokens // (batch_size * cfg.context), batch_size, train_flops(params, tokens))


def compute_ratio(ref_params: int, proxy_params: int, ref_tokens: int | None = None,
                  proxy_tokens: int | None = None, tokens_per_param: float = 20.0) -> float:
    """Compute gap ``C_ref / C_proxy``; tokens default to ``tokens_per_param · P`` (unrounded),
    which makes the gap ``(P_ref / P_proxy)²``."""
    d_ref = ref_tokens if ref_tokens is not None else tokens_per_param * ref_params
    d_proxy = proxy_tokens if proxy_tokens is not None else tokens_per_param * proxy_params
    return train_flops(ref_params, d_ref) / train_flops(proxy_params, d_proxy)

"""Training settings, the learning-rate schedule, gradient clipping and AdamW.

AdamW is written out here (rather than ``torch.optim.AdamW``) because every operation is
elementwise, so the same code updates one model or K models whose parameters are stacked along
a leading axis (batched training), and its state is a flat dict of tensors that goes straight
into safetensors. The update is PyTorch's AdamW: decoupled weight decay ``p ← p·(1 − lr·wd)``
with the *scheduled* lr, then the bias-corrected Adam step.

Weight decay follows nanoGPT: every parameter with two or more dimensions (linear weights and
the embeddings, including the tied output layer) is decayed; biases and LayerNorm are not.
Under μP, hidden matrices get lr/width_mult (the decay, being lr·wd, scales with it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:  # torch is imported inside the functions, so TrainConfig loads without it
    import torch
    from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and bookkeeping settings of one training run.

    Defaults follow the paper (LR 6e-4, wd 4e-4, the same at every size) and MPT/llm-foundry
    (betas (0.9, 0.95), cosine decay to 10 %). ``warmup_frac`` of the steps warm up linearly.
    ``precision='auto'`` is bf16 autocast on CUDA; on CPU it is measured at
    the start of a run (``calibrate.choose_precision``) and recorded in ``train.json``. ``checkpoint_every`` is in
    optimiser steps (0: no periodic checkpoints). ``snapshot_steps`` lists steps after which
    model-only weights are kept (e.g. for attribution ensembles).
    ``micro_batch_size`` splits each optimiser step's batch into passes whose gradients are
    accumulated (SPEC §10); ``activation_checkpointing`` trades recomputation for memory.
    """

    lr: float = 6e-4
    weight_decay: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_frac: float = 0.02
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    batch_size: int = 32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    compile: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    snapshot_steps: tuple[int, ...] = ()
    # rows per forward/backward pass (0: the whole batch at once); left out of hashes at default
    micro_batch_size: int = field(default=0, metadata={"omit_default": True})
    activation_checkpointing: bool = field(default=False, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ConfigError("TrainConfig: weight_decay and grad_clip must be >= 0 and eps > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"TrainConfig.betas must lie in [0, 1), got {self.betas}")
        if not 0.0 <= self.warmup_frac < 1.0 or not 0.0 <= self.min_lr_frac <= 1.0:
            raise ConfigError("TrainConfig: warmup_frac must be in [0, 1) and min_lr_frac in [0, 1]")
        if self.batch_size < 1 or self.log_every < 1 or self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("TrainConfig: batch_size, log_every, keep_checkpoints must be >= 1 and "
                              "checkpoint_every >= 0")
        if self.micro_batch_size < 0 or (self.micro_batch_size and self.batch_size % self.micro_batch_size):
            raise ConfigError(f"TrainConfig.micro_batch_size must be 0 (whole batch) or divide batch_size "
                              f"{self.batch_size}; got {self.micro_batch_size}")


def lr_at(cfg: TrainConfig, step: int, n_steps: int) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up over ``round(warmup_frac·n_steps)``
    steps reaching the peak at the last warm-up step, then the chosen decay from the peak to
    ``min_lr_frac·lr`` at the final step."""
    warmup = round(cfg.warmup_frac * n_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warmup) / max(1, n_steps - 1 - warmup)  # 0 → 1 over the decay
    low = cfg.min_lr_frac * cfg.lr
    if cfg.schedule == "linear":
        return cfg.lr - (cfg.lr - low) * progress
    return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"TrainConfig.device: {e}; use 'auto', 'cpu' or 'cuda[:i]'") from e


def clip_grad_norms(grads: list[torch.Tensor], max_norm: float, batch_dims: int = 0) -> torch.Tensor:
    """Scale gradients in place so each model's global L2 norm is at most ``max_norm``.

    With ``batch_dims=1`` the leading axis indexes K stacked models and each is clipped on its
    own. Returns the pre-clipping norms (shape of the batch axes). ``max_norm=0`` only measures.
    """
    import torch

    if batch_dims == 0:
        norms = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())  # fused per-tensor norms
    else:
        sq = [g.float().pow(2).flatten(batch_dims).sum(-1) for g in grads]  # each (K,)
        norms = torch.stack(sq).sum(0).sqrt()
    if max_norm > 0:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.reshape(coef.shape + (1,) * (g.ndim - batch_dims)).to(g.dtype))
    return norms


def param_settings(model: nn.Module) -> dict[str, tuple[float, bool]]:
    """``name -> (lr multiplier, decayed?)`` for every parameter of ``model`` (see module doc)."""
    kinds = model.param_kinds() if hasattr(model, "param_kinds") else {}
    width_mult = getattr(getattr(model, "cfg", None), "width_mult", 1.0)
    out = {}
    for name, p in model.named_parameters():
        mult = 1.0 / width_mult if kinds.get(name) == "hidden" else 1.0
        out[name] = (mult, p.ndim >= 2)
    return out


def _fusable(ps: list) -> bool:
    """torch's fused AdamW kernel (CPU and CUDA, float tensors on one device) computes the same
    update as the foreach path below, in one pass per tensor."""
    import torch

    return (hasattr(torch, "_fused_adamw_") and all(p.device == ps[0].device and p.dtype in (
        torch.float32, torch.float64) for p in ps) and ps[0].device.type in ("cpu", "cuda"))


class AdamW:
    """AdamW over a dict of named tensors (single or stacked); gradients are read from ``.grad``."""

    def __init__(self, params: dict[str, torch.Tensor], settings: dict[str, tuple[float, bool]],
                 cfg: TrainConfig) -> None:
        import torch

        self.params = params
        self.cfg = cfg
        self.step_count = 0
        self.exp_avg = {n: torch.zeros_like(p, memory_format=torch.preserve_format) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p, memory_format=torch.preserve_format) for n, p in params.items()}
        groups: dict[tuple[float, bool], list[str]] = {}
        for n in params:
            groups.setdefault(settings[n], []).append(n)
        self.groups = sorted(groups.items())

    def step(self, lr: float) -> None:
        """One update at learning rate ``lr`` (μP multipliers applied per group)."""
        import torch

        with torch.no_grad():
            self._update(torch, lr)

    def _update(self, torch, lr: float) -> None:  # noqa: ANN001 - the torch module, imported lazily
        self.step_count += 1
        b1, b2 = self.cfg.betas
        c1 = 1.0 - b1 ** self.step_count
        c2 = 1.0 - b2 ** self.step_count
        for (mult, decay), names in self.groups:
            ps = [self.params[n] for n in names]
            gs = [self.params[n].grad for n in names]
            ms = [self.exp_avg[n] for n in names]
            vs = [self.exp_avg_sq[n] for n in names]
            group_lr = lr * mult
            if _fusable(ps):  # one pass over each tensor instead of seven
                step = [torch.tensor(float(self.step_count), device=ps[0].device)] * len(ps)
                torch._fused_adamw_(ps, gs, ms, vs, [], step, lr=group_lr, beta1=b1, beta2=b2,
                                    weight_decay=self.cfg.weight_decay if decay else 0.0, eps=self.cfg.eps,
                                    amsgrad=False, maximize=False)
                continue
            if decay and self.cfg.weight_decay > 0:
                torch._foreach_mul_(ps, 1.0 - group_lr * self.cfg.weight_decay)
            torch._foreach_lerp_(ms, gs, 1.0 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, 1.0 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(c2))
            torch._foreach_add_(denom, self.cfg.eps)
            torch._foreach_addcdiv_(ps, ms, denom, -group_lr / c1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Moments as a flat dict (``exp_avg.<name>``, ``exp_avg_sq.<name>``) for safetensors."""
        out = {f"exp_avg.{n}": t for n, t in self.exp_avg.items()}
        out.update({f"exp_avg_sq.{n}": t for n, t in self.exp_avg_sq.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step_count: int) -> None:
        """Restore moments saved by :meth:`state_tensors` and the step counter."""
        for n in self.params:
            self.exp_avg[n].copy_(tensors[f"exp_avg.{n}"])  # moments are not leaves of any graph
            self.exp_avg_sq[n].copy_(tensors[f"exp_avg_sq.{n}"])
        self.step_count = int(step_count)

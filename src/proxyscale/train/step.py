"""One training step of one model (shared by the training loop and the run-start calibration)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .optim import AdamW, clip_grad_norms


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32; logits (..., V), targets (...)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], opt: AdamW, batch: torch.Tensor, lr: float,
               grad_clip: float, amp: torch.dtype | None) -> torch.Tensor:
    """Forward, backward, clip, AdamW update on one batch (B, T+1); returns the detached loss."""
    x, y = batch[:, :-1], batch[:, 1:]  # (B, T) each
    with torch.autocast(batch.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = forward(x)  # (B, T, V)
    loss = lm_loss(logits, y)
    loss.backward()
    params = list(opt.params.values())
    clip_grad_norms([p.grad for p in params], grad_clip)
    opt.step(lr)
    for p in params:
        p.grad = None
    return loss.detach()

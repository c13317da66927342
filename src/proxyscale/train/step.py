"""One training step of one model (shared by the training loop and the run-start calibration)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

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



def backward_passes(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, amp: torch.dtype | None,
                    micro: int, global_rows: int, ranks: int = 1,
                    no_sync: Callable[[], ContextManager] | None = None) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of the global batch's mean loss from this rank's
    rows ``batch`` ((b, T+1)), in passes of ``micro`` rows (SPEC §10).

    Each pass's mean loss is scaled by ``micro / global_rows`` before backward, times ``ranks``
    because DistributedDataParallel averages the ranks' gradients; ``no_sync`` (DDP's) keeps
    every pass but the last from all-reducing. Returns this rank's share of the global mean
    loss (the sum over ranks is the global batch's mean), detached."""
    x, y = batch[:, :-1], batch[:, 1:]
    n = x.shape[0] // micro
    weight = micro / global_rows
    parts = []
    for j in range(n):
        rows = slice(j * micro, (j + 1) * micro)
        with no_sync() if no_sync is not None and j < n - 1 else nullcontext():
            with torch.autocast(batch.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = forward(x[rows])
            loss = lm_loss(logits, y[rows])
            (loss * (weight * ranks)).backward()
        parts.append(loss.detach() * weight)
    return torch.stack(parts).sum()


def accumulate_step(forward: Callable[[torch.Tensor], torch.Tensor], opt: AdamW, batch: torch.Tensor, lr: float,
                    grad_clip: float, amp: torch.dtype | None, micro: int, global_rows: int, ranks: int = 1,
                    no_sync: Callable[[], ContextManager] | None = None) -> torch.Tensor:
    """One optimiser step from micro-batch passes (:func:`backward_passes`): clip and AdamW
    once. Returns this rank's share of the global mean loss, detached."""
    loss = backward_passes(forward, batch, amp, micro, global_rows, ranks, no_sync)
    params = list(opt.params.values())
    clip_grad_norms([p.grad for p in params], grad_clip)
    opt.step(lr)
    for p in params:
        p.grad = None
    return loss

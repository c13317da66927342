"""Per-example losses of a language model on a test set (see :mod:`proxyscale.data.testset`).

Every candidate of every example is scored in right-padded batches: the causal mask means
padding after a sequence never changes the logits of its real tokens, so batching is exact.
Examples are grouped by length to waste little compute on padding; the output keeps the test
set's order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data.testset import Example, TestSet, padded_batch
from ..errors import ConfigError, DataError

COLUMNS = ("example_id", "n_pred_tokens", "loss_sum", "loss", "correct")


def _batches(examples: tuple[Example, ...], batch_size: int) -> list[list[int]]:
    """Example indices grouped (longest first) so a batch holds at most ``batch_size`` sequences
    (an example with more candidates than that gets a batch of its own)."""
    order = sorted(range(len(examples)), key=lambda i: -max(len(c) for c in examples[i].candidates))
    out: list[list[int]] = [[]]
    rows = 0
    for i in order:
        n = len(examples[i].candidates)
        if out[-1] and rows + n > batch_size:
            out.append([])
            rows = 0
        out[-1].append(i)
        rows += n
    return out


@torch.no_grad()
def sequence_losses(model: nn.Module, tokens: np.ndarray, mask: np.ndarray,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token loss over masked targets and the number of them, per row.

    tokens (N, L) int64; mask (N, L-1) marks the targets ``tokens[:, 1:]`` that count.
    Returns (loss_sum (N,) float64, n_pred (N,) int64). Computed in fp32.
    """
    x = torch.from_numpy(tokens).to(device)
    m = torch.from_numpy(mask).to(device)  # (N, L-1)
    logits = model(x[:, :-1]).float()  # (N, L-1, V)
    n, t, v = logits.shape
    # over (N·(L-1), V) rows: the class-dim-second form (N, V, L-1) reads the logits strided and
    # costs 3-7x more on CPU (benchmarks/bench_eval_loss.py)
    nll = F.cross_entropy(logits.reshape(n * t, v), x[:, 1:].reshape(n * t), reduction="none").view(n, t)
    loss_sum = (nll * m).sum(dim=1)
    return loss_sum.double().cpu().numpy(), m.sum(dim=1).long().cpu().numpy()


def evaluate_lm(model: nn.Module, test_set: TestSet, batch_size: int = 32,
                device: str | torch.device | None = None) -> pd.DataFrame:
    """Per-example loss table for ``test_set``, one row per example, in test-set order.

    Columns: ``example_id``; ``n_pred_tokens`` and ``loss_sum`` (summed next-token cross-entropy,
    nats) over the predicted tokens of the correct candidate; ``loss = loss_sum / n_pred_tokens``;
    ``correct``: for examples with several candidates, 1.0 if the correct one has the lowest mean
    per-token loss (ties count as wrong unless the label is the first of the tied) else 0.0; NaN
    for single-candidate examples. ``device`` defaults to the model's.
    """
    if batch_size < 1:
        raise ConfigError(f"evaluate_lm: batch_size must be >= 1, got {batch_size}")
    if len(test_set) == 0:
        raise DataError(f"test set '{test_set.name}' is empty; nothing to evaluate")
    context = getattr(getattr(model, "cfg", None), "context", None)
    if context is not None and test_set.max_len() - 1 > context:
        raise DataError(f"test set '{test_set.name}' has sequences of {test_set.max_len()} tokens but the model "
                        f"reads at most {context} (+1 target); rebuild the test set with max length <= {context + 1}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    ex = test_set.examples
    n_pred = np.zeros(len(ex), dtype=np.int64)
    loss_sum = np.zeros(len(ex), dtype=np.float64)
    correct = np.full(len(ex), np.nan)
    try:
        for idx in _batches(ex, batch_size):
            tokens, mask, e_idx, c_idx = padded_batch([ex[i] for i in idx])
            ls, npred = sequence_losses(model, tokens, mask, dev)
            _collect(ex, idx, ls, npred, e_idx, c_idx, n_pred, loss_sum, correct)
    finally:
        model.train(was_training)
    return pd.DataFrame({"example_id": [e.example_id for e in ex], "n_pred_tokens": n_pred,
                         "loss_sum": loss_sum, "loss": loss_sum / n_pred, "correct": correct})


def _collect(ex: tuple[Example, ...], idx: list[int], ls: np.ndarray, npred: np.ndarray, e_idx: np.ndarray,
             c_idx: np.ndarray, n_pred: np.ndarray, loss_sum: np.ndarray, correct: np.ndarray) -> None:
    """Scatter per-candidate results of one batch into the per-example arrays."""
    for j, i in enumerate(idx):
        rows = np.flatnonzero(e_idx == j)
        cands = c_idx[rows]
        lab = ex[i].label
        r = rows[cands == lab][0]
        n_pred[i], loss_sum[i] = npred[r], ls[r]
        if len(rows) > 1:
            means = ls[rows] / npred[rows]
            correct[i] = float(cands[int(np.argmin(means))] == lab)

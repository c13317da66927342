"""Is a document DsDm selection worth its cost? Two measured answers for its user.

- **Did the proxies learn anything?** Their mean next-token loss on the target's tokens, against
  a unigram model of the pool's tokens (add-one smoothed) on the same tokens. Proxies that do not
  beat unigram predict the target no better than token frequencies, so their TRAK scores carry
  little beyond frequency: make them larger (``d_model``) or train them on more tokens.
- **Did it choose differently from chance?** The overlap of the selection with the random
  selection of the same size and seed (what ``--method random`` picks), against the overlap
  expected by chance, n²/N.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .progress import note, warn


def target_mask(windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T) bool: which next-token predictions of windows (N, T+1) are real tokens (not padding)."""
    positions = np.arange(windows.shape[1] - 1)[None, :]
    return positions + 1 < np.asarray(lengths)[:, None]


def model_loss(model: Any, windows: np.ndarray, lengths: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats/token) of a GPT over the real tokens of ``windows``."""
    import torch
    import torch.nn.functional as F

    mask = target_mask(windows, lengths)
    total, count = 0.0, int(mask.sum())
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            w = torch.from_numpy(np.asarray(windows[i:i + batch_size], dtype=np.int64))
            logits = model(w[:, :-1]).float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="none")
            total += float((nll.reshape(w.shape[0], -1) * torch.from_numpy(mask[i:i + batch_size])).sum())
    return total / max(count, 1)


def unigram_loss(pool_windows: np.ndarray, pool_lengths: np.ndarray, windows: np.ndarray, lengths: np.ndarray,
                 vocab_size: int, block: int = 4096) -> float:
    """Cross-entropy (nats/token) on the real next tokens of ``windows`` of the add-one smoothed
    unigram distribution of the pool windows' real tokens (read in blocks: the pool may be a memmap)."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for i in range(0, len(pool_windows), block):
        w = np.asarray(pool_windows[i:i + block], dtype=np.int64)
        m = target_mask(w, pool_lengths[i:i + block])
        counts += np.bincount(w[:, 1:][m], minlength=vocab_size)[:vocab_size]
    logp = np.log((counts + 1.0) / (counts.sum() + vocab_size))
    tokens = np.asarray(windows, dtype=np.int64)[:, 1:][target_mask(windows, lengths)]
    return float(-logp[tokens].mean()) if len(tokens) else float("nan")


def report_proxies(losses: Sequence[float], unigram: float) -> None:
    """Record the proxies' target loss and unigram's; warn when the proxies do not beat unigram."""
    mean = float(np.mean(losses))
    note("proxy_target_loss", {"proxies": [round(x, 4) for x in losses], "mean": round(mean, 4),
                               "unigram": round(unigram, 4)},
         f"dsdm: the proxies' loss on the target is {mean:.3f} nats/token; a unigram model of the pool gets "
         f"{unigram:.3f}")
    if not mean < unigram:
        warn(f"dsdm: the proxies ({mean:.3f} nats/token on the target) do not beat a unigram model ({unigram:.3f}): "
             "they learned too little for their scores to mean much; use larger proxies (--set d_model=64) or more "
             "tokens (--set tokens_per_param=40, or a larger pool)")


def report_overlap(ids: Sequence[str], chosen: np.ndarray, seed: int) -> dict[str, float]:
    """The overlap of ``chosen`` with ``--method random``'s selection of the same size and seed."""
    from .rand import random_pick

    n, total = len(chosen), len(ids)
    shared = len(set(np.asarray(chosen).tolist()) & set(random_pick(ids, n, seed).tolist()))
    chance = n * n / total
    out = {"n": n, "shared_with_random": shared, "expected_by_chance": round(chance, 2)}
    note("random_overlap", out, f"dsdm: the selection shares {shared:,} of its {n:,} documents with a random "
                                f"selection of the same size (chance alone: {chance:,.1f})")
    return out

"""Count n-gram language models: zero-compute proxies for the small-to-large question.

If a unigram or bigram fitted on each training distribution predicts the reference's losses as
well as a trained proxy, the proxy has shown nothing beyond token statistics (SPEC §4).

Smoothing: interpolated Kneser–Ney with one absolute discount D_k per order k.

    p_k(w | h) = max(c_k(h, w) − D_k, 0) / c_k(h)  +  D_k · N1+(h ·) / c_k(h) · p_{k−1}(w | h')

where h' drops the oldest token of h, c_k(h) = Σ_w c_k(h, w) and N1+(h ·) is the number of
distinct w seen after h. If h was never seen, p_k(w | h) = p_{k−1}(w | h'). The base case
p_0(w) = 1 / V is uniform over the vocabulary, so every level sums to exactly 1 over the V
tokens (each count is ≥ 1 > D_k, so the discounted mass is exactly D_k·N1+(h ·)/c_k(h)).
The highest order counts tokens; lower orders count *continuations* (how many distinct
tokens precede the k-gram), the Kneser–Ney choice. A unigram model uses raw counts.
D_k defaults to the Ney estimate n1 / (n1 + 2·n2) from the count-of-counts, clipped to
[0.05, 0.95]. Each document is left-padded with order−1 BOS symbols (id V, context only),
so n-grams never cross documents and the first tokens still have a full-length context.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.testset import TestSet
from ..errors import DataError
from ..store import atomic_path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NGramLevel:
    """Counts of one order k: sorted k-gram keys and per-context totals (all int64)."""

    keys: np.ndarray          # (G,) sorted keys of k-grams seen
    counts: np.ndarray        # (G,) count (or continuation count) of each
    ctx_keys: np.ndarray      # (H,) sorted keys of contexts (k−1 tokens)
    ctx_totals: np.ndarray    # (H,) c_k(h)
    ctx_types: np.ndarray     # (H,) N1+(h ·)
    discount: float


@dataclass(frozen=True)
class NGramModel:
    """An interpolated Kneser–Ney model; ``levels[k-1]`` holds order k."""

    order: int
    vocab_size: int
    levels: tuple[NGramLevel, ...]
    n_tokens: int

    @property
    def base(self) -> int:
        """Radix of the combined keys (vocabulary plus the BOS symbol)."""
        return self.vocab_size + 1

    @property
    def params(self) -> int:
        """Reported as 0: the model is counts, not trained parameters."""
        return 0

    @property
    def flops(self) -> float:
        return 0.0


def _windows(docs: Sequence[np.ndarray], order: int, vocab_size: int) -> np.ndarray:
    """All length-``order`` windows (N, order) of BOS-padded documents (int64)."""
    bos = vocab_size
    out = []
    for d in docs:
        d = np.asarray(d, dtype=np.int64).ravel()
        if d.size == 0:
            continue
        if d.min() < 0 or d.max() >= vocab_size:
            raise DataError(f"token ids must be in [0, {vocab_size}); got {d.min()}..{d.max()} — check vocab_size")
        p = np.concatenate([np.full(order - 1, bos, dtype=np.int64), d])
        out.append(np.lib.stride_tricks.sliding_window_view(p, order))
    if not out:
        raise DataError("no tokens to fit an n-gram model on; give it non-empty documents")
    return np.concatenate(out)


def _combine(win: np.ndarray, base: int) -> np.ndarray:
    """Key of each row of token windows (N, k): Σ tokens · base^position, oldest most significant."""
    key = np.zeros(len(win), dtype=np.int64)
    for c in range(win.shape[1]):
        key = key * base + win[:, c]
    return key


def _count(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and their counts: bincount when the key space is small, else a sort."""
    if n_keys <= 1 << 24:
        c = np.bincount(keys, minlength=n_keys)
        nz = np.flatnonzero(c)
        return nz.astype(np.int64), c[nz].astype(np.int64)
    return np.unique(keys, return_counts=True)


def _ney_discount(counts: np.ndarray) -> float:
    n1 = np.count_nonzero(counts == 1)
    n2 = np.count_nonzero(counts == 2)
    if n1 == 0:
        return 0.5
    return float(np.clip(n1 / (n1 + 2 * n2), 0.05, 0.95))


def _level(keys: np.ndarray, counts: np.ndarray, base: int, discount: float | None) -> NGramLevel:
    ctx = keys // base  # sorted keys ⇒ sorted contexts
    ctx_keys, start = np.unique(ctx, return_index=True)
    totals = np.add.reduceat(counts, start) if len(counts) else counts
    types = np.diff(np.r_[start, len(keys)])
    d = _ney_discount(counts) if discount is None else float(discount)
    if not 0 < d < 1:
        raise DataError(f"n-gram discount must be in (0, 1), got {d}")
    return NGramLevel(keys, counts.astype(np.int64), ctx_keys, totals.astype(np.int64), types.astype(np.int64), d)


def fit_ngram(token_arrays: Sequence[np.ndarray], order: int, vocab_size: int, *,
              discount: float | None = None) -> NGramModel:
    """Count an order-1/2/3 model over documents (no n-gram crosses a document boundary).

    ``discount`` fixes D_k for every order; ``None`` estimates each from the counts.
    """
    if order not in (1, 2, 3):
        raise DataError(f"n-gram order must be 1, 2 or 3, got {order}")
    if vocab_size < 1 or (vocab_size + 1) ** order >= 2**62:
        raise DataError(f"vocab_size {vocab_size} does not fit int64 keys at order {order}")
    base = vocab_size + 1
    win = _windows(token_arrays, order, vocab_size)  # (N, order)
    top_keys, top_counts = _count(_combine(win, base), base**order)
    levels = [_level(top_keys, top_counts, base, discount)]
    # Continuation counts: each distinct (k+1)-gram adds one to the k-gram it ends with.
    keys = top_keys
    for k in range(order - 1, 0, -1):
        keys, cont = np.unique(keys % base**k, return_counts=True)
        levels.append(_level(keys, cont, base, discount))
    return NGramModel(order, vocab_size, tuple(reversed(levels)), int(len(win)))


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == query, values[pos], 0)


def prob(model: NGramModel, windows: np.ndarray) -> np.ndarray:
    """p(w | h) for rows (N, order) of [history..., w] (history may contain BOS = V)."""
    windows = np.asarray(windows, dtype=np.int64)
    p = np.full(len(windows), 1.0 / model.vocab_size)
    for k, lev in enumerate(model.levels, start=1):
        sub = windows[:, model.order - k:]  # the last k tokens: (h_k, w)
        key = _combine(sub, model.base)
        ctx = key // model.base
        tot = _lookup(lev.ctx_keys, lev.ctx_totals, ctx).astype(np.float64)
        typ = _lookup(lev.ctx_keys, lev.ctx_types, ctx).astype(np.float64)
        cnt = _lookup(lev.keys, lev.counts, key).astype(np.float64)
        seen = tot > 0
        safe = np.where(seen, tot, 1.0)
        interp = np.maximum(cnt - lev.discount, 0.0) / safe + lev.discount * typ / safe * p
        p = np.where(seen, interp, p)
    return p


def _candidate_windows(model: NGramModel, tokens: Sequence[int], start: int) -> np.ndarray:
    """Windows (n_pred, order) predicting tokens[start:] from BOS-padded history."""
    t = np.asarray(tokens, dtype=np.int64)
    if t.min() < 0 or t.max() >= model.vocab_size:
        raise DataError(f"test tokens must be in [0, {model.vocab_size}); the test set uses another vocabulary")
    p = np.concatenate([np.full(model.order - 1, model.base - 1, dtype=np.int64), t])
    win = np.lib.stride_tricks.sliding_window_view(p, model.order)  # row i predicts t[i]
    return win[start:]


def score_test_set(model: NGramModel, test_set: TestSet) -> pd.DataFrame:
    """Per-example losses in nats, with the columns an LM evaluator writes.

    example_id, n_pred_tokens, loss_sum, loss (mean per predicted token of the correct
    candidate), correct (1/0 for multi-candidate examples: does the correct candidate have the
    lowest mean per-token loss; NaN when there is only one candidate).
    """
    wins, owner = [], []
    cand_rows = []  # (example index, candidate index) per candidate
    for i, ex in enumerate(test_set.examples):
        for j, (c, s) in enumerate(zip(ex.candidates, ex.pred_start)):
            w = _candidate_windows(model, c, s)
            wins.append(w)
            owner.append(np.full(len(w), len(cand_rows)))
            cand_rows.append((i, j))
    if not wins:
        raise DataError(f"test set '{test_set.name}' has no examples to score")
    nll = -np.log(prob(model, np.concatenate(wins)))
    owner_a = np.concatenate(owner)
    cand_sum = np.bincount(owner_a, weights=nll, minlength=len(cand_rows))
    cand_n = np.bincount(owner_a, minlength=len(cand_rows))
    rows, c = [], 0
    for ex in test_set.examples:
        k = len(ex.candidates)
        means = cand_sum[c:c + k] / cand_n[c:c + k]
        lab = c + ex.label
        correct = float(int(np.argmin(means)) == ex.label) if k > 1 else np.nan
        rows.append((ex.example_id, int(cand_n[lab]), float(cand_sum[lab]), float(means[ex.label]), correct))
        c += k
    return pd.DataFrame(rows, columns=["example_id", "n_pred_tokens", "loss_sum", "loss", "correct"])


def save_ngram(model: NGramModel, path: str | Path) -> None:
    """Write the counts as one .npz of plain int64/float64 arrays (no pickles)."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.array([FORMAT_VERSION, model.order, model.vocab_size, model.n_tokens], dtype=np.int64)}
    for k, lev in enumerate(model.levels, start=1):
        for f in ("keys", "counts", "ctx_keys", "ctx_totals", "ctx_types"):
            arrays[f"{f}_{k}"] = getattr(lev, f)
        arrays[f"discount_{k}"] = np.array([lev.discount])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_ngram(path: str | Path) -> NGramModel:
    """Read a model written by :func:`save_ngram`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: n-gram file is missing; refit it with fit_ngram")
    with np.load(p, allow_pickle=False) as z:
        version, order, vocab, n_tok = (int(v) for v in z["meta"])
        if version != FORMAT_VERSION:
            raise DataError(f"{p}: n-gram format {version}, expected {FORMAT_VERSION}; refit it")
        levels = tuple(NGramLevel(z[f"keys_{k}"], z[f"counts_{k}"], z[f"ctx_keys_{k}"], z[f"ctx_totals_{k}"],
                                  z[f"ctx_types_{k}"], float(z[f"discount_{k}"][0])) for k in range(1, order + 1))
    return NGramModel(order, vocab, levels, n_tok)

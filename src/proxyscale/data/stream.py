"""Training streams: packed, mixed, randomly addressable sequences of token windows.

A training distribution is a list of :class:`Component` (a token shard, a mixture weight and
optionally a subset of the shard's documents). Each component is an endless *packed stream*:
its documents, each followed by the end-of-text token, in a fresh shuffled order every epoch
(so a source smaller than its share repeats, reshuffled). Streams are cut into windows of
``context + 1`` tokens with stride ``context`` (consecutive windows share one token, so every
token is a prediction target exactly once).

Mixing is by windows, hence by tokens. Windows are grouped in blocks of ``block`` windows;
each block gives component c ``n_c`` windows with ``E[n_c] = block * weight_c`` exactly
(systematic rounding with a random offset per block) in a random order within the block.
Everything is derived from ``seed`` by hashing (block index, component index, epoch), so
``batch(i)`` costs O(batch + documents of one epoch) no matter how large i is, and memory
holds per-document arrays only (never the token budget).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..seeding import np_rng
from ..store import write_npy
from .shards import TokenShard


@dataclass(frozen=True, eq=False)
class Component:
    """One part of a training distribution: a shard, its weight, an optional document subset."""

    shard: TokenShard
    weight: float = 1.0
    docs: Optional[np.ndarray] = None  # (n,) int64 indices into the shard; None = every document
    name: str = ""


class _Packed:
    """One component's endless packed stream (documents + EOS, reshuffled every epoch)."""

    def __init__(self, comp: Component, index: int, eos_id: int, seed: int) -> None:
        n = comp.shard.n_docs
        docs = np.arange(n, dtype=np.int64) if comp.docs is None else np.asarray(comp.docs, dtype=np.int64).ravel()
        if docs.size == 0:
            raise ConfigError(f"component {comp.name or index} has an empty document subset")
        if docs.min() < 0 or docs.max() >= n:
            raise ConfigError(f"component {comp.name or index}: document index out of range for a shard of {n}")
        self.shard, self.docs, self.index, self.eos, self.seed = comp.shard, docs, index, eos_id, seed
        self.span = comp.shard.lengths[docs] + 1  # (n,) tokens per document with its EOS
        self.epoch_tokens = int(self.span.sum())
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions into ``docs`` in epoch order, cumulative end offset of each)."""
        if e not in self._cache:
            perm = np_rng(self.seed, "stream-epoch", self.index, e).permutation(self.docs.size)
            self._cache[e] = (perm, np.cumsum(self.span[perm]))
            if len(self._cache) > 3:
                self._cache.popitem(last=False)
        return self._cache[e]

    def read(self, start: int, n: int) -> np.ndarray:
        """Stream tokens [start, start + n) as int64."""
        out = np.empty(n, dtype=np.int64)
        filled, t = 0, start
        while filled < n:
            e, o = divmod(t, self.epoch_tokens)
            perm, ends = self.epoch(e)
            j = int(np.searchsorted(ends, o, side="right"))
            doc = int(self.docs[perm[j]])
            within = o - (int(ends[j]) - int(self.span[perm[j]]))
            toks = self.shard.doc(doc)
            take = min(n - filled, toks.size + 1 - within)
            body = toks[within: within + take]
            out[filled: filled + body.size] = body
            if body.size < take:  # the document's end-of-text token
                out[filled + body.size] = self.eos
            filled += take
            t += take
        return out


class TrainStream:
    """``batch(i, batch_size)`` -> (batch_size, context + 1) int64: the i-th batch of the stream."""

    def __init__(self, components: Sequence[Component | tuple], context: int, eos_id: int, seed: int,
                 *, block: int = 1024) -> None:
        """``components``: Component objects or ``(shard, weight[, docs[, name]])`` tuples."""
        if not components:
            raise ConfigError("a training stream needs at least one component")
        components = [c if isinstance(c, Component) else Component(*c) for c in components]
        if context < 1 or block < 1:
            raise ConfigError(f"context and block must be positive, got {context}, {block}")
        w = np.array([c.weight for c in components], dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ConfigError(f"mixture weights must be positive and finite, got {w.tolist()}")
        self.components = components
        self.context, self.eos_id, self.seed, self.block = int(context), int(eos_id), int(seed), int(block)
        self.weights = w / w.sum()
        self._cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        self._cum[-1] = 1.0  # exact, so every block's quotas add up to `block`
        self._packed = [_Packed(c, k, eos_id, seed) for k, c in enumerate(components)]
        self._prior = np.zeros((1, len(components)), dtype=np.int64)  # (blocks+1, C) windows before block b
        self._layouts: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # --------------------------------------------------------------- block bookkeeping
    def _quota(self, b: int) -> np.ndarray:
        u = np_rng(self.seed, "stream-quota", b).random()
        return np.diff(np.floor(self.block * self._cum + u).astype(np.int64))

    def _prior_counts(self, b: int) -> np.ndarray:
        """(C,) windows each component received in blocks [0, b)."""
        have = self._prior.shape[0] - 1
        if b > have:
            quotas = np.stack([self._quota(k) for k in range(have, b)])  # (b - have, C)
            self._prior = np.vstack([self._prior, self._prior[-1] + np.cumsum(quotas, axis=0)])
        return self._prior[b]

    def _layout(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(component of each window in block b, its rank among that component's windows)."""
        if b not in self._layouts:
            slots = np.repeat(np.arange(len(self._packed)), self._quota(b))  # (block,)
            comp = np_rng(self.seed, "stream-mix", b).permutation(slots)
            rank = np.empty_like(comp)
            for c in range(len(self._packed)):
                idx = np.flatnonzero(comp == c)
                rank[idx] = np.arange(idx.size)
            self._layouts[b] = (comp, rank)
            if len(self._layouts) > 4:
                self._layouts.popitem(last=False)
        return self._layouts[b]

    def window_source(self, w: int) -> tuple[int, int]:
        """(component, component-local window index) of global window ``w``."""
        b, j = divmod(int(w), self.block)
        comp, rank = self._layout(b)
        c = int(comp[j])
        return c, int(self._prior_counts(b)[c] + rank[j])

    # --------------------------------------------------------------- public API
    def window(self, w: int) -> np.ndarray:
        """Global window ``w``: (context + 1,) int64."""
        c, k = self.window_source(w)
        return self._packed[c].read(k * self.context, self.context + 1)

    def batch(self, i: int, batch_size: int) -> np.ndarray:
        """The i-th batch: windows [i * batch_size, (i + 1) * batch_size), (batch_size, context + 1) int64."""
        if i < 0 or batch_size < 1:
            raise ConfigError(f"batch index must be >= 0 and batch_size >= 1, got {i}, {batch_size}")
        return np.stack([self.window(w) for w in range(i * batch_size, (i + 1) * batch_size)])

    def windows_per_component(self, n_windows: int) -> np.ndarray:
        """(C,) windows each component supplies among the first ``n_windows``."""
        b, j = divmod(int(n_windows), self.block)
        counts = self._prior_counts(b).copy()
        if j:
            counts += np.bincount(self._layout(b)[0][:j], minlength=len(self._packed))
        return counts

    def document_order(self, n_batches: int, batch_size: int) -> np.ndarray:
        """(N, 3) int64 rows (component, epoch, shard document index): every document the first
        ``n_batches`` batches read from, per component in stream order."""
        rows = []
        for c, used in enumerate(self.windows_per_component(n_batches * batch_size)):
            if used == 0:
                continue
            p = self._packed[c]
            last = int(used) * self.context  # position of the last token read
            e_last, o_last = divmod(last, p.epoch_tokens)
            for e in range(e_last + 1):
                perm, ends = p.epoch(e)
                n = perm.size if e < e_last else int(np.searchsorted(ends, o_last, side="right")) + 1
                rows.append(np.stack([np.full(n, c), np.full(n, e), p.docs[perm[:n]]], axis=1))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), dtype=np.int64)

    def save_order(self, path: Path, n_batches: Optional[int] = None, batch_size: int = 1) -> None:
        """Write :meth:`document_order` as .npy (atomically), so a run's data order is on disk.

        Without ``n_batches`` it writes every component's first epoch (the order is fully
        determined by the seed, so later epochs can be recomputed from it and the seed).
        """
        if n_batches is None:
            rows = [np.stack([np.full(p.docs.size, c), np.zeros(p.docs.size, dtype=np.int64), p.docs[p.epoch(0)[0]]],
                             axis=1) for c, p in enumerate(self._packed)]
            write_npy(path, np.concatenate(rows).astype(np.int64))
        else:
            write_npy(path, self.document_order(n_batches, batch_size))

    def order_summary(self, n_batches: int, batch_size: int) -> dict:
        """A JSON-able record of the stream and of what ``n_batches`` batches consume."""
        used = self.windows_per_component(n_batches * batch_size)
        total = max(int(used.sum()), 1)
        comps = []
        for c, p in enumerate(self._packed):
            tokens = int(used[c]) * self.context
            comps.append({"name": self.components[c].name or f"component{c}", "shard": str(p.shard.path),
                          "weight": float(self.weights[c]), "n_docs": int(p.docs.size),
                          "epoch_tokens": p.epoch_tokens, "windows": int(used[c]), "tokens": tokens,
                          "token_fraction": int(used[c]) / total, "epochs": tokens / p.epoch_tokens})
        return {"seed": self.seed, "context": self.context, "eos_id": self.eos_id, "block": self.block,
                "n_batches": int(n_batches), "batch_size": int(batch_size), "components": comps}

r"""DSIR: data selection with importance resampling on hashed n-grams (Xie et al., 2023).

The numbers of ``data-selection`` 1.0.3 (``HashedNgramDSIR``; a test compares the two), faster.
Lower-cased ``wordpunct`` tokens (``\w+|[^\w\s]+``); n-grams of order 1..``ngrams`` go to bucket
``int(sha256(gram), 16) % B``. ``p_t``: bucket frequencies of all target text; ``p_r``: of pool
documents in order until more than ``raw_sample_cap`` *features* are counted (``"auto"``: the
package's 100,000 × B; it says tokens, but T tokens give 2T − 1 uni+bigrams). Log importance
weight: counts · (log(p_t + 1e-8) − log(p_r + 1e-8)); ``-inf`` under ``min_example_length`` tokens
(such documents still count in ``p_r``). Resampling: Gumbel top-k with the package's noise, or top-n.

Deliberate differences: tokens by the stdlib ``re`` (as nltk did for 1.0.3; nltk ≥ 3.10's ``regex``
engine differs on combining marks, superscripts and U+001C–U+001F); the raw cap takes a prefix of
the pool (the package splits it over ``num_proc`` shards, so its ``p_r`` depends on its cores).

**Design.** Hashing is the cost (the package runs sha256 on every n-gram occurrence, twice). A
worker here hashes each *distinct* n-gram once (:class:`NgramHasher`). Pass 1 hashes each batch,
totals ``p_r`` and keeps its *bucket stream* (``ngrams`` × tokens, uint16 ≈ 0.8 × the text; never
the (N, B) counts, 20 KB per document); pass 2 sums ``log_diff`` over each document's stream
(NumPy, ≈ 0.5–1 GB/s). Streams stay in RAM up to ``memory_mb``, then go to ``.npy`` files under
``work_dir`` (memory-mapped back), else are dropped and re-hashed in pass 2: bounded memory.
Batches of ``batch_chars`` characters run on joblib's reusable process pool (``workers``, ≤ 2 in
flight each) and come back in order, so no number depends on ``workers``.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import sys
import uuid
from dataclasses import asdict, dataclass
from functools import partial
from itertools import chain, islice, repeat
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from ..errors import ConfigError, DataError
from .base import SELECTORS, Pool, Selection, check_n, gumbel_top_n, segments, top_n
from .dsir_streams import Streams
from .progress import phase, pool_size, warn

# nltk's WordPunctTokenizer pattern; a possessive "\s*+" (3.11+) eats the gap before a token in the
# same match: the same tokens, ~30% faster than failing once per space.
WORDPUNCT = re.compile(r"\s*+(\w+|[^\w\s]+)" if sys.version_info >= (3, 11) else r"\w+|[^\w\s]+")
AUTO_CAP_PER_BUCKET = 100_000  # the package's num_tokens_to_fit="auto": 100,000 × num_buckets
Batch = tuple[list[str], list[str]]  # (ids, texts)
Featuriser = Callable[[Iterable[Batch]], Iterator[tuple[list[str], "Features"]]]


def tokenize(text: str) -> list[str]:
    """nltk's ``WordPunctTokenizer().tokenize(text.lower())``: runs of word / other non-space chars."""
    return WORDPUNCT.findall(text.lower())


def hash_buckets(grams: Sequence[str], num_buckets: int) -> np.ndarray:
    """The package's hash of each n-gram, (len(grams),) int64: the sha256 digest of its UTF-8 bytes
    as a big-endian integer (= ``int(hexdigest, 16)``), mod ``num_buckets``."""
    sha, num = hashlib.sha256, int.from_bytes  # local names: this loop is the hot one on cold memos
    return np.array([num(sha(g.encode("utf-8")).digest(), "big") % num_buckets for g in grams], dtype=np.int64)


class NgramHasher:
    """Unigram and bigram buckets, each distinct one hashed once per process: tokens get running
    numbers; a bigram is looked up by the integer ``a << 32 | b`` of its tokens' numbers, so a known
    one never becomes a string. Memos of a pure function, safe to keep across batches; emptied
    (between batches) when one holds ``max_size`` entries (≈ 100 B each), to bound memory."""

    def __init__(self, num_buckets: int, max_size: int = 1 << 20) -> None:
        self.num_buckets, self.max_size = num_buckets, max_size
        self.clear()

    def clear(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.uni = np.zeros(0, dtype=np.int64)  # (V,) bucket of each token number
        self.pairs: dict[int, int] = {}

    def token_ids(self, flat: list[str]) -> np.ndarray:
        """Numbers (L,) int64 of the tokens ``flat``: a batch's first call (it may empty the memos)."""
        if max(len(self.vocab), len(self.pairs)) >= self.max_size:
            self.clear()
        g = np.fromiter(map(self.vocab.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
        miss = np.flatnonzero(g < 0).tolist()
        if miss:
            missed = [flat[i] for i in miss]
            new = list(dict.fromkeys(missed))  # distinct, first-seen order
            self.vocab.update(zip(new, range(len(self.words), len(self.words) + len(new))))
            self.words.extend(new)
            self.uni = np.concatenate([self.uni, hash_buckets(new, self.num_buckets)])
            g[miss] = np.fromiter(map(self.vocab.__getitem__, missed), dtype=np.int64, count=len(miss))
        return g

    def pair_buckets(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Buckets (M,) of the bigrams "words[a] words[b]" for token numbers a, b (M,)."""
        codes, uniq = pd.factorize((a << 32) | b)  # (M,) codes of (U,) distinct bigrams
        keys = uniq.tolist()
        out = np.fromiter(map(self.pairs.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))  # (U,)
        miss = np.flatnonzero(out < 0).tolist()
        if miss:
            new, w, lo = [keys[i] for i in miss], self.words, 0xFFFFFFFF
            hashed = hash_buckets([w[k >> 32] + " " + w[k & lo] for k in new], self.num_buckets)
            self.pairs.update(zip(new, hashed.tolist()))
            out[miss] = hashed
        return out[codes]

@dataclass(frozen=True)
class Features:
    """A featurised batch, its documents' tokens concatenated: ``stream[k, i]`` is the bucket of the
    (k+1)-gram starting at token i (``num_buckets`` where it would leave its document, or cross a
    :data:`~proxyscale.select.base.DOC_BREAK` inside one)."""

    n_tokens: np.ndarray  # (D,) int64
    stream: np.ndarray  # (ngrams, L) uint16 (uint32 above 65,535 buckets)


def featurise(texts: Sequence[str], hasher: NgramHasher, ngrams: int) -> Features:
    """Bucket streams of ``texts`` (see :class:`Features`), hashing each distinct n-gram once."""
    parts = [[tokenize(p) for p in segments(t)] for t in texts]  # documents packed in one text stay apart
    n_tokens = np.fromiter((sum(map(len, ps)) for ps in parts), dtype=np.int64, count=len(parts))  # (D,)
    seg = np.fromiter((len(p) for ps in parts for p in ps), dtype=np.int64)  # (S,) tokens per segment
    flat = list(chain.from_iterable(chain.from_iterable(parts)))
    size, nb = len(flat), hasher.num_buckets
    gid = hasher.token_ids(flat)  # (L,)
    stream = np.full((ngrams, size), nb, dtype=np.uint16 if nb < 1 << 16 else np.uint32)
    stream[0] = hasher.uni[gid]
    end = np.repeat(np.cumsum(seg), seg)  # (L,) one past the last token of each token's segment
    ids, mult = gid, int(gid.max(initial=0)) + 1  # ids: (L,) number of the (k−1)-gram at each position
    for k in range(2, ngrams + 1):
        m = max(size - k + 1, 0)
        at = np.flatnonzero(np.arange(m) + k <= end[:m])  # (M,) k-grams inside one document
        if k == 2:
            stream[1, at] = hasher.pair_buckets(gid[at], gid[at + 1])
        if k < ngrams or k > 2:  # trigrams and up (rare): number k-grams in the batch, hash the distinct ones
            codes, _ = pd.factorize(ids[at] * mult + gid[at + k - 1])  # (M,) equal ⇔ the same k-gram
            if k > 2:
                run = np.maximum.accumulate(codes)  # codes count up in first-seen order
                first_at = at[np.flatnonzero(np.r_[True, run[1:] > run[:-1]])]  # (U,) where each first occurs
                grams = [" ".join(flat[p:p + k]) for p in first_at.tolist()]
                stream[k - 1, at] = hash_buckets(grams, nb)[codes]
            ids = np.zeros(size, dtype=np.int64)
            ids[at] = codes
    return Features(n_tokens, stream)


def n_features(n_tokens: np.ndarray, ngrams: int) -> np.ndarray:
    """Number of n-gram features (D,) of documents of T tokens (D,): Σ_k max(0, T − k + 1)."""
    return sum(np.maximum(np.asarray(n_tokens, dtype=np.int64) - k + 1, 0) for k in range(1, ngrams + 1))


def example_length(n_tokens: np.ndarray, ngrams: int) -> np.ndarray:
    """The package's length of documents of T tokens, read off its features: ``(n_features +
    n(n−1)/2) // n`` = T, except one more where T < n − 1 (only for n ≥ 3)."""
    return (n_features(n_tokens, ngrams) + ngrams * (ngrams - 1) // 2) // ngrams


def hashed_counts(texts: Sequence[str], num_buckets: int = 10_000, ngrams: int = 2) -> np.ndarray:
    """Per-document bucket counts, (N, B) int64 — for small inputs (tests, targets)."""
    f = featurise(texts, NgramHasher(num_buckets), ngrams)
    row = np.repeat(np.arange(len(texts), dtype=np.int64) * (num_buckets + 1), f.n_tokens)  # (L,)
    counts = np.bincount((row + f.stream).ravel(), minlength=len(texts) * (num_buckets + 1))  # (ngrams, L) cells
    return counts.reshape(len(texts), num_buckets + 1)[:, :num_buckets]


def distribution(counts: np.ndarray, what: str = "text") -> np.ndarray:
    """Bucket counts (B,) normalised to probabilities (B,) float64."""
    total = counts.sum()
    if total <= 0:
        raise DataError(f"dsir: the {what} has no tokens to estimate a distribution from; give it some text")
    return counts / total


def log_diff(p_target: np.ndarray, p_raw: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-bucket log importance ratio (B,): ``log(p_t + eps) − log(p_r + eps)`` (the package's eps)."""
    return np.log(p_target + eps) - np.log(p_raw + eps)


def log_weights(counts: np.ndarray, ld: np.ndarray) -> np.ndarray:
    """Log importance weights (N,) of documents with bucket counts (N, B): ``counts · log_diff``."""
    return counts @ ld


def stream_counts(stream: np.ndarray, num_buckets: int, n_positions: Optional[int] = None) -> np.ndarray:
    """Bucket totals (B,) int64 of a bucket stream, or of its first ``n_positions`` tokens."""
    s = stream if n_positions is None else stream[:, :n_positions]
    return np.bincount(s.ravel(), minlength=num_buckets + 1)[:num_buckets].astype(np.int64)


def stream_weights(stream: np.ndarray, n_tokens: np.ndarray, ld: np.ndarray) -> np.ndarray:
    """Log importance weights (D,) from a batch's bucket stream: per document, Σ log_diff[bucket]."""
    ld_ext = np.append(ld, 0.0)  # (B+1,) the "no n-gram here" bucket weighs nothing
    per_token = ld_ext[stream].sum(axis=0)  # (L,)
    out = np.zeros(len(n_tokens), dtype=np.float64)
    nz = n_tokens > 0  # reduceat needs strictly increasing starts inside the array
    if nz.any():
        starts = (np.cumsum(n_tokens) - n_tokens)[nz]
        out[nz] = np.add.reduceat(per_token, starts)
    return out


def _batches(docs: Iterable[tuple[str, str]], batch_chars: int) -> Iterator[Batch]:
    """Consecutive (ids, texts) batches of about ``batch_chars`` characters."""
    batch: Batch = ([], [])
    size = 0
    for i, t in docs:
        batch[0].append(i)
        batch[1].append(t)
        size += len(t)
        if size >= batch_chars:
            yield batch
            batch, size = ([], []), 0
    if batch[0]:
        yield batch


_WORKER_STATE: dict[str, object] = {}  # in a worker process: the hasher of the call it last served


def _featurise_in_worker(batch: Batch, num_buckets: int, ngrams: int, call: str) -> tuple[list[str], Features]:
    if _WORKER_STATE.get("call") != call:  # a new weigh() call starts with an empty memo
        _WORKER_STATE.update(call=call, hasher=NgramHasher(num_buckets))
    return batch[0], featurise(batch[1], _WORKER_STATE["hasher"], ngrams)  # type: ignore[arg-type]


def _featurised(batches: Iterable[Batch], hasher: NgramHasher, ngrams: int, workers: int
                ) -> Iterator[tuple[list[str], Features]]:
    """Featurised batches in input order: inline (with ``hasher``) for one batch or worker, else on
    joblib's reusable process pool (a hasher per worker and call), ≤ 2 batches per worker in flight."""
    it = iter(batches)
    head = list(islice(it, 2))
    if workers <= 1 or len(head) < 2:
        for ids, texts in chain(head, it):
            yield ids, featurise(texts, hasher, ngrams)
        return
    parallel = Parallel(n_jobs=workers, return_as="generator", pre_dispatch="2*n_jobs")
    call = uuid.uuid4().hex
    try:
        yield from parallel(delayed(_featurise_in_worker)(b, hasher.num_buckets, ngrams, call) for b in chain(head, it))
    finally:  # a child process (a study's worker) ends by os._exit, skipping joblib's cleanup: stop the pool here
        if multiprocessing.parent_process() is not None:
            get_reusable_executor().shutdown(wait=True)


@dataclass(frozen=True)
class DSIRWeights:
    """What DSIR computes before resampling, for every pool document in pool order."""

    ids: tuple[str, ...]
    log_weights: np.ndarray  # (N,) float64: counts · log_diff, the length filter not applied
    scores: np.ndarray  # (N,) float64: log_weights, -inf where the length filter drops the document
    n_tokens: np.ndarray  # (N,) int64
    log_diff: np.ndarray  # (B,) float64
    raw_docs_fit: int  # how many leading pool documents estimated p_r (all, unless the cap bound)


@dataclass(frozen=True)
class DSIRSelector:
    """DSIR (Xie et al. 2023): importance weights of hashed uni+bigrams, target vs pool; resampled.

    See the module docstring. ``raw_sample_cap``: pool features used to estimate ``p_r``
    (``"auto"``: 100,000 × ``num_buckets``, the package's default; ``None``: all); ``workers``:
    processes (0 = all cores); ``work_dir``: where bucket streams spill beyond ``memory_mb``."""

    num_buckets: int = 10_000
    ngrams: int = 2
    min_example_length: int = 100
    top_k: bool = False
    raw_sample_cap: Union[int, str, None] = "auto"
    workers: int = 0
    work_dir: Optional[str] = None
    batch_chars: int = 1 << 20
    memory_mb: int = 2048
    name: str = "dsir"

    def __post_init__(self) -> None:
        lows = {"num_buckets": 1, "ngrams": 1, "min_example_length": 0, "workers": 0, "batch_chars": 1, "memory_mb": 0}
        for key, low in lows.items():
            v = getattr(self, key)
            if type(v) is not int or v < low or (key == "num_buckets" and v >= 1 << 32):
                raise ConfigError(f"dsir: {key}={v!r}; use an integer ≥ {low} (num_buckets < 2^32)")
        cap = self.raw_sample_cap
        if not (cap is None or cap == "auto" or (type(cap) is int and cap >= 1)):
            raise ConfigError(f"dsir: raw_sample_cap={cap!r}; use 'auto', null (the whole pool) or a positive integer")

    def cap(self) -> Optional[int]:
        """The raw cap in features (``None``: no cap)."""
        return AUTO_CAP_PER_BUCKET * self.num_buckets if self.raw_sample_cap == "auto" else self.raw_sample_cap  # type: ignore[return-value]

    def n_workers(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.workers or cores

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection:
        return self.choose(self.weigh(pool, target), n, seed)

    def choose(self, w: DSIRWeights, n: int, seed: int) -> Selection:
        """The selection from the weights of every pool document (pool order)."""
        check_n(n, len(w.ids), self.name)
        eligible = np.flatnonzero(w.scores > -np.inf)
        self._check_eligible(n, len(eligible), len(w.ids))
        if self.top_k:
            chosen = top_n(w.scores, n, w.ids, seed)
        else:  # the package adds np.random.gumbel(size=#eligible) to the eligible weights, in pool order, so
            # seed=s picks its set after np.random.seed(s) with num_proc=1 (legacy stream: frozen in NumPy)
            rs = np.random.RandomState(seed % (1 << 32))  # its gumbel() matches the Generator's signature
            chosen = eligible[gumbel_top_n(w.scores[eligible], n, rs)]  # type: ignore[arg-type]
        settings = {k: v for k, v in asdict(self).items() if k in _RESULT_SETTINGS}
        settings.update(raw_sample_cap=self.cap(), raw_docs_fit=w.raw_docs_fit, tokenizer="wordpunct (re)")
        return Selection(self.name, w.ids, w.scores, chosen, settings, {"n_tokens": w.n_tokens})

    def _check_eligible(self, n: int, eligible: int, total: int) -> None:
        """Say how many documents the length filter excluded; refuse an ``n`` beyond the rest."""
        short = total - eligible
        why = (f"{short:,} of {total:,} pool documents are shorter than min_example_length="
               f"{self.min_example_length} tokens")
        if n > eligible:
            raise ConfigError(f"dsir: n={n:,} but only {eligible:,} documents are eligible: {why}; lower n or the "
                              f"setting min_example_length (--set min_example_length=N; 0 keeps every document)")
        if short:
            warn(f"dsir: {why} and were excluded (score -inf, never chosen); --set min_example_length=N "
                 "lowers the bar (0 keeps every document)")

    def weigh(self, pool: Pool, target: Sequence[str]) -> DSIRWeights:
        """Log importance weights of every pool document (the length filter as ``-inf`` scores)."""
        if isinstance(target, str) or len(target) == 0:
            raise DataError("dsir: the target must be a non-empty list of texts")
        feat = partial(_featurised, hasher=NgramHasher(self.num_buckets), ngrams=self.ngrams, workers=self.n_workers())
        store = Streams(self.memory_mb << 20, self.work_dir)
        try:
            target_batches = feat(_batches(((str(i), t) for i, t in enumerate(target)), self.batch_chars))
            p_t = distribution(sum(stream_counts(f.stream, self.num_buckets) for _, f in target_batches), "target")
            ids, lens, raw, n_fit = self._fit_raw(feat, pool, store)  # an empty pool fails in distribution()
            ld = log_diff(p_t, distribution(raw, "pool"))
            lw = self._weights(feat, pool, store, ids, lens, ld)
        finally:
            store.close()
        n_tokens = np.concatenate(lens)
        long_enough = example_length(n_tokens, self.ngrams) >= self.min_example_length
        return DSIRWeights(tuple(ids), lw, np.where(long_enough, lw, -np.inf), n_tokens, ld, n_fit)

    def _fit_raw(self, feat: Featuriser, pool: Pool, store: Streams
                 ) -> tuple[list[str], list[np.ndarray], np.ndarray, int]:
        """Pass 1: hash every batch once, keep its stream, and count p_r's buckets up to the cap."""
        cap = self.cap()
        ids: list[str] = []
        lens: list[np.ndarray] = []
        total = np.zeros(self.num_buckets, dtype=np.int64)
        seen = n_fit = 0
        with phase("featurising", total=pool_size()) as bar:
            for bids, f in feat(_batches(((d.id, d.text) for d in pool()), self.batch_chars)):
                bar.update(len(bids))
                ids.extend(bids)
                lens.append(f.n_tokens)
                store.put(f.stream)
                if cap is not None and seen > cap:
                    continue
                nf = n_features(f.n_tokens, self.ngrams)  # (D,)
                before = seen + np.cumsum(nf) - nf  # (D,) features counted before each document
                # The package adds a document's counts, then stops once the total exceeds the cap.
                keep = len(nf) if cap is None else int(np.count_nonzero(before <= cap))
                total += stream_counts(f.stream, self.num_buckets, int(f.n_tokens[:keep].sum()))
                seen += int(nf[:keep].sum())
                n_fit += keep
        return ids, lens, total, n_fit

    def _weights(self, feat: Featuriser, pool: Pool, store: Streams, ids: list[str],
                 lens: list[np.ndarray], ld: np.ndarray) -> np.ndarray:
        """Pass 2: Σ log_diff over each document's stream (NumPy, ≈ 0.5–1 GB of text per second, so
        serial); batches whose stream was dropped are hashed again."""
        dropped = {k for k, item in enumerate(store.items) if item is None}
        redo = feat(b for k, b in enumerate(_batches(((d.id, d.text) for d in pool()), self.batch_chars))
                    if k in dropped)
        out, start = [], 0
        with phase("scoring", total=len(ids)) as bar:
            for k, n_tok in enumerate(lens):
                stream = store.get(k)
                if stream is None:
                    bids, f = next(redo)
                    if bids != ids[start:start + len(n_tok)]:
                        raise DataError("dsir: the pool yielded other documents on a second pass; make it "
                                        "re-iterable, or set work_dir so that it is read once")
                    stream = f.stream
                out.append(stream_weights(stream, n_tok, ld))
                start += len(n_tok)
                bar.update(len(n_tok))
        return np.concatenate(out)


_RESULT_SETTINGS = ("num_buckets", "ngrams", "min_example_length", "top_k")  # the rest only set speed or memory
SELECTORS.add("dsir", DSIRSelector)

"""The Selector protocol and registry, and what every selection method shares.

A selection picks ``n`` documents from a **pool** toward a **target** set. A method scores every
pool document (higher = more wanted) and keeps the top ``n`` (or samples ``n`` without
replacement by Gumbel top-k on log-weights). Everything is seeded: same inputs and seed, same
selection, byte for byte. Pools are streamed (``pool()`` returns a fresh iterator each call),
so a method makes as many passes as it needs without holding the pool's text in memory.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from ..data.sources import Document
from ..errors import ConfigError
from ..registry import Registry

Pool = Callable[[], Iterator[Document]]  # a re-iterable stream of pool documents
# Separates documents packed into one pool text (a training window holds the end of one document
# and the start of the next): featurisers count no n-gram across it. U+001E, "record separator",
# is whitespace to ``re`` and never occurs in decoded prose.
DOC_BREAK = "\x1e"


def segments(text: str) -> list[str]:
    """The documents packed in one pool text, split at :data:`DOC_BREAK` (one if it has none)."""
    return text.split(DOC_BREAK)


@dataclass(frozen=True)
class Selection:
    """A selection: the chosen ids in rank order, every pool document's score, and settings.

    ``ids``/``scores`` cover the whole pool (scores may be ``-inf`` for documents a method drops,
    e.g. DSIR's length filter); ``chosen`` indexes into them, best first."""

    method: str
    ids: tuple[str, ...]
    scores: np.ndarray  # (N,) float64
    chosen: np.ndarray  # (n,) int64 indices into ids, in selection order
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # per-document columns (N,) for the table

    @property
    def chosen_ids(self) -> list[str]:
        return [self.ids[i] for i in self.chosen]


class Selector(Protocol):
    """One selection method. ``select`` must not depend on anything but its arguments."""

    name: str

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection: ...


SELECTORS: Registry[Callable[..., Selector]] = Registry("selection method")


def parse_n(value: int | float | str, flag: str = "n") -> int | float:
    """A count (an integer ≥ 1) or a fraction of the pool (a number with a point in (0, 1]):
    ``"300"`` → 300, ``"0.2"`` → 0.2, ``"1.0"`` → the whole pool. Anything else is one ConfigError."""
    how = "give a count of documents (e.g. 300) or a fraction of the pool in (0, 1] (e.g. 0.2)"
    if isinstance(value, bool):
        raise ConfigError(f"{flag} {value!r}: {how}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{flag} {text!r} is not a number; {how}") from None
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{flag} {value}: choose at least one document; {how}")
        return value
    if not (isinstance(value, float) and 0.0 < value <= 1.0):
        raise ConfigError(f"{flag} {value}: a fraction must lie in (0, 1]; {how}")
    return value


def resolve_n(n: int | float, n_pool: int) -> int:
    """The number of documents ``n`` asks for in a pool of ``n_pool``: a count as it is, a
    fraction rounded to the nearest count (halves up), at least one."""
    if isinstance(n, int):
        return n
    return max(1, int(n * n_pool + 0.5))


def check_n(n: int, n_pool: int, method: str) -> None:
    if n < 1:
        raise ConfigError(f"{method}: n={n}; choose at least one document")
    if n > n_pool:
        raise ConfigError(f"{method}: n={n} exceeds the {n_pool} documents available in the pool; lower n "
                          "or grow the pool")


def tie_break(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded, order-free key per id (uniform in [0, 1)): equal scores are ordered by it, so a
    selection never depends on the order the pool was read in."""
    out = np.empty(len(ids), dtype=np.float64)
    salt = str(int(seed)).encode()  # at most 20 bytes: a valid blake2b key
    for i, d in enumerate(ids):
        h = hashlib.blake2b(d.encode("utf-8"), digest_size=8, key=salt).digest()
        out[i] = int.from_bytes(h, "little") / 2.0 ** 64
    return out


def top_n(scores: np.ndarray, n: int, ids: Sequence[str], seed: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first; ties broken by :func:`tie_break`.
    ``-inf`` (dropped) documents are never chosen."""
    finite = np.flatnonzero(scores > -np.inf)
    if n > len(finite):
        raise ConfigError(f"only {len(finite)} pool documents are eligible (the rest were filtered out); "
                          f"cannot choose n={n}")
    key = tie_break([ids[i] for i in finite], seed)
    order = np.lexsort((key, -scores[finite]))  # primary: score descending; then the seeded key
    return finite[order[:n]].astype(np.int64)


def bottom_n(scores: np.ndarray, n: int, ids: Sequence[str], seed: int) -> np.ndarray:
    """Indices of the ``n`` lowest finite scores, worst first (ties by :func:`tie_break`)."""
    finite = np.flatnonzero(np.isfinite(scores))
    if n > len(finite):
        raise ConfigError(f"only {len(finite)} pool documents have a score; cannot choose n={n}")
    key = tie_break([ids[i] for i in finite], seed)
    order = np.lexsort((key, scores[finite]))
    return finite[order[:n]].astype(np.int64)


def gumbel_top_n(log_weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sample ``n`` indices without replacement with probability ∝ exp(log_weights) (Gumbel top-k);
    ``-inf`` log-weights are never drawn."""
    eligible = int(np.isfinite(log_weights).sum())
    if n > eligible:
        raise ConfigError(f"only {eligible} pool documents are eligible; cannot sample n={n}")
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    return np.argsort(-keys, kind="stable")[:n].astype(np.int64)

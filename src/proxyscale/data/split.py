"""The held-out split: one function decides, for training-data preparation and for test-set
building alike, whether a document is held out, so test data is never trained on.

A document is held out iff ``sha256(salt, source, doc id)`` read as a number in [0, 1) falls
below ``fraction``. The decision depends only on those three values (not on order, other
documents or a random state), so it is the same in every process and on every machine, and
raising ``fraction`` only moves documents from training to held out, never back.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError
from .sources import Document

DEFAULT_SALT = "proxyscale-heldout-v1"


@dataclass(frozen=True)
class HoldOut:
    """Which share of each source is held out for test sets, and the salt of the hash."""

    fraction: float = 0.05
    salt: str = DEFAULT_SALT

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"held-out fraction must be in [0, 1), got {self.fraction}")

    def is_held_out(self, source: str, doc_id: str) -> bool:
        return is_held_out(source, doc_id, fraction=self.fraction, salt=self.salt)


def held_out_score(source: str, doc_id: str, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) fixed by (salt, source, doc id); held out iff it is below the fraction."""
    # NUL separators keep ("a", "bc") and ("ab", "c") apart
    h = hashlib.sha256(f"{salt}\0{source}\0{doc_id}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def is_held_out(source: str, doc_id: str, *, fraction: float, salt: str = DEFAULT_SALT) -> bool:
    """True iff document ``doc_id`` of ``source`` is held out (never used for training)."""
    return held_out_score(source, doc_id, salt) < fraction


def split_documents(docs: Iterable[Document], source: str, holdout: HoldOut) -> tuple[list[Document], list[Document]]:
    """Partition ``docs`` into (training, held out), each in input order."""
    train: list[Document] = []
    held: list[Document] = []
    for d in docs:
        (held if holdout.is_held_out(source, d.id) else train).append(d)
    return train, held


def training_documents(docs: Iterable[Document], source: str, holdout: HoldOut) -> Iterable[Document]:
    """Lazily yield only the documents that may be trained on."""
    return (d for d in docs if not holdout.is_held_out(source, d.id))


def held_out_documents(docs: Iterable[Document], source: str, holdout: HoldOut) -> Iterable[Document]:
    """Lazily yield only the held-out documents (the material for test sets)."""
    return (d for d in docs if holdout.is_held_out(source, d.id))

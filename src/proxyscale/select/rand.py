"""Random selection: ``n`` pool documents uniformly without replacement, seeded.

Each document's score is a seeded hash of its id (uniform in [0, 1)), and the top ``n`` are
kept: the same as a seeded permutation, but independent of the order the pool is read in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .base import SELECTORS, Pool, Selection, check_n, tie_break, top_n


@dataclass(frozen=True)
class RandomSelector:
    name: str = "random"

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection:
        ids = tuple(d.id for d in pool())
        check_n(n, len(ids), self.name)
        scores = tie_break(ids, seed ^ 0x5EED)  # a different key from the tie-break's own
        return Selection(self.name, ids, scores, top_n(scores, n, ids, seed), {})


SELECTORS.add("random", RandomSelector)

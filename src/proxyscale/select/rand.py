"""Random selection: ``n`` pool documents uniformly without replacement, seeded.

Each document's score is a seeded hash of its id (uniform in [0, 1)), and the top ``n`` are
kept: the same as a seeded permutation, but independent of the order the pool is read in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import SELECTORS, Pool, Selection, check_n, tie_break, top_n
from .progress import phase, pool_size


@dataclass(frozen=True)
class RandomSelector:
    """Random: n pool documents uniformly without replacement, seeded (the target is not read)."""

    name: str = "random"

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection:
        with phase("scoring", total=pool_size()) as bar:
            ids = tuple(d.id for d in pool())
            bar.update(len(ids))
        check_n(n, len(ids), self.name)
        return Selection(self.name, ids, random_scores(ids, seed), random_pick(ids, n, seed), {})


def random_scores(ids: Sequence[str], seed: int) -> np.ndarray:
    """Each id's seeded score, uniform in [0, 1) (a different key from the tie-break's own)."""
    return tie_break(ids, seed ^ 0x5EED)


def random_pick(ids: Sequence[str], n: int, seed: int) -> np.ndarray:
    """What ``--method random --seed seed`` chooses among ``ids``: indices, best first."""
    return top_n(random_scores(ids, seed), n, ids, seed)


SELECTORS.add("random", RandomSelector)

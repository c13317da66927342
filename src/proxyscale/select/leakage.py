"""Test leakage by hashed text: does any holdout example's text appear in the pool or the target?

Texts are normalised (lower case, words = runs of letters and digits) and compared by hashed
word n-grams — 13-grams, the contamination test of GPT-3 — or, for an example shorter than 13
words, its whole normalised text as one gram. An example overlaps a corpus when any of its
grams occurs among the corpus's grams of the same length. Only the examples' grams are kept in
memory; the corpus is streamed.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Normalised words: lower case, punctuation and whitespace dropped."""
    return _WORD.findall(text.lower())


def _h(gram: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(gram).encode("utf-8"), digest_size=8).digest()


def example_grams(text: str, n: int = 13) -> tuple[int, set[bytes]]:
    """(gram length, hashed grams) of one example: its n-grams, or its whole text if shorter."""
    w = words(text)
    m = min(n, len(w))
    if m == 0:
        return 0, set()
    return m, {_h(w[i:i + m]) for i in range(len(w) - m + 1)}


def overlaps(examples: Sequence[str], corpus: Iterable[str], n: int = 13) -> list[bool]:
    """For each example, whether any of its grams occurs in ``corpus`` (streamed once)."""
    grams = [example_grams(t, n) for t in examples]
    wanted: dict[int, set[bytes]] = {}
    for m, g in grams:
        if m:
            wanted.setdefault(m, set()).update(g)
    found: dict[int, set[bytes]] = {m: set() for m in wanted}
    for text in corpus:
        w = words(text)
        for m, want in wanted.items():
            for i in range(len(w) - m + 1):
                h = _h(w[i:i + m])
                if h in want:
                    found[m].add(h)
    return [bool(m and g & found[m]) for m, g in grams]

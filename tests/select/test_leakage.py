"""The hashed-text leakage check: it finds planted holdout text and nothing else."""
from __future__ import annotations

from proxyscale.select.leakage import example_grams, overlaps, words


def test_planted_text_is_found_and_clean_text_is_not():
    from pydoc_data.topics import topics

    docs = [v for _, v in sorted(topics.items())[:30]]
    planted = " ".join(words(docs[3])[40:60])  # 20 words lifted from a pool document
    short = " ".join(words(docs[5])[10:15])  # 5 words: compared whole
    clean = "zebra quantum marmalade " * 6
    flags = overlaps([planted, short, clean, ""], docs)
    assert flags == [True, True, False, False]
    # punctuation and case do not hide a copy
    assert overlaps([planted.upper().replace(" ", " ,  ")], docs) == [True]


def test_grams_are_thirteen_words_or_the_whole_text():
    m, g = example_grams(" ".join(f"w{i}" for i in range(20)))
    assert m == 13 and len(g) == 8
    m, g = example_grams("three short words")
    assert m == 3 and len(g) == 1

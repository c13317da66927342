"""Sentence splitting: abbreviations, titles and initials stay inside their sentence; real
sentence ends still split; the test-set builders use it (choice endings, cloze words, qa answers)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from proxyscale.data.sentences import ABBREVIATIONS, sentences
from proxyscale.data.sources import Document
from proxyscale.data.tasks import build_test_set, cloze_words, first_sentence
from proxyscale.data.tokenizer import train_tokenizer

# verbatim items of the embedded corpus (Debian fortunes, FOLDOC, GCIDE), each with its true sentences
CORPUS_ITEMS = [
    ('"I suppose you expect me to talk." "No, Mr. Bond. I expect you to die." -- Goldfinger',
     ['"I suppose you expect me to talk."', '"No, Mr. Bond.', 'I expect you to die."', '-- Goldfinger']),
    ("Her abigail reported that Mrs. Gutheridge had a set of night curls for sleeping in. --Leslie.",
     ["Her abigail reported that Mrs. Gutheridge had a set of night curls for sleeping in.", "--Leslie."]),
    ('The term first appeared in print in "If I Ran the Zoo", 1950 by Dr. Seuss. Compare: geek.',
     ['The term first appeared in print in "If I Ran the Zoo", 1950 by Dr. Seuss.', "Compare: geek."]),
    ("One of a class of divines, who, following St. Augustine, maintain that grace by its nature is effectual. "
     "Augustinianism",
     ["One of a class of divines, who, following St. Augustine, maintain that grace by its nature is effectual.",
      "Augustinianism"]),
    ("E-mail: Dr. Wolfgang Dzida, GMD or the author. ERGO-Shell is now obsolete.",
     ["E-mail: Dr. Wolfgang Dzida, GMD or the author.", "ERGO-Shell is now obsolete."]),
]

# the case and other common abbreviations in running prose
PROSE = [
    ("Emma wanted to see what became of Mr. Weston and Mr. Knightley. They had left before dinner.",
     ["Emma wanted to see what became of Mr. Weston and Mr. Knightley.", "They had left before dinner."]),
    ("Some files, e.g. the password file, are world readable. Others are not.",
     ["Some files, e.g. the password file, are world readable.", "Others are not."]),
    ("He served in the U.S. Army for ten years. Then he retired.",
     ["He served in the U.S. Army for ten years.", "Then he retired."]),
    ("The value, i.e. the result of the call, is cached. See Fig. 3 for details.",
     ["The value, i.e. the result of the call, is cached.", "See Fig. 3 for details."]),
    ("J. R. R. Tolkien wrote it. Really? Yes!", ["J. R. R. Tolkien wrote it.", "Really?", "Yes!"]),
]


@pytest.mark.parametrize("text, expected", CORPUS_ITEMS + PROSE)
def test_abbreviations_stay_inside_their_sentence(text, expected):
    assert sentences(text) == expected


def test_whitespace_is_normalised_and_no_sentence_ends_on_a_title():
    text = "  Ask   Dr.\n  Smith first.\n\nThen   Prof.  Jones.  "
    assert sentences(text) == ["Ask Dr. Smith first.", "Then Prof. Jones."]
    titles = {"mr", "mrs", "dr", "st", "prof"}
    for t, _ in CORPUS_ITEMS + PROSE:
        for s in sentences(t)[:-1]:
            last = s.split()[-1].strip('"').rstrip(".").lower()
            assert last not in titles, s


@pytest.fixture(scope="module")
def story_docs():
    """Prose full of titles and abbreviations, like the quotations of the embedded corpus."""
    rng = np.random.default_rng(0)
    names = ["Weston", "Knightley", "Elton", "Smith", "Bates", "Churchill"]
    parts = ["Mr. {n} called on Mrs. {m} before noon.", "Dr. {n} spoke to St. {m} about the weather.",
             "They met {n} at the U.S. embassy, e.g. on Tuesday.", "Nobody had seen {n} since the morning.",
             "The letter from {m} arrived, i.e. the second one."]
    docs = []
    for i in range(40):
        k = int(rng.integers(5, 9))
        docs.append(Document(f"s{i}", " ".join(parts[int(rng.integers(len(parts)))].format(
            n=names[int(rng.integers(6))], m=names[int(rng.integers(6))]) for _ in range(k))))
    return docs


def test_choice_endings_are_whole_sentences(story_docs):
    tok = train_tokenizer([d.text for d in story_docs], 320)
    ts = build_test_set("choice", "ch", story_docs, tok, 128, 30, np.random.default_rng(1))
    assert len(ts) == 30
    for ex in ts.examples:
        for c, s in zip(ex.candidates, ex.pred_start):
            ending = tok.decode(c[s:]).strip()
            assert re.fullmatch(r"[A-Z].*[a-z]\.", ending), ending  # a capitalised sentence, never "Mr."
            assert ending.split()[-1].rstrip(".").lower() not in ABBREVIATIONS, ending
        context = tok.decode(ex.candidates[0][1: ex.pred_start[0]])
        assert not re.search(r"\b(Mr|Mrs|Dr|St)\.$", context), context  # the context never ends on a title


def test_cloze_word_is_never_an_abbreviation(story_docs):
    for d in story_docs:
        text = " ".join(d.text.split())
        words = cloze_words(text, min_offset=0)
        assert words and all(w.lower() not in ABBREVIATIONS for _, w in words)
        for start, w in words:
            assert text[start: start + len(w)] == w and text[start + len(w)] == "."
    found = cloze_words("We met Mrs. Gutheridge and Mr. Weston at noon. They left.", 0)
    assert [w for _, w in found] == ["noon", "left"]


def test_qa_answer_keeps_an_abbreviation_inside_the_first_sentence():
    text = "1. A small rodent, e.g. a mouse or vole. Also used figuratively."
    assert first_sentence(text) == "A small rodent, e.g. a mouse or vole."

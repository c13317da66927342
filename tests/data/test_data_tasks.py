"""Test-set builders: each kind predicts exactly the intended tokens, everything fits the
context (cut from the left only), results are seeded, and only held-out text is used."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.data.corpus import build_corpus
from proxyscale.data.sources import Document, SourceSpec, iter_documents
from proxyscale.data.split import HoldOut
from proxyscale.data.tasks import (
    answer_example,
    build_test_set,
    choice_example,
    first_sentence,
    held_out_test_set,
    lm_example,
)
from proxyscale.data.testset import read_test_set, write_test_set
from proxyscale.data.tokenizer import train_tokenizer
from proxyscale.errors import ConfigError, DataError

WORDS = "river stone light garden window morning silver forest quiet letter harbor candle".split()


def _prose(rng: np.random.Generator, n_sent: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))).capitalize() + "."
                    for _ in range(n_sent))


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(0)
    return [Document(f"d{i}", _prose(rng, int(rng.integers(3, 30)))) for i in range(60)]


@pytest.fixture(scope="module")
def entries():
    rng = np.random.default_rng(1)
    return [Document(f"e{i}", "1. " + _prose(rng, 3), title=f"{WORDS[i % 12]}{i}") for i in range(40)]


@pytest.fixture(scope="module")
def tok(docs, entries):
    return train_tokenizer([d.text for d in docs] + [f"Term: {e.title}\nDefinition: {e.text}" for e in entries], 400)


def _pred(tok, ex, j=None):
    j = ex.label if j is None else j
    c, s = ex.candidates[j], ex.pred_start[j]
    return tok.decode(c[s:]), c[:s]


def test_constructors_cut_context_from_the_left_never_the_answer():
    ex = answer_example("x", list(range(1, 20)), [50, 51, 52], context=8)
    assert ex.candidates[0] == (15, 16, 17, 18, 19, 50, 51, 52) and ex.pred_start == (5,)
    assert answer_example("x", [1, 2], list(range(10)), context=8) is None  # answer cannot fit
    ex = choice_example("y", list(range(1, 30)), [[90], [91, 92, 93], [94, 95]], 1, context=10)
    assert all(len(c) <= 10 for c in ex.candidates) and ex.pred_start == (7, 7, 7)
    assert [c[7:] for c in ex.candidates] == [(90,), (91, 92, 93), (94, 95)]
    ex = lm_example("z", list(range(1, 100)), context=16, eos_id=0)
    assert ex.candidates[0] == tuple(range(0, 16)) and ex.pred_start == (1,)
    assert lm_example("z", [], 16, 0) is None


@pytest.mark.parametrize("context", [24, 64])
def test_lm_and_cloze(docs, tok, context):
    lm = build_test_set("lm", "lm", docs, tok, context, 20, np.random.default_rng(0))
    assert len(lm) == 20 and lm.kind == "lm" and lm.max_len() <= context
    for ex in lm.examples:
        doc = next(d for d in docs if ex.example_id == f"lm/{d.id}")
        assert ex.candidates[0][0] == tok.eos_id and doc.text.startswith(tok.decode(ex.candidates[0][1:]))
    cloze = build_test_set("cloze", "cz", docs, tok, context, 20, np.random.default_rng(0))
    assert len(cloze) == 20 and cloze.max_len() <= context
    for ex in cloze.examples:
        doc = next(d for d in docs if ex.example_id == f"cz/{d.id}")
        word, ctx = _pred(tok, ex)
        assert word.startswith(" ") and word.strip() in WORDS
        passage = tok.decode(ctx) + word  # the passage is a prefix of the document ending in the word
        passage = passage.lstrip()
        assert passage in doc.text and doc.text[doc.text.index(passage) + len(passage)] == "."


def test_qa_predicts_the_definitions_first_sentence(entries, tok):
    ts = build_test_set("qa", "qa", entries, tok, 48, 15, np.random.default_rng(2))
    assert len(ts) == 15 and ts.max_len() <= 48
    for ex in ts.examples:
        e = next(e for e in entries if ex.example_id == f"qa/{e.id}")
        answer, prompt = _pred(tok, ex)
        assert tok.decode(prompt).endswith(f"Term: {e.title}\nDefinition:")
        assert answer == " " + first_sentence(e.text) and answer.endswith(".") and not answer.startswith(" 1.")
    with pytest.raises(DataError, match="titles"):
        build_test_set("qa", "qa", [Document("a", "No title here. At all.")], tok, 48, 5, np.random.default_rng(0))


def test_choice_has_true_continuation_and_three_distractors(docs, tok):
    ts = build_test_set("choice", "ch", docs, tok, 64, 25, np.random.default_rng(3))
    labels = [ex.label for ex in ts.examples]
    assert len(ts) == 25 and len(set(labels)) > 1 and ts.max_len() <= 64
    for ex in ts.examples:
        doc = next(d for d in docs if ex.example_id == f"ch/{d.id}")
        assert len(ex.candidates) == 4 and len(set(ex.pred_start)) == 1
        ctx = ex.candidates[0][: ex.pred_start[0]]
        assert all(c[: ex.pred_start[0]] == ctx for c in ex.candidates)  # one shared context
        true, _ = _pred(tok, ex)
        assert (tok.decode(ctx[1:]) + true) in doc.text  # context + true ending is the document's text
        for j in set(range(4)) - {ex.label}:
            assert _pred(tok, ex, j)[0] not in doc.text  # distractors come from other documents


def test_seeded_and_round_trips_through_parquet(docs, tok, tmp_path):
    a = build_test_set("choice", "ch", docs, tok, 64, 10, np.random.default_rng(5))
    b = build_test_set("choice", "ch", docs, tok, 64, 10, np.random.default_rng(5))
    c = build_test_set("choice", "ch", docs, tok, 64, 10, np.random.default_rng(6))
    assert a == b and a != c
    write_test_set(a, tmp_path / "t.parquet")
    assert read_test_set(tmp_path / "t.parquet") == a


def test_bad_arguments(docs, tok):
    with pytest.raises(ConfigError, match="did you mean 'cloze'"):
        build_test_set("clozee", "x", docs, tok, 32, 5, np.random.default_rng(0))
    with pytest.raises(DataError, match="no document gave an example"):
        build_test_set("choice", "x", docs[:3], tok, 32, 5, np.random.default_rng(0))


def test_held_out_test_set_uses_only_held_out_documents(tmp_path, tok):
    build_corpus(tmp_path / "c", use_apt=False, domains=["pyref"], max_bytes_per_domain=200_000)
    spec = SourceSpec("embedded", domain="pyref")
    hold = HoldOut(0.3)
    ts = held_out_test_set("lm", "ref", spec, hold, tok, 32, 100, np.random.default_rng(0), tmp_path / "c")
    all_ids = [d.id for d in iter_documents(spec, tmp_path / "c")]
    used = {ex.example_id.split("/", 1)[1] for ex in ts.examples}
    held = {i for i in all_ids if hold.is_held_out(spec.key, i)}
    assert used == held and len(used) < len(all_ids)

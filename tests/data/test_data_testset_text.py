"""Test sets keep their text: each candidate's tokens are exactly its context and continuation
texts (whole characters), the text survives Parquet, and a version-1 file still reads."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxyscale.data.sources import Document
from proxyscale.data.tasks import build_test_set, with_text
from proxyscale.data.testset import Example, read_test_set, write_test_set
from proxyscale.data.testset import TestSet as TextSet
from proxyscale.data.tokenizer import train_tokenizer
from proxyscale.errors import DataError


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document(f"t{i}", text) for i, (_k, text) in enumerate(sorted(topics.items())[:60])]


@pytest.fixture(scope="module")
def tok(docs):
    return train_tokenizer([d.text for d in docs] + ["日本語のテキスト ünïcödé → ok. " * 20], 400)


@pytest.mark.parametrize("kind", ["lm", "cloze", "choice"])
def test_tokens_are_exactly_the_text(tok, docs, kind):
    ts = build_test_set(kind, kind, docs, tok, 48, 10, np.random.default_rng(0))
    assert len(ts) == 10
    for e in ts.examples:
        assert e.has_text and len(e.texts) == len(e.candidates)
        for c, s, text in zip(e.candidates, e.pred_start, e.texts):
            assert b"".join(tok.token_bytes(c[:s])).decode() == e.context_text
            assert b"".join(tok.token_bytes(c[s:])).decode() == text
    if kind == "lm":  # the document start (EOS) is no text; the whole head is the continuation
        assert all(e.context_text == "" and e.candidates[0][0] == tok.eos_id for e in ts.examples)
    if kind == "choice":
        assert all(t.startswith(" ") for e in ts.examples for t in e.texts)


def test_a_character_cut_by_the_window_loses_its_tokens(tok):
    text = "日本語のテキスト"
    ids = tok.encode(text)
    pieces = tok.token_bytes(ids)
    whole = [k for k in range(1, len(ids)) if _decodes(b"".join(pieces[:k]))]
    cut = next(k for k in range(whole[0] + 1, len(ids)) if not _decodes(b"".join(pieces[:k])))
    ex = with_text(Example("x", ((tok.eos_id, *ids[:cut]),), (1,)), tok)
    kept = ex.candidates[0][1:]
    assert len(kept) < cut and text.startswith(ex.texts[0]) and ex.texts[0]
    assert b"".join(tok.token_bytes(kept)) == ex.texts[0].encode()
    last_whole = max(k for k in range(1, len(ids)) if _decodes(b"".join(pieces[k:])))
    left = max(k for k in range(1, last_whole) if not _decodes(b"".join(pieces[k:])))
    cloze = with_text(Example("y", ((*ids[left:], *tok.encode(" ok")),), (len(ids) - left,)), tok)
    assert text.endswith(cloze.context_text) and len(cloze.context_text.encode()) < len(b"".join(pieces[left:]))
    assert cloze.texts == (" ok",)


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_text_round_trips_and_version_1_still_reads(tok, docs, tmp_path):
    ts = build_test_set("choice", "c", docs, tok, 48, 4, np.random.default_rng(1))
    write_test_set(ts, tmp_path / "t.parquet")
    back = read_test_set(tmp_path / "t.parquet")
    assert back == ts
    assert pq.read_schema(tmp_path / "t.parquet").metadata[b"format_version"] == b"2"
    old = pa.table({"example_id": ["a"], "candidates": [[[1, 2, 3]]], "pred_start": [[1]], "label": [0]})
    pq.write_table(old.replace_schema_metadata({"name": "o", "kind": "lm", "format_version": "1"}),
                   tmp_path / "old.parquet")
    e = read_test_set(tmp_path / "old.parquet").examples[0]
    assert e.candidates == ((1, 2, 3),) and e.context_text is None and e.texts == () and not e.has_text
    with pytest.raises(DataError, match="one text per candidate"):
        Example("z", ((1, 2),), (1,), 0, "ctx", ())
    assert TextSet("n", "lm", (e,)).max_len() == 3

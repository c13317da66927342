"""Token shards: exact round trip through memory-mapped arrays, dtypes, ids, errors."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.data.shards import TokenShard, token_dtype, tokenize_to_shard, write_shard
from proxyscale.data.sources import Document
from proxyscale.data.tokenizer import train_tokenizer
from proxyscale.errors import DataError


def test_round_trip_and_offsets(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 500, size=n) for n in (5, 0, 17, 1, 40)]
    meta = write_shard(docs, tmp_path / "s", vocab_size=500, doc_ids=list("abcde"))
    sh = TokenShard.open(tmp_path / "s")
    assert (sh.n_docs, sh.n_tokens, sh.vocab_size) == (5, 63, 500) == (meta["n_docs"], meta["n_tokens"], 500)
    assert sh.tokens.dtype == np.uint16 and isinstance(sh.tokens, np.memmap)
    for i, d in enumerate(docs):
        assert np.array_equal(sh.doc(i), d)
    assert np.array_equal(sh.doc(-1), docs[-1])
    assert sh.lengths.tolist() == [5, 0, 17, 1, 40] and sh.offsets.dtype == np.int64
    assert sh.doc_ids() == list("abcde")
    with pytest.raises(IndexError):
        sh.doc(5)


def test_large_vocab_uses_uint32(tmp_path):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    write_shard([[70_000, 1, 2]], tmp_path / "s", vocab_size=100_000)
    sh = TokenShard.open(tmp_path / "s")
    assert sh.tokens.dtype == np.uint32 and sh.doc(0).tolist() == [70_000, 1, 2]


def test_tokenize_to_shard_matches_tokenizer(tmp_path):
    texts = [f"document {i} says hello to {i * 7} friends" for i in range(30)]
    tok = train_tokenizer(texts, 300)
    docs = [Document(f"id{i}", t) for i, t in enumerate(texts)]
    tokenize_to_shard(docs, tok, tmp_path / "s", batch_docs=7)
    sh = TokenShard.open(tmp_path / "s")
    assert sh.doc_ids() == [d.id for d in docs]
    assert [sh.doc(i).tolist() for i in range(30)] == tok.encode_batch(texts)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="outside the vocabulary"):
        write_shard([[1, 2, 300]], tmp_path / "a", vocab_size=256)
    with pytest.raises(DataError, match="not a finished token shard"):
        TokenShard.open(tmp_path / "missing")
    with pytest.raises(DataError, match="ids for"):
        write_shard([[1]], tmp_path / "b", doc_ids=["x", "y"])
    write_shard([[1, 2]], tmp_path / "c")
    with pytest.raises(DataError, match="without document ids"):
        TokenShard.open(tmp_path / "c").doc_ids()

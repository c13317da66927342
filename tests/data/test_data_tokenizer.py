"""Byte-level BPE tokenizer: lossless, compresses, deterministic, saved/loaded exactly."""
from __future__ import annotations

import json

import pytest

from oracles import oracle
from proxyscale.data.tokenizer import EOS_TOKEN, load_tokenizer, train_tokenizer
from proxyscale.errors import ConfigError, DataError

TEXT = [
    f"The {a} {b} jumps over the lazy dog number {i}. Pack my box with five dozen liquor jugs!"
    for i, (a, b) in enumerate([("quick", "brown"), ("slow", "red"), ("tired", "grey")] * 40)
]


def test_round_trip_is_lossless_for_any_text(tmp_path):
    tok = train_tokenizer(TEXT, 400)
    for s in ["plain words", "  leading spaces\tand tabs\n\nnewlines", "ünïcödé – “quotes” 😀 中文", ""]:
        assert tok.decode(tok.encode(s)) == s
    assert tok.encode_batch(["the dog", "box"]) == [tok.encode("the dog"), tok.encode("box")]
    assert tok.decode(tok.encode("a") + [tok.eos_id]) == "a"  # EOS decodes to nothing


def test_vocab_size_eos_and_compression():
    small, large = train_tokenizer(TEXT, 300), train_tokenizer(TEXT, 600)
    assert small.vocab_size <= 300 and large.vocab_size <= 600 and large.vocab_size > small.vocab_size
    assert small.encode(EOS_TOKEN) != [small.eos_id]  # the special token is not produced from text
    sample = TEXT[0]
    n_small, n_large = len(small.encode(sample)), len(large.encode(sample))
    assert n_large < n_small < len(sample.encode())  # BPE merges compress in-domain text


def test_training_is_deterministic_and_save_load_is_exact(tmp_path):
    a = train_tokenizer(TEXT, 400, tmp_path / "tok.json")
    b = train_tokenizer(TEXT, 400)
    assert a.to_json() == b.to_json() and a.sha256 == b.sha256
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert loaded.vocab_size == a.vocab_size and loaded.eos_id == a.eos_id
    assert loaded.encode_batch(TEXT[:5]) == a.encode_batch(TEXT[:5])
    assert json.loads((tmp_path / "tok.json").read_text())["model"]["type"] == "BPE"


def test_transformers_fast_tokenizer_agrees(tmp_path):
    # oracle: the saved file loaded by transformers' own fast-tokenizer class encodes the same
    transformers = oracle("transformers")
    tok = train_tokenizer(TEXT, 400, tmp_path / "tok.json")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tok.json"))
    for s in TEXT[:3] + ["unseen wörds here"]:
        assert hf.encode(s, add_special_tokens=False) == tok.encode(s)
    assert hf.convert_tokens_to_ids(EOS_TOKEN) == tok.eos_id


def test_errors():
    with pytest.raises(ConfigError, match="vocab_size must be at least"):
        train_tokenizer(TEXT, 100)
    with pytest.raises(DataError, match="tokenizer file is missing"):
        load_tokenizer("/nonexistent/tok.json")

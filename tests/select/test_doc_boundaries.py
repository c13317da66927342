"""Pool windows pack several documents; text selectors count no n-gram across their boundary."""
from __future__ import annotations

import numpy as np

from proxyscale.select.base import DOC_BREAK
from proxyscale.select.classifier import ClassifierSelector
from proxyscale.select.dsir import hash_buckets, hashed_counts

B = 1 << 20  # buckets: no two of the handful of grams here collide


def test_dsir_counts_no_bigram_across_a_document_break():
    joined = hashed_counts(["the end." + DOC_BREAK + "Once upon"], B, 2)[0]
    apart = hashed_counts(["the end.", "Once upon"], B, 2).sum(axis=0)
    # tokens: the, end, ., once, upon → 5 unigrams; bigrams "the end", "end .", "once upon" → 3 (not 4)
    assert joined.sum() == 8 and (joined == apart).all()
    assert joined[hash_buckets([". once"], B)[0]] == 0
    assert hashed_counts(["the end. Once upon"], B, 2)[0].sum() == 9  # without the break: ". once" counts


def test_classifier_features_no_bigram_across_a_document_break():
    vec = ClassifierSelector(n_features=B)._vectorizer()
    joined = vec.transform(["alpha beta" + DOC_BREAK + "gamma delta"])
    # alpha, beta, gamma, delta, "alpha beta", "gamma delta": 6 features; "beta gamma" is not one
    assert joined.nnz == 6
    assert vec.transform(["alpha beta gamma delta"]).nnz == 7
    assert (abs(joined - vec.transform(["alpha beta\ngamma delta"])) > 0).nnz > 0


def test_window_texts_split_windows_at_end_of_text(tmp_path):
    from proxyscale.data.tokenizer import train_tokenizer
    from proxyscale.studies.fragments.pool import WINDOWS, window_texts

    tok = train_tokenizer(["first document here", "second one"] * 50, 300, tmp_path / "tok" / "tokenizer.json")
    a, b = tok.encode("first document here"), tok.encode("second one")
    window = np.array([*a, tok.eos_id, *b, tok.eos_id], dtype=np.int32)  # the last token is only predicted
    (tmp_path / "pool").mkdir()
    np.save(tmp_path / "pool" / WINDOWS, window[None, :])
    ids, texts = window_texts(tmp_path / "pool", tmp_path / "tok")
    assert ids == ["w0"] and texts == ["first document here" + DOC_BREAK + "second one"]
    assert hashed_counts(texts, B, 2)[0].sum() == 5 + 3  # 5 words; bigrams only inside each document

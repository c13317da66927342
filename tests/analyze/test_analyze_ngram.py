"""Count n-gram proxies: normalisation, agreement with a direct dict-based count, and the science."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from proxyscale.analyze.ngram import fit_ngram, load_ngram, prob, save_ngram, score_test_set
from proxyscale.data.testset import Example
from proxyscale.data.testset import TestSet as TS  # aliased so pytest does not try to collect it
from proxyscale.errors import DataError


def _markov_docs(rng, vocab, n_docs, length, sharp=3.0):
    """Documents from a first-order Markov chain with a peaked transition matrix."""
    logits = sharp * rng.normal(size=(vocab, vocab))
    trans = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    docs = []
    for _ in range(n_docs):
        t = [int(rng.integers(vocab))]
        for _ in range(length - 1):
            t.append(int(rng.choice(vocab, p=trans[t[-1]])))
        docs.append(np.array(t))
    return docs, trans


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_over_vocabulary(order):
    rng = np.random.default_rng(order)
    V = 13
    docs = [rng.integers(0, V, size=rng.integers(1, 30)) for _ in range(20)]
    model = fit_ngram(docs, order, V)
    # Seen, unseen and BOS-containing histories.
    hists = [rng.integers(0, V + 1, size=order - 1) for _ in range(25)] + [np.full(order - 1, V)]
    for h in hists:
        win = np.column_stack([np.tile(h, (V, 1)), np.arange(V)]) if order > 1 else np.arange(V)[:, None]
        p = prob(model, win)
        assert np.all(p > 0)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def _direct_kn(docs, order, V, D, hist, w):
    """The documented interpolated Kneser–Ney, written out with dictionaries."""
    grams = [Counter() for _ in range(order + 1)]
    padded = [[V] * (order - 1) + list(map(int, d)) for d in docs]
    tops = Counter(tuple(p[i:i + order]) for p in padded for i in range(len(p) - order + 1))
    grams[order] = tops
    for k in range(order - 1, 0, -1):  # continuation counts from the distinct (k+1)-grams
        grams[k] = Counter(g[1:] for g in grams[k + 1])
    p = 1.0 / V
    for k in range(1, order + 1):
        h = tuple(hist[len(hist) - (k - 1):]) if k > 1 else ()
        follow = defaultdict(int)
        for g, c in grams[k].items():
            if g[:-1] == h:
                follow[g[-1]] += c
        tot = sum(follow.values())
        if tot:
            p = max(follow.get(w, 0) - D, 0) / tot + D * len(follow) / tot * p
    return p


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_direct_dictionary_implementation(order):
    rng = np.random.default_rng(10 + order)
    V = 6
    docs = [rng.integers(0, V, size=rng.integers(2, 15)) for _ in range(12)]
    model = fit_ngram(docs, order, V, discount=0.6)
    for _ in range(30):
        hist = list(rng.integers(0, V, size=order - 1))
        if order == 3 and rng.random() < 0.3:
            hist[0] = V  # start-of-document history
        w = int(rng.integers(V))
        got = prob(model, np.array([hist + [w]]))[0]
        assert got == pytest.approx(_direct_kn(docs, order, V, 0.6, hist, w), rel=1e-12)


def test_bigram_recovers_markov_chain_and_beats_unigram():
    rng = np.random.default_rng(0)
    V = 20
    train, trans = _markov_docs(rng, V, 200, 400)
    t = [0]  # a held-out document from the same chain
    r2 = np.random.default_rng(5)
    for _ in range(3000):
        t.append(int(r2.choice(V, p=trans[t[-1]])))
    ts = TS("markov", "lm", (Example("doc", (tuple(t),), (1,)),))
    true_nll = -np.mean(np.log(trans[t[:-1], t[1:]]))
    losses = {o: score_test_set(fit_ngram(train, o, V), ts)["loss"].iloc[0] for o in (1, 2, 3)}
    assert losses[2] < losses[1] - 0.5  # the chain is far from memoryless
    assert losses[2] == pytest.approx(true_nll, abs=0.05)  # 80k tokens: close to the entropy rate
    assert losses[3] == pytest.approx(losses[2], abs=0.1)  # no extra information in a second token


def test_score_test_set_columns_and_choice_accuracy():
    V = 5
    docs = [np.array([0, 1, 2, 3, 4] * 20)]
    model = fit_ngram(docs, 2, V)
    ts = TS("choice", "choice", (
        Example("a", ((0, 1, 2), (0, 3, 3)), (1, 1), label=0),  # the seen continuation is correct
        Example("b", ((0, 1, 2), (0, 3, 3)), (1, 1), label=1),  # labelled the unlikely one
    ))
    df = score_test_set(model, ts)
    assert list(df.columns) == ["example_id", "n_pred_tokens", "loss_sum", "loss", "correct"]
    assert df["correct"].tolist() == [1.0, 0.0]
    assert df["n_pred_tokens"].tolist() == [2, 2]
    np.testing.assert_allclose(df["loss"], df["loss_sum"] / df["n_pred_tokens"])
    direct = -np.log(prob(model, np.array([[0, 1], [1, 2]]))).sum()
    assert df["loss_sum"].iloc[0] == pytest.approx(direct)
    lm = score_test_set(model, TS("lm", "lm", (Example("c", ((1, 2, 3, 4),), (2,)),)))
    assert lm["correct"].isna().all() and lm["n_pred_tokens"].iloc[0] == 2


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 9, size=50) for _ in range(5)]
    model = fit_ngram(docs, 3, 9)
    save_ngram(model, tmp_path / "tri.npz")
    back = load_ngram(tmp_path / "tri.npz")
    win = rng.integers(0, 9, size=(40, 3))
    np.testing.assert_array_equal(prob(model, win), prob(back, win))
    assert back.order == 3 and back.vocab_size == 9 and back.params == 0 and back.flops == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="order"):
        fit_ngram([np.array([1, 2])], 4, 5)
    with pytest.raises(DataError, match="vocab_size"):
        fit_ngram([np.array([1, 7])], 2, 5)
    with pytest.raises(DataError, match="no tokens"):
        fit_ngram([np.array([], dtype=int)], 2, 5)
    model = fit_ngram([np.array([0, 1, 2])], 2, 3)
    with pytest.raises(DataError, match="vocabulary"):
        score_test_set(model, TS("x", "lm", (Example("e", ((0, 9),), (1,)),)))

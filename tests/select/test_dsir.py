"""DSIR: the physics (weights equal a slow direct computation; target-like documents weigh more;
the length filter) and the ``data-selection`` 1.0.3 package as an oracle (same weights, same
top-k set, and the same Gumbel top-k set for the same seed: we draw its noise exactly as it does)."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oracles import oracle
from proxyscale.data.sources import Document
from proxyscale.errors import ConfigError, DataError
from proxyscale.select import make_selector
from proxyscale.select.dsir import (
    DSIRSelector,
    DSIRWeights,
    distribution,
    example_length,
    hash_buckets,
    hashed_counts,
    log_diff,
    log_weights,
    tokenize,
)
from proxyscale.select.pool import open_pool, read_texts, source_of

# -- a slow, obviously-correct DSIR: the paper's recipe, written out loop by loop ----------------


def direct_counts(text: str, num_buckets: int = 10_000, ngrams: int = 2) -> np.ndarray:
    toks = re.findall(r"\w+|[^\w\s]+", text.lower())
    counts = np.zeros(num_buckets, dtype=np.int64)
    for k in range(1, ngrams + 1):
        for i in range(len(toks) - k + 1):
            counts[int(hashlib.sha256(" ".join(toks[i:i + k]).encode("utf-8")).hexdigest(), 16) % num_buckets] += 1
    return counts


def direct_weights(pool: list[str], target: list[str], num_buckets: int = 10_000, ngrams: int = 2) -> np.ndarray:
    per_doc = [direct_counts(t, num_buckets, ngrams) for t in pool]
    p_t = sum(direct_counts(t, num_buckets, ngrams) for t in target)
    p_r = sum(per_doc)
    p_t, p_r = p_t / p_t.sum(), p_r / p_r.sum()
    diff = np.log(p_t + 1e-8) - np.log(p_r + 1e-8)
    return np.array([float(np.dot(c, diff)) for c in per_doc])


def as_pool(texts: list[str]):
    return lambda: iter([Document(f"d{i}", t) for i, t in enumerate(texts)])


TEXTS = ["The cat sat on the mat. The cat sat!", "", "one", "Ünïcödé façade — naïve café; x² ≥ 3", "a  b\tc\n\nd ...",
         "def f(x):\n    return x ** 2  # square", "the the the the cat"]


def test_tokenize_is_wordpunct_on_lowercased_text():
    plain = re.compile(r"\w+|[^\w\s]+")  # nltk's pattern, without our possessive speed-up
    for t in TEXTS + ["  lead and trail  ", "\n\n", "x" * 5 + " " * 10_000 + "!?"]:
        assert tokenize(t) == plain.findall(t.lower())
    assert tokenize("Hello, World!!") == ["hello", ",", "world", "!!"]


@pytest.mark.parametrize("ngrams,num_buckets", [(1, 10_000), (2, 10_000), (2, 97), (3, 1_000)])
def test_hashed_counts_equal_direct_counts(ngrams, num_buckets):
    got = hashed_counts(TEXTS, num_buckets, ngrams)
    assert got.shape == (len(TEXTS), num_buckets)
    np.testing.assert_array_equal(got, np.stack([direct_counts(t, num_buckets, ngrams) for t in TEXTS]))
    assert hash_buckets(["cat sat"], 10_000)[0] == int(hashlib.sha256(b"cat sat").hexdigest(), 16) % 10_000


def test_weights_equal_a_direct_computation():
    pool = TEXTS * 2 + ["mat cat sat " * 20]
    target = ["the cat sat on the mat", "a cat, a mat"]
    w = DSIRSelector(min_example_length=0, workers=1).weigh(as_pool(pool), target)
    np.testing.assert_allclose(w.log_weights, direct_weights(pool, target), rtol=1e-12, atol=1e-12)
    # the pure pieces compose to the same numbers
    counts = hashed_counts(pool)
    ld = log_diff(distribution(hashed_counts(target).sum(0)), distribution(counts.sum(0)))
    np.testing.assert_allclose(w.log_diff, ld, rtol=0, atol=0)
    np.testing.assert_allclose(log_weights(counts, ld), w.log_weights, rtol=1e-12, atol=1e-12)
    assert w.raw_docs_fit == len(pool) and np.array_equal(w.scores, w.log_weights)


def test_target_domain_documents_weigh_more(text_pool):
    pool, target, code_ids = text_pool
    texts = read_texts(source_of(str(target)))  # code, disjoint from the pool's code
    sel = make_selector("dsir", workers=1).select(open_pool(source_of(str(pool), id_field="id")), texts, 9, seed=0)
    per_feature = sel.scores / (2 * sel.extra["n_tokens"] - 1)  # log-weights are sums: compare per n-gram
    is_code, finite = np.array([i in code_ids for i in sel.ids]), np.isfinite(sel.scores)
    assert np.median(per_feature[is_code & finite]) > per_feature[~is_code & finite].max()
    # On chunks of equal length (as in the paper) the top-k is mostly code: > 10x the base rate of 5%.
    chunks = []
    for line in open(pool):
        rec, words = json.loads(line), json.loads(line)["text"].split()
        chunks += [Document(f"{rec['id']}/{i}", " ".join(words[i:i + 120])) for i in range(0, len(words) - 119, 120)]
    code_chunks = {d.id for d in chunks if d.id.split("/")[0] in code_ids}
    top = make_selector("dsir", workers=1, top_k=True).select(lambda: iter(chunks), texts, len(code_chunks), seed=0)
    assert len(code_chunks) / len(chunks) < 0.06 and len(set(top.chosen_ids) & code_chunks) / len(code_chunks) > 0.5
    assert sel.settings["raw_sample_cap"] == 100_000 * 10_000 and sel.extra["n_tokens"].dtype == np.int64


def test_length_filter_drops_short_documents():
    docs = ["w " * 99, "w " * 100, "w " * 101, "", "x y " * 200]
    w = DSIRSelector(workers=1).weigh(as_pool(docs), ["w x y"])
    assert w.n_tokens.tolist() == [99, 100, 101, 0, 400]
    assert np.isneginf(w.scores).tolist() == [True, False, False, True, False]  # < 100 tokens: dropped
    assert np.isfinite(w.log_weights).all()  # ... but counted in p_r and still weighed
    sel = DSIRSelector(workers=1).select(as_pool(docs), ["w x y"], 3, seed=0)
    assert sorted(sel.chosen_ids) == ["d1", "d2", "d4"]
    with pytest.raises(ConfigError, match="eligible"):
        DSIRSelector(workers=1).select(as_pool(docs), ["w x y"], 4, seed=0)
    # the package's length is (features + n(n-1)/2) // n: the token count, except for tiny docs at n ≥ 3
    assert example_length(np.array([0, 1, 2, 5]), 2).tolist() == [0, 1, 2, 5]
    assert example_length(np.array([0, 1, 2, 5]), 3).tolist() == [1, 1, 2, 5]


def test_raw_cap_uses_the_pool_prefix_like_the_package():
    pool = [f"doc {i} " + "alpha beta " * (5 + i) for i in range(30)]
    w = DSIRSelector(min_example_length=0, workers=1, raw_sample_cap=200).weigh(as_pool(pool), ["alpha gamma"])
    n_feat = np.array([2 * len(tokenize(t)) - 1 for t in pool])
    before = np.cumsum(n_feat) - n_feat  # the package adds a document, then stops once the total passes the cap
    fit = int((before <= 200).sum())
    assert 0 < fit < len(pool) and w.raw_docs_fit == fit
    p_r = distribution(sum(direct_counts(t) for t in pool[:fit]))
    np.testing.assert_allclose(w.log_diff, log_diff(distribution(direct_counts("alpha gamma")), p_r), atol=0)


def test_parallel_spilled_and_rehashed_paths_agree(text_pool, tmp_path):
    pool, target, _ = text_pool
    docs, texts = open_pool(source_of(str(pool), id_field="id")), read_texts(source_of(str(target)))
    ref = DSIRSelector(workers=1).weigh(docs, texts)
    runs = {"two workers": DSIRSelector(workers=2, batch_chars=50_000),
            "spilled to disk": DSIRSelector(workers=1, batch_chars=50_000, memory_mb=0, work_dir=str(tmp_path)),
            "re-hashed": DSIRSelector(workers=1, batch_chars=30_000, memory_mb=0)}
    for name, sel in runs.items():
        w = sel.weigh(docs, texts)
        assert w.ids == ref.ids, name
        np.testing.assert_array_equal(w.log_weights, ref.log_weights, err_msg=name)  # bit for bit
    assert list(tmp_path.iterdir()) == []  # the scratch streams are removed


def test_selection_is_seeded_and_registered(text_pool):
    pool, target, _ = text_pool
    docs, texts = open_pool(source_of(str(pool), id_field="id")), read_texts(source_of(str(target)))
    sel = make_selector("dsir", workers=1)
    a, b, c = (sel.select(docs, texts, 15, seed=s) for s in (3, 3, 4))
    assert a.chosen_ids == b.chosen_ids and a.chosen_ids != c.chosen_ids and len(set(a.chosen_ids)) == 15
    assert a.method == "dsir" and np.array_equal(a.scores, c.scores)
    with pytest.raises(ConfigError, match="num_buckets"):
        DSIRSelector(num_buckets=0)
    with pytest.raises(ConfigError, match="raw_sample_cap"):
        DSIRSelector(raw_sample_cap="all")
    with pytest.raises(DataError, match="target"):
        sel.select(docs, [], 5, seed=0)
    with pytest.raises(DataError, match="no tokens"):
        sel.select(docs, [" ", ""], 5, seed=0)


def test_gumbel_top_k_samples_in_proportion_to_the_weights(monkeypatch):
    """Gumbel top-1 picks document i with probability w_i / Σw; dropped (-inf) ones never."""
    w = np.log(np.array([1.0, 2.0, 7.0, 1.0]))
    w[3] = -np.inf
    fixed = DSIRWeights(("a", "b", "c", "d"), w, w, np.zeros(4, np.int64), np.zeros(1), 4)
    monkeypatch.setattr(DSIRSelector, "weigh", lambda self, pool, target: fixed)
    picks = np.array([DSIRSelector().select(None, ["t"], 1, seed=s).chosen[0] for s in range(4000)])
    freq = np.bincount(picks, minlength=4) / len(picks)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7, 0.0], atol=0.025)


def test_library_imports_neither_nltk_nor_the_package():
    code = "import sys, proxyscale.select.dsir; print(sorted({'nltk', 'data_selection'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the oracle: data-selection 1.0.3 on the same files -----------------------------------------


def run_package(pool: Path, target: Path, tmp: Path, **kw):
    oracle("nltk")
    ds = oracle("data_selection")
    dsir = ds.HashedNgramDSIR([str(pool)], [str(target)], cache_dir=str(tmp / "cache"), num_proc=1, **kw)
    return dsir


@pytest.mark.parametrize("ngrams,num_buckets", [(2, 10_000), (1, 500), (3, 2_048)])
def test_oracle_weights_equal_the_package(text_pool, tmp_path, ngrams, num_buckets):
    pool, target, _ = text_pool
    pkg = run_package(pool, target, tmp_path, ngrams=ngrams, num_buckets=num_buckets)
    pkg.fit_importance_estimator(num_tokens_to_fit="auto")
    pkg.compute_importance_weights()
    theirs = np.load(tmp_path / "cache" / "log_importance_weights" / "0.npy")
    lengths = np.load(tmp_path / "cache" / "perexample_metadata" / "0.npy")
    ours = DSIRSelector(num_buckets=num_buckets, ngrams=ngrams, workers=1).weigh(
        open_pool(source_of(str(pool), id_field="id")), read_texts(source_of(str(target))))
    np.testing.assert_array_equal(ours.log_diff, pkg.log_diff)
    np.testing.assert_allclose(ours.log_weights, theirs, rtol=1e-9, atol=1e-9)
    rel = np.abs(ours.log_weights - theirs) / np.maximum(np.abs(theirs), 1e-12)
    assert rel.max() < 1e-9, rel.max()
    np.testing.assert_array_equal(example_length(ours.n_tokens, ngrams), lengths)
    assert np.isneginf(ours.scores).sum() == (~pkg.perexample_metadata_filter(lengths)).sum() > 0


def test_oracle_tokenizer_agrees_with_nltk(text_pool):
    nltk_tok = oracle("nltk.tokenize")
    wpt = nltk_tok.WordPunctTokenizer()
    texts = [json.loads(line)["text"] for line in open(text_pool[0])] + TEXTS[:3] + TEXTS[4:]
    for t in texts:  # (TEXTS[3] has "x²": nltk ≥ 3.10's regex engine and re disagree on superscripts)
        assert tokenize(t) == wpt.tokenize(t.lower())


def test_oracle_raw_cap_equals_the_package(text_pool, tmp_path):
    pool, target, _ = text_pool
    pkg = run_package(pool, target, tmp_path)
    pkg.fit_importance_estimator(num_tokens_to_fit=30_000)
    ours = DSIRSelector(workers=1, raw_sample_cap=30_000).weigh(
        open_pool(source_of(str(pool), id_field="id")), read_texts(source_of(str(target))))
    assert 0 < ours.raw_docs_fit < len(ours.ids)
    np.testing.assert_array_equal(ours.log_diff, pkg.log_diff)


def test_oracle_selections_equal_the_package(text_pool, tmp_path):
    pool, target, _ = text_pool
    pkg = run_package(pool, target, tmp_path)
    pkg.fit_importance_estimator(num_tokens_to_fit="auto")
    pkg.compute_importance_weights()
    docs, texts = open_pool(source_of(str(pool), id_field="id")), read_texts(source_of(str(target)))
    n = 25

    def package_set(out: str, top_k: bool) -> set[str]:
        pkg.resample(out_dir=str(tmp_path / out), num_to_sample=n, top_k=top_k)
        return {json.loads(line)["id"] for f in (tmp_path / out).glob("*.jsonl") for line in open(f)}

    top = DSIRSelector(workers=1, top_k=True).select(docs, texts, n, seed=0)
    s = np.sort(top.scores[np.isfinite(top.scores)])[::-1]
    assert s[n - 1] > s[n]  # no tie at the boundary: the set is well defined
    assert set(top.chosen_ids) == package_set("top", True)
    for seed in (0, 1, 12345):
        np.random.seed(seed)
        theirs = package_set(f"gumbel{seed}", False)
        assert set(DSIRSelector(workers=1).select(docs, texts, n, seed=seed).chosen_ids) == theirs, seed

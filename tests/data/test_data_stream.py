"""Training streams: packing equals a brute-force reconstruction, mixtures honour their
weights by tokens, subsets and held-out splits are respected, access is random and seeded."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.data.shards import TokenShard, tokenize_to_shard, write_shard
from proxyscale.data.sources import Document
from proxyscale.data.split import HoldOut, split_documents
from proxyscale.data.stream import Component, TrainStream
from proxyscale.data.tokenizer import train_tokenizer
from proxyscale.errors import ConfigError

EOS = 0


def _shard(path, n_docs, lo, hi, min_len, max_len, seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(lo, hi, size=int(rng.integers(min_len, max_len + 1))) for _ in range(n_docs)]
    write_shard(docs, path, vocab_size=1000)
    return TokenShard.open(path)


@pytest.fixture
def shards(tmp_path):
    # disjoint token ranges identify the component each token came from
    return (_shard(tmp_path / "a", 300, 1, 100, 0, 30, 1),
            _shard(tmp_path / "b", 40, 100, 200, 50, 400, 2),
            _shard(tmp_path / "c", 25, 200, 300, 5, 60, 3))


def test_single_source_stream_equals_brute_force_packing(shards):
    a = shards[0]
    T, B = 16, 8
    s = TrainStream([Component(a)], context=T, eos_id=EOS, seed=7)
    got = np.concatenate([s.batch(i, B) for i in range(120)])  # spans several epochs
    order = s.document_order(120, B)
    assert set(order[:, 0]) == {0}
    packed = np.concatenate([np.append(a.doc(int(d)), EOS) for d in order[:, 2]])
    want = np.stack([packed[k * T: k * T + T + 1] for k in range(120 * B)])
    assert got.dtype == np.int64 and got.shape == (120 * B, T + 1)
    assert np.array_equal(got, want)
    # every epoch is a permutation of all documents, and consecutive epochs differ
    epochs = [order[order[:, 1] == e, 2] for e in range(order[:, 1].max())]
    assert len(epochs) >= 2 and all(sorted(e) == list(range(a.n_docs)) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])


def test_mixture_interleaves_each_components_own_packed_stream(shards):
    T, B, n = 8, 16, 30
    s = TrainStream([(sh, w) for sh, w in zip(shards, (1.0, 2.0, 1.0))], T, EOS, seed=9, block=32)
    X = np.concatenate([s.batch(i, B) for i in range(n)])
    order = s.document_order(n, B)
    for c, sh in enumerate(shards):
        mine = X[[s.window_source(w)[0] == c for w in range(n * B)]]
        docs = order[order[:, 0] == c, 2]
        packed = np.concatenate([np.append(sh.doc(int(d)), EOS) for d in docs])
        assert np.array_equal(mine, np.stack([packed[k * T: k * T + T + 1] for k in range(len(mine))]))


def test_same_seed_same_batches_and_random_access(shards):
    comps = [Component(shards[0], 0.5), Component(shards[1], 0.3), Component(shards[2], 0.2)]
    s1 = TrainStream(comps, 32, EOS, seed=3, block=64)
    seq = [s1.batch(i, 4) for i in range(50)]
    s2 = TrainStream(comps, 32, EOS, seed=3, block=64)
    assert np.array_equal(s2.batch(37, 4), seq[37])  # jump straight to a late batch
    assert all(np.array_equal(s2.batch(i, 4), seq[i]) for i in (0, 49, 12))
    # a different batch size reads the same window sequence
    assert np.array_equal(s2.batch(10, 8), np.concatenate(seq[20:22]))
    s3 = TrainStream(comps, 32, EOS, seed=4, block=64)
    assert not np.array_equal(s3.batch(0, 4), seq[0])


def test_mixture_weights_are_honoured_by_tokens(shards):
    w = np.array([0.2, 0.5, 0.3])
    s = TrainStream([Component(sh, wt) for sh, wt in zip(shards, w)], 32, EOS, seed=11, block=256)
    X = np.concatenate([s.batch(i, 64) for i in range(40)])[:, 1:]  # the predicted tokens, each once
    X = X[X != EOS]
    frac_windows = s.windows_per_component(40 * 64) / (40 * 64)
    assert np.allclose(frac_windows, w, atol=1 / 256)
    # token counts by origin, corrected for each source's share of EOS tokens per window
    counts = np.array([((X >= lo) & (X < lo + 100)).sum() for lo in (0, 100, 200)], dtype=float)
    non_eos = np.array([sh.n_tokens / (sh.n_tokens + sh.n_docs) for sh in shards])
    est = counts / non_eos
    assert np.allclose(est / est.sum(), w, atol=0.02)
    summary = s.order_summary(40, 64)
    assert [round(c["weight"], 6) for c in summary["components"]] == w.tolist()
    assert summary["components"][2]["epochs"] > 1  # the small source was repeated


def test_subsets_are_respected(shards, tmp_path):
    a = shards[0]
    subset = np.arange(0, a.n_docs, 3)
    # give every document a unique marker token so a leak would be visible
    marked = [np.append(a.doc(i), 500 + i) for i in range(a.n_docs)]
    write_shard(marked, tmp_path / "m", vocab_size=1000)
    m = TokenShard.open(tmp_path / "m")
    s = TrainStream([Component(m, 1.0, subset)], 16, EOS, seed=5)
    X = np.concatenate([s.batch(i, 16) for i in range(80)])
    seen = {int(t) - 500 for t in np.unique(X) if 500 <= t < 500 + a.n_docs}
    assert seen == set(subset.tolist())  # every subset document, and only those
    assert set(s.document_order(80, 16)[:, 2]) == set(subset.tolist())


def test_held_out_documents_never_reach_the_stream(tmp_path):
    texts = [f"record {i}: marker{i:04d} then filler words about item {i}" for i in range(400)]
    docs = [Document(f"doc{i}", t) for i, t in enumerate(texts)]
    tok = train_tokenizer(texts, 600)
    train, held = split_documents(docs, "toy", HoldOut(0.2))
    assert len(held) > 40
    tokenize_to_shard(train, tok, tmp_path / "s")
    sh = TokenShard.open(tmp_path / "s")
    s = TrainStream([(sh, 1.0)], 32, tok.eos_id, seed=1)
    n_batches = 40
    text = tok.decode(np.concatenate([s.batch(i, 32)[:, 1:].ravel() for i in range(n_batches)]).tolist())
    held_markers = {f"marker{int(d.id[3:]):04d}" for d in held}
    assert not any(mk in text for mk in held_markers)
    assert sum(f"marker{int(d.id[3:]):04d}" in text for d in train) > 0.9 * len(train)
    ids = sh.doc_ids()
    assert not {ids[i] for i in s.document_order(n_batches, 32)[:, 2]} & {d.id for d in held}


def test_saved_order_and_tuple_components(shards, tmp_path):
    s = TrainStream([(shards[0], 1.0, None), (shards[2], 2.0)], 16, EOS, seed=2)
    s.save_order(tmp_path / "order.npy", 10, 8)
    saved = np.load(tmp_path / "order.npy", allow_pickle=False)
    assert saved.dtype == np.int64 and np.array_equal(saved, s.document_order(10, 8))
    s.save_order(tmp_path / "epoch0.npy")
    first = np.load(tmp_path / "epoch0.npy", allow_pickle=False)
    assert len(first) == shards[0].n_docs + shards[2].n_docs and (first[:, 1] == 0).all()


def test_bad_streams_are_config_errors(shards):
    with pytest.raises(ConfigError, match="weights must be positive"):
        TrainStream([Component(shards[0], 0.0)], 8, EOS, 0)
    with pytest.raises(ConfigError, match="empty document subset"):
        TrainStream([Component(shards[0], 1.0, np.array([], dtype=np.int64))], 8, EOS, 0)
    with pytest.raises(ConfigError, match="out of range"):
        TrainStream([Component(shards[0], 1.0, np.array([10_000]))], 8, EOS, 0)
    with pytest.raises(ConfigError, match="at least one component"):
        TrainStream([], 8, EOS, 0)

"""Selection methods through one protocol: random and the classifier (scikit-learn), the CLI,
byte-identical reruns, and clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from proxyscale.errors import ConfigError
from proxyscale.select import SELECTORS, make_selector
from proxyscale.select.base import top_n
from proxyscale.select.pool import open_pool, read_texts, source_of
from proxyscale.store import read_table


def test_top_n_breaks_ties_by_a_seeded_hash_not_by_order():
    ids = [f"d{i}" for i in range(50)]
    scores = np.zeros(50)
    scores[7] = 1.0
    a = top_n(scores, 10, ids, seed=3)
    b = top_n(scores[::-1].copy(), 10, ids[::-1], seed=3)
    assert a[0] == 7 and [ids[i] for i in a] == [ids[::-1][i] for i in b]  # same documents, either order
    assert set(top_n(scores, 10, ids, seed=4).tolist()) != set(a.tolist())  # the seed decides ties
    with pytest.raises(ConfigError, match="eligible"):
        top_n(np.full(5, -np.inf), 1, ids[:5], 0)


def test_random_is_uniform_seeded_and_order_free(text_pool):
    pool, target, _ = text_pool
    docs = open_pool(source_of(str(pool), id_field="id"))
    sel = make_selector("random").select(docs, [], 20, seed=1)
    assert len(set(sel.chosen_ids)) == 20
    again = make_selector("random").select(docs, [], 20, seed=1)
    assert sel.chosen_ids == again.chosen_ids
    assert sel.chosen_ids != make_selector("random").select(docs, [], 20, seed=2).chosen_ids
    # uniform: over many seeds every document is chosen about n/N of the time
    counts = {}
    for s in range(200):
        for i in make_selector("random").select(docs, [], 20, seed=s).chosen_ids:
            counts[i] = counts.get(i, 0) + 1
    n_pool = len(sel.ids)
    freq = np.array([counts.get(i, 0) for i in sel.ids]) / 200
    assert abs(freq.mean() - 20 / n_pool) < 1e-9 and freq.std() < 0.06


def test_classifier_finds_target_like_documents(text_pool):
    pool, target, code_ids = text_pool
    docs = open_pool(source_of(str(pool), id_field="id"))
    texts = read_texts(source_of(str(target)))
    sel = make_selector("classifier").select(docs, texts, len(code_ids), seed=0)
    hit = len(set(sel.chosen_ids) & code_ids) / len(code_ids)
    base_rate = len(code_ids) / len(sel.ids)  # ≈ 0.1: what random would get
    assert hit >= 0.75 and base_rate < 0.15, (hit, base_rate)  # code targets pick the pool's code, not its prose
    p = sel.extra["p_target"]
    assert np.all((p >= 0) & (p <= 1)) and np.allclose(sel.scores, np.log(p))
    # GPT-3's rule keeps a document when pareto(α) > 1 − P(target): high scores mostly, some others
    pareto = make_selector("classifier", pareto_alpha=1.0).select(docs, texts, 5, seed=0)
    kept = pareto.extra["eligible"]
    assert kept[pareto.chosen].all() and p[kept].mean() > p[~kept].mean()
    with pytest.raises(ConfigError, match="did you mean 'pareto_alpha'"):
        make_selector("classifier", pareto_alfa=9)


def test_cli_selection_is_byte_identical_and_complete(text_pool, tmp_path):
    pool, target, code_ids = text_pool
    args = ["--pool", str(pool), "--target", str(target), "--n", "10", "--id-field", "id", "--seed", "5"]
    outs = []
    for k in range(2):
        res = subprocess.run([sys.executable, "-m", "proxyscale.cli", "select", "--method", "classifier", *args,
                              "--out", str(tmp_path / f"o{k}")], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append(tmp_path / f"o{k}")
    for f in ("chosen.txt", "scores.parquet"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    man, again = (json.loads((o / "manifest.json").read_text()) for o in outs)
    for m in (man, again):  # only the wall times and the command line (its --out) may differ
        assert set(m.pop("seconds")) >= {"reading", "featurising", "scoring"}
        assert m.pop("command")[:3] == ["proxyscale", "select", "--method"]
    assert man == again
    assert man["method"] == "classifier" and man["seed"] == 5 and man["n"] == 10
    assert len(man["pool"]["sha256"]) == 64 and man["target"]["n"] > 0
    table = read_table(outs[0] / "scores.parquet")
    chosen = (outs[0] / "chosen.txt").read_text().split()
    ranked = table[table["selected"]].sort_values("rank")
    assert table["selected"].sum() == 10 and list(ranked["id"]) == chosen


@pytest.mark.parametrize("extra, message", [
    (["--method", "dsdmm"], "unknown selection method 'dsdmm'"),
    (["--method", "random", "--n", "100000"], "exceeds the"),
    (["--method", "random", "--set", "top_k"], "write KEY=VALUE"),
    (["--method", "random", "--pool", "/nonexistent/pool"], "no such file"),
])
def test_cli_bad_input_is_one_line(text_pool, tmp_path, extra, message):
    pool, target, _ = text_pool
    base = {"--pool": str(pool), "--target": str(target), "--n": "3", "--out": str(tmp_path / "o")}
    for i in range(0, len(extra), 2):
        if extra[i] in base:
            base[extra[i]] = extra[i + 1]
    argv = [a for kv in base.items() for a in kv] + [a for i in range(0, len(extra), 2) if extra[i] not in
                                                     ("--pool", "--n") for a in extra[i:i + 2]]
    res = subprocess.run([sys.executable, "-m", "proxyscale.cli", "select", *argv], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "o").exists()


def test_the_registry_holds_the_methods():
    assert {"random", "dsir", "classifier", "dsdm", "bot-dsdm"} <= set(SELECTORS.names())
    with pytest.raises(ConfigError, match="did you mean 'dsir'"):
        make_selector("dsri")


def test_pools_from_parquet_and_text_directories(text_pool, tmp_path):
    """The same documents as JSONL, Parquet or a directory of text files select the same way."""
    import pandas as pd

    pool, target, _ = text_pool
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "pool.parquet")
    (tmp_path / "docs").mkdir()
    for r in rows:
        (tmp_path / "docs" / f"{r['id']}.txt").write_text(r["text"])
    texts = read_texts(source_of(str(target)))
    picks = []
    for path, id_field in ((pool, "id"), (tmp_path / "pool.parquet", "id"), (tmp_path / "docs", None)):
        docs = open_pool(source_of(str(path), id_field=id_field))
        sel = make_selector("classifier").select(docs, texts, 5, seed=0)
        picks.append(sorted(i.rsplit("/", 1)[-1].removesuffix(".txt") for i in sel.chosen_ids))
    assert picks[0] == picks[1] == picks[2], picks

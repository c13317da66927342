"""The selection-transfer study end to end on tiny settings: pool, targets with a decontaminated
holdout, DsDm proxies at two scales, every method, references on each selection, analysis and
report; plus its spec's errors."""
from __future__ import annotations

import re

import numpy as np
import pytest

from proxyscale.analyze.io import read_analysis
from proxyscale.api import plan_text, run_study
from proxyscale.errors import ConfigError
from proxyscale.store import Store
from proxyscale.studies import load_study

SPEC = """
name: tiny-select
kind: selection
context: 32
heldout_fraction: 0.2
tokenizer: {{vocab_size: 320, sample_bytes: 300000}}
sources:
  prose: {{kind: local, path: {root}/prose, txt_unit: file}}
  code: {{kind: local, path: {root}/code, txt_unit: file}}
  doc: {{kind: local, path: {root}/docstrings.jsonl}}
pool: {{sources: {{prose: 1, code: 1, doc: 1}}, n_windows: 900}}
targets:
  lastword: {{kind: cloze, sources: [prose], n_target: 5, n_holdout: 8}}
proxies:
  - {{name: L1d2, d_model: 2, n_layers: 1}}
  - {{name: L1d4, d_model: 4, n_layers: 1}}
reference: {{name: L1d8, d_model: 8, n_layers: 1}}
tokens_per_param: 2
reference_seeds: [0, 1]
random_budgets: [0.5, 1.0, 2.0]
dsdm: {{models: 2, k: 32, batch_size: 64}}
dsir: {{min_example_length: 5}}
train: {{batch_size: 8, lr: 0.01, warmup_frac: 0.1}}
n_boot: 200
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, text_sources):
    root = tmp_path_factory.mktemp("sel")
    path = root / "sel.yaml"
    path.write_text(SPEC.format(root=text_sources))
    report = run_study(path, root / "store", workers=2, progress=False)
    study, spec = load_study(path)
    analysis = Store(root / "store").final_dir(study.analysis_step(study.plan(spec)).key)
    return path, report, read_analysis(analysis, kind="selection"), spec


def test_every_method_is_trained_on_and_reported(finished):
    path, report, a, spec = finished
    h = a.tables["holdout"]
    methods = {(r.method, r.proxy, r.budget) for r in h.itertuples()}
    assert {("random", "", 0.5), ("random", "", 1.0), ("random", "", 2.0), ("dsir", "", 1.0),
            ("classifier", "", 1.0), ("dsdm", "L1d2", 1.0), ("dsdm", "L1d4", 1.0), ("bot-dsdm", "L1d4", 1.0)} <= methods
    assert (h["ci_low"] <= h["loss"]).all() and (h["loss"] <= h["ci_high"]).all()
    base = h[(h["method"] == "random") & (h["budget"] == 1.0)].iloc[0]
    assert base["minus_random"] == 0.0
    # more random data at a fixed model lowers the loss: the multiplier's fit has a negative slope
    rand = h[h["method"] == "random"].sort_values("budget")
    assert rand["loss"].iloc[-1] < rand["loss"].iloc[0]
    assert len(a.tables["multiplier"]) and len(a.tables["overlap"]) and len(a.tables["smallest_proxy"])
    assert all(len(s) == 2 for s in h["seed_losses"])  # two reference seeds per selection
    html = report.read_text()
    assert "Selection across scale" in html and "bot-dsdm" in html
    assert "beat random" in html and "training compute" in html  # the verdict leads each target
    mult = a.tables["multiplier"]
    assert (mult["multiplier_low"] <= mult["multiplier_high"]).all()


def _grams(text: str, n: int = 13) -> tuple[int, set[tuple[str, ...]]]:
    """Word n-grams (plain tuples, no hashing) of lower-cased runs of letters and digits; an
    example shorter than n words is one gram of its whole text (the rule of select/leakage.py)."""
    w = re.findall(r"\w+", text.lower())
    m = min(n, len(w))
    return m, {tuple(w[i:i + m]) for i in range(len(w) - m + 1)} if m else set()


def _shares_text(text: str, corpus_grams: dict[int, set[tuple[str, ...]]]) -> bool:
    m, g = _grams(text)
    return bool(m and g & corpus_grams[m])


def _all_grams(texts: list[str], sizes: set[int]) -> dict[int, set[tuple[str, ...]]]:
    out: dict[int, set[tuple[str, ...]]] = {m: set() for m in sizes}
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        for m in sizes:
            out[m].update(tuple(w[i:i + m]) for i in range(len(w) - m + 1))
    return out


def test_holdout_shares_no_13_gram_with_the_pool_or_the_target(finished):
    """Recomputed here from the stored tokens: no holdout example shares a 13-gram (its whole text,
    if shorter) with any pool window (decoded from windows.npy, every token a model trains on) or
    any target example; and the step dropped exactly the candidates that do, no more."""
    from proxyscale.data.testset import read_test_set
    from proxyscale.data.tokenizer import load_tokenizer
    from proxyscale.seeding import np_rng

    path, _, a, spec = finished
    store = Store(path.parent / "store")
    steps = {s.config["part"]: s for s in load_study(path)[0].plan(spec).of_kind("target_part")
             if s.name.startswith("lastword-")}
    hold_step = steps["holdout"]
    tok = load_tokenizer(store.final_dir(hold_step.inputs["tokenizer"]) / "tokenizer.json")
    text = lambda e: tok.decode(list(e.candidates[e.label]))  # noqa: E731 - the example's correct text
    full = read_test_set(store.final_dir(hold_step.inputs["testset"]) / "test.parquet").examples
    target = read_test_set(store.final_dir(steps["target"].key) / "test.parquet").examples
    held = read_test_set(store.final_dir(hold_step.key) / "test.parquet").examples
    windows = np.load(store.final_dir(hold_step.inputs["pool"]) / "windows.npy")
    assert len(windows) == spec.pool.n_windows and len(target) == 5
    c = hold_step.config
    order = np_rng(c["seed"], "split").permutation(len(full))
    candidates = [full[i] for i in sorted(order[c["n_target"]:c["n_target"] + c["n_holdout"]])]
    assert not {e.example_id for e in held} & {e.example_id for e in target}
    sizes = {_grams(text(e))[0] for e in candidates} - {0}
    pool_grams = _all_grams([tok.decode(w.tolist()) for w in windows], sizes)
    target_grams = _all_grams([text(e) for e in target], sizes)
    leaked = [e.example_id for e in candidates if _shares_text(text(e), pool_grams) or
              _shares_text(text(e), target_grams)]
    assert not any(_shares_text(text(e), pool_grams) or _shares_text(text(e), target_grams) for e in held)
    assert [e.example_id for e in held] == [e.example_id for e in candidates if e.example_id not in leaked]
    hold = a.meta["holdouts"]["lastword"]
    assert (hold["n_before"], hold["n"]) == (len(candidates), len(held)) and "13-gram" in hold["check"]


def test_selections_have_the_budget_and_distinct_windows(finished, tmp_path):
    path, _, a, spec = finished
    study = load_study(path)[0]
    plan = study.plan(spec)
    store = Store(path.parent / "store")
    sels = plan.of_kind("select_windows")
    ref_windows = next(s for s in a.meta["selections"].values())
    for s in sels:
        chosen = np.load(store.final_dir(s.key) / "chosen.npy")
        assert len(chosen) == s.config["n"] and len(set(chosen.tolist())) == len(chosen)
    assert ref_windows["n"] > 0
    assert "selection study 'tiny-select'" in plan_text(path)


def test_spec_errors_are_clear(tmp_path):
    import yaml

    data = yaml.safe_load(SPEC.format(root=tmp_path))
    (tmp_path / "prose").mkdir()
    (tmp_path / "code").mkdir()
    (tmp_path / "docstrings.jsonl").write_text("")
    for change, msg in [({"methods": ["random", "dsdmm"]}, "did you mean 'dsdm'"),
                        ({"methods": ["dsir"]}, "keep it"),
                        ({"pool": {"sources": {"prose": 1, "cod": 1}, "n_windows": 900}}, "did you mean 'code'"),
                        ({"reference_seeds": [0]}, "at least two seeds"),
                        ({"pool": {"sources": {"prose": 1}, "n_windows": 50}}, "grow")]:
        with pytest.raises(ConfigError, match=msg):
            load_study({**data, **change})

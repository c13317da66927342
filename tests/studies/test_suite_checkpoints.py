"""A checkpoint suite gives the native study's answer: a tiny scaling study (3 distributions × 2
rungs) is run, its models exported with `proxyscale export`, and the exported folders analysed
as a suite through the CLI; both summaries must agree on every column both compute, on lm,
cloze and choice test sets. On a qa test set they cannot: a qa prompt starts at its document's
start, which the native evaluator marks with the end-of-text token, a token without text; the
suite re-tokenizes the example's text as lm-eval does and adds a prefix token only to an empty
context, so where the prompt was not cut from the left the model sees one token less. The suite's
per-example losses there are checked against the native model scored without that token."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from proxyscale.api import export_model, run_study
from proxyscale.store import Store, read_table
from proxyscale.studies import load_study

SOURCES = {"prose": {"kind": "local", "path": "{root}/prose", "txt_unit": "file"},
           "code": {"kind": "local", "path": "{root}/code", "txt_unit": "file"},
           "doc": {"kind": "local", "path": "{root}/docstrings.jsonl", "id_field": "id", "title_field": "id"}}
COMMON = {
    "seed": 3, "context": 64, "heldout_fraction": 0.2,
    "tokenizer": {"vocab_size": 300, "sample_bytes": 100_000},
    "distributions": {"prose": {"prose": 1}, "code": {"code": 1}, "mix": {"prose": 1, "code": 1}},
    "test_sets": {"text": {"kind": "lm", "sources": ["prose", "code"], "n_examples": 16},
                  "pick": {"kind": "choice", "sources": ["prose"], "n_examples": 12},
                  "gap": {"kind": "cloze", "sources": ["prose"], "n_examples": 12},
                  "define": {"kind": "qa", "sources": ["doc"], "n_examples": 12}},
    "analysis": {"n_boot": 30, "ngram_orders": [1]},
    "executor": {"workers": 1},
}
NATIVE = {"name": "native", **COMMON, "train": {"batch_size": 8, "lr": 0.01},
          "ladder": {"tokens_per_param": 2, "reference": "L1d16",
                     "rungs": [{"name": "L1d8", "d_model": 8, "n_layers": 1},
                               {"name": "L1d16", "d_model": 16, "n_layers": 1, "n_heads": 2}]}}


def _cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _summary(store, kind):
    step = next(p for p in (store / "steps" / kind).glob("[!.]*"))
    return read_table(step / "summary.parquet")


@pytest.fixture(scope="module")
def both(tmp_path_factory, text_sources):
    """(native summary, suite summary, suite report text, store, suite spec path)."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("suite-ckpt")
    sources = {k: {**v, "path": v["path"].format(root=text_sources)} for k, v in SOURCES.items()}
    native = {**NATIVE, "sources": sources}
    store = root / "store"
    run_study(native, store, workers=1, progress=False)
    _, spec = load_study(native)
    from proxyscale.studies.scaling.plan import rung_budget

    models = []
    for step in sorted((store / "steps" / "train").glob("[!.]*")):
        dist, rung, _ = step.name.rsplit("-", 1)[0].rsplit("-", 2)
        out = root / "hf" / f"{dist}-{rung}"
        if not models:  # one through the real CLI, the rest through the library
            r = _cli("export", step.name.rsplit("-", 1)[0], "--store", str(store), "--out", str(out), cwd=root)
            assert r.returncode == 0, r.stderr
        else:
            export_model(f"train/{step.name}", store, out)
        b = rung_budget(spec, spec.rung(rung))
        models.append({"name": f"{dist}-{rung}", "distribution": dist, "scale": rung, "seed": 0,
                       "params": b.params, "train_tokens": b.tokens, "reference": rung == "L1d16",
                       "checkpoint": str(out)})
    suite = {"kind": "suite", "name": "exported", **COMMON, "sources": sources, "models": models}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    r = _cli("run", "suite.yaml", "--store", str(store), "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr
    report = (store / "exported" / "report.md").read_text()
    return _summary(store, "analyze"), _summary(store, "suite_analyze"), report, store, root


def test_same_answer_both_ways(both):
    native, suite = (s.sort_values(["test_set", "model"]).reset_index(drop=True) for s in both[:2])
    assert list(native["model"]) == list(suite["model"]) and list(native["test_set"]) == list(suite["test_set"])
    assert set(native["model"]) == {"L1d8", "unigram"}
    assert set(native["test_set"]) == {"text", "pick", "gap", "define"}
    native, suite = (s[s["test_set"] != "define"].reset_index(drop=True) for s in (native, suite))  # see below
    common = [c for c in native.columns if c in suite.columns]
    assert {"r2", "decision_accuracy", "partial_r", "r2_lo", "spearman"} <= set(common)
    for c in common:
        if pd.api.types.is_numeric_dtype(native[c]) and not pd.api.types.is_bool_dtype(native[c]):
            np.testing.assert_allclose(suite[c].astype(float), native[c].astype(float), rtol=1e-4, atol=1e-6,
                                       equal_nan=True, err_msg=c)
        else:
            assert list(suite[c]) == list(native[c]), c
    assert native["r2"].notna().all() and native["r2"].between(0, 1).all()


def test_qa_differs_by_the_document_start_token_only(both):
    """Per example of the qa test set: the suite's loss is the native model's on the same tokens
    where the prompt was cut from the left, and the native model's without the leading
    end-of-text token where it starts at the document's start (both kinds occur here)."""
    from proxyscale.data.testset import Example, TestSet, read_test_set
    from proxyscale.data.tokenizer import load_tokenizer
    from proxyscale.evaluate.lm import evaluate_lm
    from proxyscale.models.gpt import load_gpt

    *_, store, _root = both
    steps = store / "steps"
    ts = read_test_set(next((steps / "testset").glob("define-*")) / "test.parquet")
    eos = load_tokenizer(next((steps / "tokenizer").glob("[!.]*")) / "tokenizer.json").eos_id
    model = load_gpt(next((steps / "train").glob("prose-L1d16-*")))
    native = evaluate_lm(model, ts)
    at_start = np.array([e.candidates[0][0] == eos for e in ts.examples])
    assert 0 < at_start.sum() < len(at_start)
    cut = TestSet(ts.name, ts.kind, tuple(Example(e.example_id, tuple(c[1:] for c in e.candidates),
                                                  tuple(p - 1 for p in e.pred_start), e.label, e.context_text, e.texts)
                                          for e in ts.examples))
    without = evaluate_lm(model, cut)
    suite = read_table(next((steps / "suite_eval").glob("prose-L1d16-*")) / "define.parquet")
    assert list(suite["example_id"]) == [e.example_id for e in ts.examples]
    want = np.where(at_start, without["loss_sum"], native["loss_sum"])
    np.testing.assert_allclose(suite["loss_sum"], want, rtol=1e-5)
    assert np.abs(suite["loss_sum"] - native["loss_sum"])[at_start].min() > 1e-3  # the token matters


def test_report_and_rerun(both):
    *_, report, store, root = both
    assert "Suite models" in report and "checkpoint, evaluated per example here" in report
    assert "n-gram control is absent" not in report  # the distributions list their sources
    evals = sorted(Store(store).root.joinpath("steps", "suite_eval").glob("[!.]*"))
    assert len(evals) == 6
    before = {p.name: (p / "_step.json").stat().st_mtime_ns for p in evals}
    r = _cli("run", "suite.yaml", "--store", str(store), "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr
    assert {p.name: (p / "_step.json").stat().st_mtime_ns for p in evals} == before  # nothing re-evaluated

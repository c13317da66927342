"""A checkpoint suite gives the native study's answer: a tiny scaling study (3 distributions × 2
rungs) is run, its models exported with `proxyscale export`, and the exported folders analysed
as a suite through the CLI; both summaries must agree on every column both compute, on lm,
cloze and choice test sets. On a qa test set they cannot: a qa prompt starts at its document's
start, which the native evaluator marks with the end-of-text token, a token without text; the
suite re-tokenizes the example's text as lm-eval does and adds a prefix token only to an empty
context, so where the prompt was not cut from the left the model sees one token less. The suite's
per-example losses there are checked against the native model scored without that token. With
`evaluation: {document_start: prefix}` the suite adds the prefix token before such prompts too,
and then gives the native answer on qa as well (the same store runs the suite both ways; only
the evaluations and the analysis run again)."""
from __future__ import annotations

import json
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


def _summary(store, kind, name="*"):
    step = next(p for p in (store / "steps" / kind).glob(f"{name}-*"))
    return read_table(step / "summary.parquet")


def _evals(store, document_start):
    """The suite_eval step directories run with ``document_start`` (the default is not in the config)."""
    out = []
    for p in sorted((store / "steps" / "suite_eval").glob("[!.]*")):
        cfg = json.loads((p / "_step.json").read_text())["config"]
        if cfg.get("document_start", "lm_eval") == document_start:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory, text_sources):
    """(native summary, suite summary, suite report text, store, work folder, summary of the suite
    run with `document_start: prefix`)."""
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
    prefixed = {**suite, "name": "exported-prefix", "evaluation": {"document_start": "prefix"}}
    (root / "suite-prefix.yaml").write_text(yaml.safe_dump(prefixed, sort_keys=False))
    r = _cli("run", "suite-prefix.yaml", "--store", str(store), "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr
    return (_summary(store, "analyze"), _summary(store, "suite_analyze", "exported"), report, store, root,
            _summary(store, "suite_analyze", "exported-prefix"))


def _same_summary(native, suite, test_sets):
    """Every column both summaries compute agrees on ``test_sets`` (rtol 1e-4)."""
    native, suite = (s.sort_values(["test_set", "model"]).reset_index(drop=True) for s in (native, suite))
    assert list(native["model"]) == list(suite["model"]) and list(native["test_set"]) == list(suite["test_set"])
    assert set(native["model"]) == {"L1d8", "unigram"}
    assert set(native["test_set"]) == {"text", "pick", "gap", "define"}
    native, suite = (s[s["test_set"].isin(test_sets)].reset_index(drop=True) for s in (native, suite))
    assert sorted(set(native["test_set"])) == sorted(test_sets)
    common = [c for c in native.columns if c in suite.columns]
    assert {"r2", "decision_accuracy", "partial_r", "r2_lo", "spearman"} <= set(common)
    for c in common:
        if pd.api.types.is_numeric_dtype(native[c]) and not pd.api.types.is_bool_dtype(native[c]):
            np.testing.assert_allclose(suite[c].astype(float), native[c].astype(float), rtol=1e-4, atol=1e-6,
                                       equal_nan=True, err_msg=c)
        else:
            assert list(suite[c]) == list(native[c]), c
    assert native["r2"].notna().all() and native["r2"].between(0, 1).all()


def test_same_answer_both_ways(both):
    _same_summary(both[0], both[1], ["text", "pick", "gap"])  # not on qa by default: see below


def test_same_answer_on_qa_with_the_document_start_prefix(both):
    """With `document_start: prefix` the suite gives the native summary on every test set, qa too."""
    _same_summary(both[0], both[5], ["text", "pick", "gap", "define"])


def test_qa_differs_by_the_document_start_token_only(both):
    """Per example of the qa test set: the suite's loss is the native model's on the same tokens
    where the prompt was cut from the left, and the native model's without the leading
    end-of-text token where it starts at the document's start (both kinds occur here)."""
    from proxyscale.data.testset import Example, TestSet, read_test_set
    from proxyscale.data.tokenizer import load_tokenizer
    from proxyscale.evaluate.lm import evaluate_lm
    from proxyscale.models.gpt import load_gpt

    store = both[3]
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
    default, prefix = (read_table(next(p for p in _evals(store, rule) if p.name.startswith("prose-L1d16-"))
                                  / "define.parquet") for rule in ("lm_eval", "prefix"))
    assert list(default["example_id"]) == list(prefix["example_id"]) == [e.example_id for e in ts.examples]
    want = np.where(at_start, without["loss_sum"], native["loss_sum"])
    np.testing.assert_allclose(default["loss_sum"], want, rtol=1e-5)
    assert np.abs(default["loss_sum"] - native["loss_sum"])[at_start].min() > 1e-3  # the token matters
    # `document_start: prefix`: the native loss on every example, those at the document start included
    np.testing.assert_allclose(prefix["loss_sum"], native["loss_sum"], rtol=1e-5)
    np.testing.assert_allclose(prefix["loss"], native["loss"], rtol=1e-5)
    assert np.abs(prefix["loss_sum"] - default["loss_sum"])[at_start].min() > 1e-3
    np.testing.assert_allclose(prefix["loss_sum"][~at_start], default["loss_sum"][~at_start], rtol=1e-6)


def test_report_and_rerun(both):
    report, store, root = both[2:5]
    assert "Suite models" in report and "checkpoint, evaluated per example here" in report
    assert "n-gram control is absent" not in report  # the distributions list their sources
    evals = sorted(Store(store).root.joinpath("steps", "suite_eval").glob("[!.]*"))
    assert len(evals) == 12 and len(_evals(store, "lm_eval")) == len(_evals(store, "prefix")) == 6
    for p in _evals(store, "lm_eval"):  # the default is left out of the key: older stores keep theirs
        assert "document_start" not in json.loads((p / "_step.json").read_text())["config"]
    before = {p.name: (p / "_step.json").stat().st_mtime_ns for p in evals}
    r = _cli("run", "suite.yaml", "--store", str(store), "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr
    assert {p.name: (p / "_step.json").stat().st_mtime_ns for p in evals} == before  # nothing re-evaluated

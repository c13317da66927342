"""data/lmeval.py on sample logs laid out as lm-eval 0.4.x writes them (results_<ts>.json and
samples_<task>_<ts>.jsonl, responses as strings): values per document and every refusal."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from proxyscale.data.lmeval import read_lmeval
from proxyscale.errors import DataError

STAMP = "2025-01-02T03-04-05.000001"


def _mc_sample(doc_id: int, lls: list[float], gold: int, choices: list[str], **metrics) -> dict:
    return {"doc_id": doc_id, "doc": {"q": f"question {doc_id}", "key": f"k{doc_id}"}, "target": str(gold),
            "arguments": {f"gen_args_{i}": {"arg_0": "Q:", "arg_1": c} for i, c in enumerate(choices)},
            "resps": [[[str(v), "False"]] for v in lls], "filtered_resps": [[str(v), "False"] for v in lls],
            "filter": "none", "metrics": sorted(metrics), "doc_hash": f"h{doc_id}", **metrics}


def _write_run(root, task="mc", output_type="multiple_choice", samples=None, version=1.0, n_shot=0):
    root.mkdir(parents=True, exist_ok=True)
    results = {"results": {task: {}}, "versions": {task: version}, "n-shot": {task: n_shot},
               "configs": {task: {"task": task, "output_type": output_type, "num_fewshot": n_shot}}}
    (root / f"results_{STAMP}.json").write_text(json.dumps(results))
    (root / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples or []))
    return root


MC = [_mc_sample(0, [-3.0, -1.0, -2.0], 1, [" a", " bb", " ccc"], acc=1.0, acc_norm=0.0),
      _mc_sample(1, [-5.0, -4.0], 0, [" é", " xyz"], acc=0.0, acc_norm=1.0)]


def test_multiple_choice_values(tmp_path):
    t = read_lmeval({"m1": _write_run(tmp_path / "m1", samples=MC)}, "mc")
    assert list(t.columns) == ["model", "test_set", "example_id", "loss_sum", "bytes", "bpb", "correct_prob",
                               "accuracy", "acc_norm"]
    assert list(t.example_id) == ["mc/0", "mc/1"] and set(t.model) == {"m1"} and set(t.test_set) == {"mc"}
    assert list(t.loss_sum) == [1.0, 5.0]
    assert list(t.bytes) == [3.0, 3.0]  # " bb"; " é" is 3 UTF-8 bytes
    assert t.bpb[0] == pytest.approx(1.0 / (math.log(2) * 3))
    p0 = np.exp([-3.0, -1.0, -2.0])
    assert t.correct_prob[0] == pytest.approx(p0[1] / p0.sum())
    assert t.correct_prob[1] == pytest.approx(math.exp(-5) / (math.exp(-5) + math.exp(-4)))
    assert list(t.accuracy) == [1.0, 0.0] and list(t.acc_norm) == [0.0, 1.0]  # as logged


def test_loglikelihood_and_ids_from_a_doc_field(tmp_path):
    s = {"doc_id": 3, "doc": {"key": "doc-3"}, "target": " end", "doc_hash": "h",
         "arguments": {"gen_args_0": {"arg_0": "The", "arg_1": " end"}}, "resps": [[["-2.5", "True"]]],
         "filtered_resps": [["-2.5", "True"]], "acc": 1}
    run = _write_run(tmp_path / "r", task="ll", output_type="loglikelihood", samples=[s])
    row = read_lmeval({"m": run}, "ll", id_field="key").iloc[0]
    assert row.example_id == "doc-3" and row.loss_sum == 2.5 and row.bytes == 4.0 and row.accuracy == 1.0
    assert math.isnan(row.correct_prob) and math.isnan(row.acc_norm)


def _refused(tmp_path, runs, task="mc", **kw) -> str:
    with pytest.raises(DataError) as info:
        read_lmeval(runs, task, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_refusals(tmp_path):
    a = _write_run(tmp_path / "a", samples=MC)
    msg = _refused(tmp_path, {"a": a, "b": _write_run(tmp_path / "b", samples=MC[:1])})
    assert "documents differ across models" in msg and "a has 2 documents, b has 1" in msg
    changed = [MC[0], {**MC[1], "doc_hash": "other"}]
    assert "document 1 differs between a and c" in _refused(tmp_path, {"a": a, "c": _write_run(tmp_path / "c",
                                                                                               samples=changed)})
    msg = _refused(tmp_path, {"a": a, "d": _write_run(tmp_path / "d", samples=MC, version=2.0)})
    assert "task version differs across models (a: 1.0, d: 2.0)" in msg
    msg = _refused(tmp_path, {"a": a, "e": _write_run(tmp_path / "e", samples=MC, n_shot=5)})
    assert "num_fewshot differs across models (a: 0, e: 5)" in msg
    gen = _write_run(tmp_path / "g", task="gen", output_type="generate_until", samples=[])
    assert "generate_until" in _refused(tmp_path, {"g": gen}, task="gen")
    assert "no task 'other'" in _refused(tmp_path, {"a": a}, task="other")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / f"results_{STAMP}.json").write_text((a / f"results_{STAMP}.json").read_text())
    assert "--log_samples" in _refused(tmp_path, {"h": tmp_path / "h"})
    bad = _write_run(tmp_path / "i", samples=MC)
    (bad / f"samples_mc_{STAMP}.jsonl").write_text('{"doc_id": 0}\nnot json\n')
    assert f"samples_mc_{STAMP}.jsonl:2: not a JSON line" in _refused(tmp_path, {"i": bad})
    assert "no field 'nope'" in _refused(tmp_path, {"a": a}, id_field="nope")

"""Suites through the real CLI: a results-table suite with known truth, an lm-eval samples suite
with values checked by hand, and `proxyscale suite init`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from proxyscale.analyze.correlate import analyze_study
from proxyscale.analyze.synthetic import SyntheticModel, make_synthetic_study
from proxyscale.store import read_table

STAMP = "2025-01-02T03-04-05.000001"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def _summary(store):
    step = next(p for p in (store / "steps" / "suite_analyze").glob("[!.]*"))
    return read_table(step / "summary.parquet").sort_values(["test_set", "model"]).reset_index(drop=True)


MODELS = (SyntheticModel("S", "neural", 10_000, 3.0), SyntheticModel("M", "neural", 40_000, 0.2),
          SyntheticModel("L", "neural", 160_000, 0.05))


def test_results_table_suite_matches_the_analysis_of_its_truth(tmp_path):
    res, models, dists, tests = make_synthetic_study(np.random.default_rng(1), n_dist=5, n_examples=5, models=MODELS)
    res = res.assign(loss=res["loss"] + 3.0)  # the synthetic losses may dip below zero; real ones may not
    res["name"] = res["distribution"] + "-" + res["model"] + "-s" + res["seed"].astype(str)
    res[["name", "test_set", "example_id", "loss"]].rename(columns={"name": "model"}).to_csv(tmp_path / "r.csv")
    info = models.set_index("model")
    spec = {"kind": "suite", "name": "syn", "analysis": {"n_boot": 20},
            "test_sets": {t: {"kind": k, **({"source": s} if isinstance(s, str) else {})}
                          for t, k, s in tests.itertuples(index=False)},
            "models": [{"name": f"{d}-{m}-s{s}", "distribution": d, "scale": m, "seed": int(s),
                        "params": int(info.at[m, "params"]), "train_tokens": int(info.at[m, "train_tokens"]),
                        "reference": m == "L", "results": "r.csv"}
                       for (d, m, s), _ in res.groupby(["distribution", "model", "seed"])]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("run", "suite.yaml", "--store", "st", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _summary(tmp_path / "st")
    truth = analyze_study(res, models, dists.assign(sources=[[] for _ in range(len(dists))]), tests, seed=0,
                          n_boot=20)["summary"].sort_values(["test_set", "model"]).reset_index(drop=True)
    assert list(got["model"]) == list(truth["model"]) == ["M", "S"] * 3
    for c in ("r2", "decision_accuracy", "spearman", "compute_ratio", "r2_lo", "r2_hi"):
        np.testing.assert_allclose(got[c], truth[c], rtol=1e-9, err_msg=c)
    # the less distorted proxy ranks the distributions more like the reference
    assert got[got.model == "M"]["r2"].mean() > got[got.model == "S"]["r2"].mean() + 0.2
    report = (tmp_path / "st" / "syn" / "report.md").read_text()
    assert "The n-gram control is absent" in report and "per-example results table" in report


def _write_lmeval(root, lls_of, version=1.0, task="mc"):
    """One lm-eval run (results + samples) of a 3-choice task; ``lls_of(doc)`` the choices' log-likelihoods."""
    root.mkdir(parents=True)
    results = {"results": {task: {}}, "versions": {task: version}, "n-shot": {task: 0},
               "configs": {task: {"task": task, "output_type": "multiple_choice", "num_fewshot": 0}}}
    (root / f"results_{STAMP}.json").write_text(json.dumps(results))
    lines = []
    for doc in range(4):
        lls = lls_of(doc)
        lines.append(json.dumps({
            "doc_id": doc, "doc": {"q": f"q{doc}"}, "target": "0", "doc_hash": f"h{doc}",
            "arguments": {f"gen_args_{i}": {"arg_0": "Q:", "arg_1": c} for i, c in enumerate([" a", " bb", " c"])},
            "resps": [[[str(v), "False"]] for v in lls], "filtered_resps": [[str(v), "False"] for v in lls]}))
    (root / f"samples_{task}_{STAMP}.jsonl").write_text("\n".join(lines) + "\n")


def _gold_ll(dist: int, scale: int, doc: int) -> float:
    return -1.0 - 0.5 * dist * (1 + 0.3 * scale) - 0.1 * doc - 0.05 * (dist * doc % 3)


def test_samples_suite_values_by_hand(tmp_path):
    models = []
    for d in range(4):
        for s, size in enumerate((1000, 8000)):
            _write_lmeval(tmp_path / "logs" / f"d{d}-s{s}", lambda doc, d=d, s=s: [_gold_ll(d, s, doc), -2.0, -3.0])
            models.append({"name": f"d{d}-s{s}", "distribution": f"d{d}", "scale": f"p{size}", "seed": 0,
                           "params": size, "train_tokens": 20 * size, "reference": s == 1,
                           "samples": str(tmp_path / "logs" / f"d{d}-s{s}" / "results_*.json")})
    spec = {"kind": "suite", "name": "lmeval", "models": models, "test_sets": {"mc": {"task": "mc", "kind": "choice"}},
            "analysis": {"n_boot": 20, "metric": "correct_prob"}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("run", "suite.yaml", "--store", "st", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _summary(tmp_path / "st")
    assert list(got["model"]) == ["p1000"] and list(got["test_set"]) == ["mc"]

    def mean_prob(d, s):
        ps = [np.exp(_gold_ll(d, s, k)) / (np.exp(_gold_ll(d, s, k)) + np.exp(-2.0) + np.exp(-3.0)) for k in range(4)]
        return float(np.mean(ps))
    x = np.array([mean_prob(d, 0) for d in range(4)])
    y = np.array([mean_prob(d, 1) for d in range(4)])
    assert got["r2"].iloc[0] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)
    assert got["decision_accuracy"].iloc[0] == 1.0  # both rank the distributions d0 > d1 > d2 > d3
    results = read_table(next((tmp_path / "st" / "steps" / "suite_analyze").glob("[!.]*")) / "results.parquet")
    assert np.isnan(results["loss"]).all() and results["bpb"].gt(0).all()  # logs carry no token counts
    # the default metric, per-token loss, is one the logs do not have: one line says so
    spec["analysis"].pop("metric")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("plan", "suite.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no loss (lm-eval logs carry no token counts)" in r.stderr


def test_suite_init_lists_checkpoints_and_runs(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    ckpt = tmp_path / "models" / "web-60M"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    safetensors.save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)},
                          str(ckpt / "model.safetensors"))
    _write_lmeval(tmp_path / "models" / "evals" / "code-1B", lambda doc: [-1.0, -2.0, -3.0], task="hellaswag")
    r = _cli("suite", "init", "models", "--out", "suite.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "suite.yaml").read_text()
    spec = yaml.safe_load(text)
    by_name = {m["name"]: m for m in spec["models"]}
    assert set(by_name) == {"web-60M", "evals-code-1B"}
    assert by_name["web-60M"]["params"] == 17 and by_name["web-60M"]["checkpoint"] == str(ckpt)
    assert by_name["web-60M"]["distribution"] == "FILL-ME" and by_name["evals-code-1B"]["params"] == "FILL-ME"
    assert by_name["evals-code-1B"]["samples"].endswith("evals/code-1B/results_*.json")
    assert spec["test_sets"]["hellaswag"] == {"task": "hellaswag"} and spec["kind"] == "suite"
    assert (tmp_path / "suite.yaml.proxyscale-output.json").is_file()  # written through the output policy
    r = _cli("plan", "suite.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("still FILL-ME; fill in every FILL-ME field `suite init` left")
    again = _cli("suite", "init", "models", "--out", "suite.yaml", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1  # an earlier output needs --overwrite
    assert _cli("suite", "init", "models", "--out", "suite.yaml", "--overwrite", cwd=tmp_path).returncode == 0

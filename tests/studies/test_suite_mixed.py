"""Suites through the real CLI with evidence of several kinds: checkpoints beside lm-eval sample
logs in one suite, and several task test sets read from each model's one lm-eval run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from proxyscale.store import read_table

STAMP = "2025-01-02T03-04-05.000001"
CHOICES = (" a", " bb", " c")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def _analysis_dir(store):
    return next((store / "steps" / "suite_analyze").glob("[!.]*"))


def _summary(store):
    table = read_table(_analysis_dir(store) / "summary.parquet")
    return table.sort_values(["test_set", "model"]).reset_index(drop=True)


def _write_run(root, tasks):
    """One lm-eval run (a results file and one samples file per task) of several tasks; ``tasks``:
    task -> (output_type, per document the log-likelihood of each request, gold first)."""
    root.mkdir(parents=True)
    results = {"results": {t: {} for t in tasks}, "versions": {t: 1.0 for t in tasks},
               "n-shot": {t: 0 for t in tasks},
               "configs": {t: {"task": t, "output_type": ot, "num_fewshot": 0} for t, (ot, _) in tasks.items()}}
    (root / f"results_{STAMP}.json").write_text(json.dumps(results))
    for task, (_, docs) in tasks.items():
        lines = []
        for doc, lls in enumerate(docs):
            conts = CHOICES[: len(lls)]
            lines.append(json.dumps({
                "doc_id": doc, "doc": {"q": f"q{doc}"}, "target": "0", "doc_hash": f"h{doc}",
                "arguments": {f"gen_args_{i}": {"arg_0": "Q:", "arg_1": c} for i, c in enumerate(conts)},
                "resps": [[[str(v), "False"]] for v in lls], "filtered_resps": [[str(v), "False"] for v in lls]}))
        (root / f"samples_{task}_{STAMP}.jsonl").write_text("\n".join(lines) + "\n")


def _gold(task: int, dist: int, scale: int, doc: int) -> float:
    """The gold choice's log-likelihood: lower for later distributions, differently per task."""
    return -1.0 - 0.4 * dist * (1 + 0.3 * scale + 0.2 * task) - 0.1 * doc - 0.07 * ((dist + task) * doc % 3)


def _choice_docs(task: int, dist: int, scale: int, n_docs: int = 4) -> list[list[float]]:
    return [[_gold(task, dist, scale, k), -2.0, -3.0] for k in range(n_docs)]


def _mean_prob(docs: list[list[float]]) -> float:
    return float(np.mean([np.exp(d[0]) / np.exp(d).sum() for d in docs]))


def _r2(x, y) -> float:
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def _samples_model(root, name, dist, scale, size, tasks):
    _write_run(root / "logs" / name, tasks)
    return {"name": name, "distribution": dist, "scale": scale, "seed": 0, "params": size, "train_tokens": 20 * size,
            "reference": scale == "L", "samples": str(root / "logs" / name / "results_*.json")}


def test_several_tasks_from_each_models_one_run(tmp_path):
    """Two choice tasks and a loglikelihood task in one lm-eval run per model: both choice test sets
    are analysed with their own values; the loglikelihood one has no correct-choice probability
    and is left out, by name, in the analysis and the report."""
    models, docs = [], {}
    for d in range(4):
        for s, scale in enumerate(("S", "L")):
            docs[d, s] = {t: _choice_docs(i, d, s) for i, t in enumerate(("mc", "mc2"))}
            tasks = {t: ("multiple_choice", v) for t, v in docs[d, s].items()}
            tasks["wiki"] = ("loglikelihood", [[-1.5 - 0.1 * k] for k in range(4)])
            models.append(_samples_model(tmp_path, f"d{d}-{scale}", f"d{d}", scale, 1000 * 8 ** s, tasks))
    spec = {"kind": "suite", "name": "multitask", "models": models,
            "analysis": {"n_boot": 20, "metric": "correct_prob"},
            "test_sets": {"mc": {"task": "mc", "kind": "choice"}, "mc2": {"task": "mc2", "kind": "choice"},
                          "wiki": {"task": "wiki", "kind": "cloze"}}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("run", "suite.yaml", "--store", "st", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _summary(tmp_path / "st")
    assert list(got["test_set"]) == ["mc", "mc2"] and list(got["model"]) == ["S", "S"]
    for row in got.itertuples():
        x = [_mean_prob(docs[d, 0][row.test_set]) for d in range(4)]
        y = [_mean_prob(docs[d, 1][row.test_set]) for d in range(4)]
        assert row.r2 == pytest.approx(_r2(x, y), rel=1e-9), row.test_set
    assert got["r2"].iloc[0] != pytest.approx(got["r2"].iloc[1], rel=1e-3)  # the tasks differ
    meta = json.loads((_analysis_dir(tmp_path / "st") / "analysis.json").read_text())["meta"]["suite"]
    assert meta["dropped"] == {"wiki": "no model has correct_prob on it"}
    results = read_table(_analysis_dir(tmp_path / "st") / "results.parquet")
    assert sorted(set(results["test_set"])) == ["mc", "mc2"] and len(results) == 2 * 8 * 4
    report = (tmp_path / "st" / "multitask" / "report.md").read_text()
    assert "wiki: left out (no model has correct_prob on it)" in report


def _random_checkpoint(out, tok, seed: int):
    """A random GPT (initialised wider than usual, so models differ) exported with ``tok`` as a HF folder."""
    import torch

    from proxyscale.models.gpt import GPT, GPTConfig
    from proxyscale.models.hf_export import export_hf

    cfg = GPTConfig(vocab_size=tok.vocab_size, context=128, d_model=16, n_layers=1, n_heads=2, init_std=0.1)
    return export_hf(GPT(cfg, torch.Generator().manual_seed(seed)), out, tokenizer=tok)


def test_checkpoints_and_sample_logs_in_one_suite(tmp_path, text_sources):
    """Three distributions as Hugging Face checkpoints (evaluated here on a built choice test set),
    three as lm-eval logs of a choice task, compared by bits per byte (the metric both carry):
    each test set's R² is the one of its own evidence, recomputed from the checkpoints directly and
    from the logged log-likelihoods by hand (the gold continuation ' a' is 2 bytes)."""
    pytest.importorskip("transformers")
    from proxyscale.data.testset import read_test_set
    from proxyscale.data.tokenizer import train_tokenizer
    from proxyscale.evaluate.hf import evaluate_hf

    tok = train_tokenizer((p.read_text() for p in sorted((text_sources / "prose").glob("*.txt"))[::3]), 300)
    models, ckpts, docs = [], {}, {}
    for d in range(3):
        for s, scale in enumerate(("S", "L")):
            ckpts[d, s] = _random_checkpoint(tmp_path / "hf" / f"c{d}-{scale}", tok, 10 * d + s)
            models.append({"name": f"c{d}-{scale}", "distribution": f"d{d}", "scale": scale, "seed": 0,
                           "params": 1000 * 8 ** s, "train_tokens": 20_000 * 8 ** s, "reference": scale == "L",
                           "checkpoint": str(ckpts[d, s])})
    for d in range(3, 6):
        for s, scale in enumerate(("S", "L")):
            docs[d, s] = _choice_docs(0, d, s)
            models.append(_samples_model(tmp_path, f"l{d}-{scale}", f"d{d}", scale, 1000 * 8 ** s,
                                         {"mc": ("multiple_choice", docs[d, s])}))
    spec = {"kind": "suite", "name": "mixed", "context": 64, "heldout_fraction": 0.3, "models": models,
            "sources": {"prose": {"kind": "local", "path": str(text_sources / "prose"), "txt_unit": "file"}},
            "tokenizer": {"vocab_size": 300, "sample_bytes": 100_000},
            "test_sets": {"pick": {"kind": "choice", "sources": ["prose"], "n_examples": 6},
                          "mc": {"task": "mc", "kind": "choice"}},
            "analysis": {"n_boot": 20, "metric": "bpb"}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("run", "suite.yaml", "--store", "st", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _summary(tmp_path / "st").set_index("test_set")
    assert sorted(got.index) == ["mc", "pick"] and set(got["model"]) == {"S"} and set(got["n_dist"]) == {3}
    ts = read_test_set(next((tmp_path / "st" / "steps" / "testset").glob("pick-*")) / "test.parquet")
    bpb = {k: evaluate_hf(p, ts, batch_size=16, device="cpu")["bpb"].mean() for k, p in ckpts.items()}
    x, y = [bpb[d, 0] for d in range(3)], [bpb[d, 1] for d in range(3)]
    assert len(ts) >= 4 and np.ptp(x) > 1e-3 and got.at["pick", "r2"] == pytest.approx(_r2(x, y), rel=1e-6)

    def mean_bpb(d, s):
        return float(np.mean([-doc[0] / (2 * np.log(2)) for doc in docs[d, s]]))
    x, y = [mean_bpb(d, 0) for d in range(3, 6)], [mean_bpb(d, 1) for d in range(3, 6)]
    assert got.at["mc", "r2"] == pytest.approx(_r2(x, y), rel=1e-9)
    results = read_table(_analysis_dir(tmp_path / "st") / "results.parquet")
    by_ts = results.groupby("test_set")["distribution"].unique()
    assert sorted(by_ts["pick"]) == ["d0", "d1", "d2"] and sorted(by_ts["mc"]) == ["d3", "d4", "d5"]
    report = (tmp_path / "st" / "mixed" / "report.md").read_text()
    assert "checkpoint, evaluated per example here" in report and "lm-eval sample logs" in report

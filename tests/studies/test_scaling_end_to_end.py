"""A true end-to-end study on tiny settings: spec → plan → executor → analysis → report.

Sources are real text from the Python installation written as local files (prose from the
language reference topics, stdlib code, stdlib docstrings), so the test needs no network.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from oracles import holm_by_hand
from proxyscale.api import run_study, status_text
from proxyscale.store import Store, read_json, read_table
from proxyscale.studies import load_study
from proxyscale.studies.scaling.plan import build_plan


def load_spec(path):
    return load_study(path)[1]


SPEC = """
name: tiny
context: 128
heldout_fraction: 0.2
tokenizer: {{vocab_size: 384, sample_bytes: 400000}}
sources:
  prose: {{kind: local, path: {root}/prose, txt_unit: file}}
  code: {{kind: local, path: {root}/code, txt_unit: file}}
  doc: {{kind: local, path: {root}/docstrings.jsonl}}
distributions:
  prose: {{prose: 1}}
  code: {{code: 1}}
  doc: {{doc: 1}}
  mix: {{prose: 1, code: 1, doc: 1}}
test_sets:
  mixed: {{kind: lm, sources: [prose, code, doc], n_examples: 900}}  # more than the held-out text gives
  cloze: {{kind: cloze, sources: [prose], n_examples: 20}}
  pick: {{kind: choice, sources: [prose], n_examples: 20}}
ladder:
  tokens_per_param: 2
  reference: L1d16
  proxy_seeds: [0, 1]
  reference_seeds: [0, 1]
  rungs:
    - {{name: L1d4, d_model: 4, n_layers: 1}}
    - {{name: L1d8, d_model: 8, n_layers: 1}}
    - {{name: L1d16, d_model: 16, n_layers: 1, n_heads: 2}}
train: {{batch_size: 8, lr: 0.01, warmup_frac: 0.1}}
analysis: {{n_boot: 50, ngram_orders: [1, 2]}}
"""


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, text_sources):
    root = tmp_path_factory.mktemp("e2e")
    spec_path = root / "tiny.yaml"
    spec_path.write_text(SPEC.format(root=text_sources))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        report = run_study(spec_path, root / "store", workers=2, progress=False)
    (root / "run-stderr.txt").write_text(err.getvalue())
    return spec_path, root / "store", report


def test_study_runs_end_to_end_and_reports(finished_study):
    spec_path, store_root, report = finished_study
    assert report.is_file() and (report.parent / "report.md").is_file()
    html = report.read_text()
    assert "<img" in html and "data:image/png;base64," in html and "mixed" in html and "Compute spent" in html
    for shown in ("mixture weights", "code 0.33, doc 0.33, prose 0.33", "Leave-one-distribution-out R²",
                  "Holm-adjusted", "reference ceiling", "analysis.loss: example_mean", "Robustness: one distribution"):
        assert shown in html
    spec = load_spec(spec_path)
    store = Store(store_root)
    analysis = next(s for s in build_plan(spec) if s.kind == "analyze")
    summary = read_table(store.final_dir(analysis.key) / "summary.parquet")
    neural = summary[summary["kind"] == "neural"]
    assert set(neural["test_set"]) == {"mixed", "cloze", "pick"}
    assert set(neural["model"]) == {"L1d4", "L1d8"}  # proxies only: the reference is the y-axis
    assert set(summary[summary["kind"] == "ngram"]["model"]) == {"unigram", "bigram"}
    assert neural["r2"].between(0, 1).all() and neural["compute_ratio"].gt(1).all()
    assert neural["r2_loo_min"].between(0, 1).all()
    assert neural["r2_loo_min_dist"].isin(["prose", "code", "doc", "mix"]).all()
    # the Holm family: per test set, every proxy (2 rungs below the reference, 2 n-gram orders)
    # but the best n-gram, which is the control
    family = len(spec.test_sets) * (len(spec.ladder.rungs) - 1 + len(spec.analysis.ngram_orders) - 1)
    assert family == 9 and summary["partial_p"].notna().sum() == family
    np.testing.assert_allclose(summary["partial_p_holm"], holm_by_hand(summary["partial_p"]), rtol=0, atol=1e-15)
    settings = read_table(store.final_dir(analysis.key) / "settings.parquet")
    assert int(settings["n_tests"].iloc[0]) == family
    assert f"Holm-adjusted over the {family} partial-r tests" in html
    results = read_table(store.final_dir(analysis.key) / "results.parquet")
    # every model of every distribution is scored on every example of every test set
    per = results.groupby(["test_set", "distribution", "model", "seed"]).size().unstack("test_set")
    assert per.notna().all().all() and (per.nunique() == 1).all()
    assert results["loss"].gt(0).all()


def test_finished_study_reruns_as_a_no_op(finished_study):
    spec_path, store_root, _ = finished_study
    store = Store(store_root)
    plan = build_plan(load_spec(spec_path))
    mtimes = {s.key: (store.final_dir(s.key) / "_step.json").stat().st_mtime_ns for s in plan}
    run_study(spec_path, store_root, workers=1, progress=False)
    assert all((store.final_dir(k) / "_step.json").stat().st_mtime_ns == t for k, t in mtimes.items())
    text, failed = status_text(spec_path, store_root)
    totals = next(line for line in text.splitlines() if line.split()[:1] == ["all"])  # warnings follow the table
    assert failed == 0 and f"{len(plan):>6}" in totals


def test_a_short_test_set_is_warned_about_and_reported(finished_study):
    """`mixed` asks for 900 examples, 300 per source; its held-out text gives far fewer."""
    spec_path, store_root, report = finished_study
    plan = build_plan(load_spec(spec_path))
    step = next(s for s in plan.of_kind("testset") if s.name == "mixed")
    counts = read_json(Store(store_root).final_dir(step.key) / "testset.json")
    assert counts["requested"] == 900 and 0 < counts["built"] < 900
    line = f"warning: test set 'mixed' built {counts['built']} of the 900 examples requested"
    assert line in (spec_path.parent / "run-stderr.txt").read_text()
    assert line in status_text(spec_path, store_root)[0]
    html = report.read_text()
    assert "examples built / requested" in html and f"{counts['built']} / 900 (short)" in html
    assert sum(v["built"] for v in counts["sources"].values()) == counts["built"]


def test_test_examples_are_never_trained_on(finished_study):
    """No held-out document is in any training shard (one hash decides both sides)."""
    from proxyscale.data.shards import TokenShard

    spec_path, store_root, _ = finished_study
    store = Store(store_root)
    plan = build_plan(load_spec(spec_path))
    shard_ids = set()
    for s in plan.of_kind("shard"):
        shard_ids |= {f"{s.name}/{i}" for i in TokenShard.open(store.final_dir(s.key)).doc_ids()}
    test = read_table(store.final_dir(plan.of_kind("testset")[0].key) / "test.parquet")
    assert len(test) > 0
    assert not any(eid.rsplit("/", 1)[0] in shard_ids or eid in shard_ids for eid in test["example_id"])


SELECTED = """
pool: {{sources: {{prose: 1, code: 1, doc: 1}}, n_windows: 700}}
dsdm: {{models: 2, k: 32, batch_size: 64}}
selections:
  dsdm-cloze: {{method: dsdm, target: cloze, proxy: L1d4, n_target: 8}}
  dsir-cloze: {{method: dsir, target: cloze, n_target: 8, settings: {{min_example_length: 5}}}}
  random-pool: {{method: random}}
"""


@pytest.mark.slow  # the fast form: test_same_bits.py::test_selections_join_the_ladder_as_distributions
def test_selection_induced_distributions_join_the_ladder(tmp_path, text_sources):
    """Selections as training distributions (the paper's 4 of 10): every rung trains on them, the
    analysis treats them like natural ones, and their target examples are never evaluated."""
    text = SPEC.format(root=text_sources).replace("context: 128", "context: 64") + SELECTED.format()
    spec_path = tmp_path / "sel.yaml"
    spec_path.write_text(text)
    run_study(spec_path, tmp_path / "store", workers=2, progress=False)
    spec = load_spec(spec_path)
    plan = build_plan(spec)
    store = Store(tmp_path / "store")
    analysis = next(s for s in plan if s.kind == "analyze")
    results = read_table(store.final_dir(analysis.key) / "results.parquet")
    assert {"dsdm-cloze", "dsir-cloze", "random-pool", "prose", "mix"} <= set(results["distribution"])
    target = plan.of_kind("target_part")[0]
    used = {e for e in read_table(store.final_dir(target.key) / "test.parquet")["example_id"]}
    cloze = results[results["test_set"] == "cloze"]
    assert len(used) == 8 and not cloze["example_id"].isin(used).any() and len(cloze) > 0
    # every selection has the reference's budget; each rung trains on (a prefix of) its windows
    ref = next(s for s in plan.of_kind("window_train") if s.name == "dsdm-cloze-L1d16-s0")
    n = len(np.load(store.final_dir(plan.of_kind("select_windows")[0].key) / "chosen.npy"))
    assert n == ref.config["n_steps"] * ref.config["train"]["batch_size"]


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # verify, report and re-run on hostile records: tests/store/test_store_faults.py
def test_damaged_store_is_found_reported_in_one_line_and_mended(finished_study, tmp_path):
    """Fault drills on a real study: a truncated model and a truncated analysis table. `verify`
    names both, `report` refuses in one line, `run` re-runs exactly them with the same results."""
    import shutil

    spec_path, store_root, _ = finished_study
    root = tmp_path / "store"
    shutil.copytree(store_root, root)
    plan, store = build_plan(load_spec(spec_path)), Store(root)
    train = next(s for s in plan if s.kind == "train" and store.is_done(s.key)
                 and (store.final_dir(s.key) / "model.safetensors").is_file())
    analysis = next(s for s in plan if s.kind == "analyze")
    weights, table = store.final_dir(train.key) / "model.safetensors", store.final_dir(analysis.key) / "results.parquet"
    before = read_table(table)
    weights.write_bytes(weights.read_bytes()[:-100])
    table.write_bytes(table.read_bytes()[:200])

    res = _cli("verify", spec_path, "--store", root)
    assert res.returncode == 1 and "2 damaged" in res.stdout, res.stdout + res.stderr
    assert train.key in res.stdout and analysis.key in res.stdout
    res = _cli("report", spec_path, "--store", root)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and "results.parquet" in err[0] and "Traceback" not in res.stderr

    res = _cli("run", spec_path, "--store", root, "--no-progress")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert f"re-ran {train.key}" in res.stderr and f"re-ran {analysis.key}" in res.stderr
    assert _cli("verify", spec_path, "--store", root).returncode == 0
    pd_testing = __import__("pandas").testing
    after = read_table(table).drop(columns=[c for c in before if "wall" in c])
    # a re-run on other threads (or outside its batch) may differ in the last bits, not more
    pd_testing.assert_frame_equal(before.drop(columns=[c for c in before if "wall" in c]), after, rtol=1e-3)

"""The selection-transfer study end to end on tiny settings: pool, targets with a decontaminated
holdout, DsDm proxies at two scales, every method, references on each selection, analysis and
report; plus its spec's errors."""
from __future__ import annotations

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


def test_holdout_is_disjoint_and_checked(finished):
    _, _, a, _ = finished
    hold = a.meta["holdouts"]["lastword"]
    dropped = hold["n_before"] - hold["n"]
    assert hold["n"] >= 2 and max(hold["dropped_in_pool"], hold["dropped_in_target"]) <= dropped
    assert dropped <= hold["dropped_in_pool"] + hold["dropped_in_target"]
    assert "13-gram" in hold["check"]


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

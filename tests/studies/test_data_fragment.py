"""The data fragment: the tokenizer never sees a test-only source; a test-only source enters
only the steps that read it; every test set records requested vs built; a store that does not
exist is an error for status and report."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxyscale.api import DEMO_SPEC
from proxyscale.errors import ConfigError
from proxyscale.run.plan import Plan
from proxyscale.run.step import StepContext, resolve
from proxyscale.store import read_json
from proxyscale.studies import load_study
from proxyscale.studies.fragments import data as frag
from proxyscale.studies.fragments.data import CorpusSpec, TokenizerSpec, add_data, shortfalls

PROBE = "zqxvbkw"  # a string no training text contains


def _keys_by_kind(plan: Plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in plan:
        out.setdefault(s.kind, set()).add(s.key)
    return out


def test_a_test_only_source_changes_only_its_test_sets_and_their_readers():
    """The demo study, with the never-trained-on `kernel` source's max_docs changed."""
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    study, spec = load_study(copy.deepcopy(raw))
    raw["sources"]["kernel"]["max_docs"] = 50
    _, changed_spec = load_study(raw)
    before, after = study.plan(spec), study.plan(changed_spec)
    b, a = _keys_by_kind(before), _keys_by_kind(after)
    assert set(b) == set(a)
    changed = {kind for kind in b if b[kind] != a[kind]}
    # eval and ngram steps read every test set, the analysis reads every eval: nothing else moves
    assert changed == {"testset", "eval", "ngram", "analyze"}, changed
    for kind in ("corpus", "tokenizer", "shard", "train", "pool_windows", "window_train", "dsdm_scores",
                 "select_windows", "target_part"):
        assert b[kind] == a[kind], kind
    moved = {before[k].config["name"] for k in b["testset"] - a["testset"]}
    assert moved == {"mixed-lm", "unseen-kernel"}  # the two test sets that read kernel
    tok = before.of_kind("tokenizer")[0]
    assert "kernel" not in tok.config["sources"]
    assert sorted(tok.config["sources"]) == sorted(raw["distributions"]["uniform-mix"])


def test_explicit_tokenizer_sources_are_checked_and_used():
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["tokenizer"]["sources"] = ["fortunes", "kernl"]
    with pytest.raises(ConfigError, match="tokenizer.sources: unknown source 'kernl'.*did you mean 'kernel'"):
        load_study(copy.deepcopy(raw))
    raw["tokenizer"]["sources"] = ["fortunes", "kernel"]
    study, spec = load_study(raw)
    tok = study.plan(spec).of_kind("tokenizer")[0]
    assert sorted(tok.config["sources"]) == ["fortunes", "kernel"]
    with pytest.raises(ConfigError, match="tokenizer.sources is empty"):
        TokenizerSpec(sources=())


# ------------------------------------------------------------------ running the data steps
@pytest.fixture(scope="module")
def local_sources(tmp_path_factory, text_sources) -> dict[str, dict]:
    """Training text (prose, code) and a test-only source full of a string no training text has."""
    root = tmp_path_factory.mktemp("probe")
    lines = [json.dumps({"id": f"p{i}", "text": " ".join([PROBE] * 40 + [f"{PROBE}{PROBE}"] * 20)})
             for i in range(60)]
    (root / "probe.jsonl").write_text("\n".join(lines) + "\n")
    return {"prose": {"kind": "local", "path": str(text_sources / "prose"), "txt_unit": "file"},
            "code": {"kind": "local", "path": str(text_sources / "code"), "txt_unit": "file"},
            "probe": {"kind": "local", "path": str(root / "probe.jsonl")}}


def _run_data(plan: Plan, root: Path) -> dict[str, Path]:
    """Run every step of a data-only plan in order (as the worker would); returns key → directory."""
    dirs: dict[str, Path] = {}
    for i, step in enumerate(plan):
        out = root / f"{i:02d}"
        out.mkdir(parents=True)
        resolve(step.fn)(StepContext(step.key, step.kind, step.name, step.config,
                                     {r: dirs[k] for r, k in step.inputs.items()}, out))
        dirs[step.key] = out
    return dirs


def _vocab(tok_dir: Path) -> set[str]:
    return set(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])


def _data_plan(sources, tokenizer: TokenizerSpec, test_sets):
    plan = Plan()
    keys = add_data(plan, sources=sources, used=["code", "prose"], test_sets=test_sets, tokenizer=tokenizer,
                    corpus=CorpusSpec(), seed=0, heldout_fraction=0.3, test_context=64)
    return plan, keys


def test_test_only_text_does_not_shape_the_vocabulary(local_sources, tmp_path):
    tests = {"unseen": frag.TestSetSpec(kind="lm", sources=("probe",), n_examples=10)}
    plan, keys = _data_plan(local_sources, TokenizerSpec(vocab_size=400, sample_bytes=200_000), tests)
    assert "corpus" not in {s.kind for s in plan}  # local sources only: no corpus step
    dirs = _run_data(plan, tmp_path / "default")
    vocab = _vocab(dirs[keys.tokenizer])
    assert not any(PROBE[:3] in t for t in vocab)
    assert read_json(dirs[keys.tokenizer] / "tokenizer_info.json")["sources"] == ["code", "prose"]
    # control: naming the test-only source fits the vocabulary to it (so the check above can fail)
    plan, keys = _data_plan(local_sources, TokenizerSpec(vocab_size=400, sample_bytes=200_000,
                                                         sources=("code", "probe", "prose")), {})
    leaky = _vocab(_run_data(plan, tmp_path / "leaky")[keys.tokenizer])
    assert any(PROBE in t for t in leaky)


def test_test_sets_record_requested_vs_built(local_sources, tmp_path):
    tests = {"short": frag.TestSetSpec(kind="lm", sources=("probe", "prose"), n_examples=100_001),
             "even": frag.TestSetSpec(kind="lm", sources=("code", "prose"), n_examples=20),
             "full": frag.TestSetSpec(kind="lm", sources=("prose",), n_examples=5)}
    plan, keys = _data_plan(local_sources, TokenizerSpec(vocab_size=300, sample_bytes=100_000), tests)
    dirs = _run_data(plan, tmp_path)
    c = {t: read_json(dirs[keys.tests[t]] / "testset.json") for t in tests}
    assert c["full"]["requested"] == c["full"]["built"] == c["full"]["n_examples"] == 5
    # probe is read by no training step: every one of its 60 documents is a test example; prose
    # is trained on: only its held-out documents are
    assert c["short"]["requested"] == 100_001 and c["short"]["sources"]["probe"] == {"available": 60, "built": 60}
    prose = c["short"]["sources"]["prose"]["built"]
    assert 0 < prose < 120 and c["short"]["built"] == 60 + prose
    # code holds out fewer documents than half of 20: prose makes up the difference
    even = c["even"]["sources"]
    assert c["even"]["built"] == 20 and even["code"]["built"] == even["code"]["available"] < 10
    assert even["prose"]["built"] == 20 - even["code"]["built"]
    lines = shortfalls(c)
    assert lines == [f"test set 'short' built {60 + prose} of the 100001 examples requested (all its sources give: "
                     f"probe: 60, prose: {prose}); add documents (max_docs, heldout_fraction) or ask for fewer"]


@pytest.mark.parametrize("n, available, expected", [
    (10, [100, 100, 100], [4, 3, 3]), (10, [1, 100, 100], [1, 5, 4]), (10, [1, 2, 3], [1, 2, 3]),
    (2, [5, 5, 5], [1, 1, 0]), (7, [0, 3, 9], [0, 3, 4]), (0, [4], [0]),
])
def test_allocate_is_even_up_to_what_each_source_has(n, available, expected):
    from proxyscale.data.tasks import allocate

    got = allocate(n, available)
    assert got == expected and sum(got) == min(n, sum(available))
    assert all(0 <= g <= a for g, a in zip(got, available))


# ------------------------------------------------------------------ a store that does not exist
@pytest.mark.parametrize("command", ["status", "report"])
def test_status_and_report_on_a_missing_store_fail_in_one_line(tmp_path, command):
    missing = tmp_path / "no-such-store"
    r = subprocess.run([sys.executable, "-m", "proxyscale.cli", command, str(DEMO_SPEC), "--store", str(missing)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert f"no run store at {missing}" in r.stderr and "pending" not in r.stdout
    assert not missing.exists()  # reading never creates a store
    (tmp_path / "not-a-store").mkdir()
    r = subprocess.run([sys.executable, "-m", "proxyscale.cli", command, str(DEMO_SPEC), "--store",
                        str(tmp_path / "not-a-store")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is not a proxyscale run store" in r.stderr

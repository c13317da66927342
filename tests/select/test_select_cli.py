"""`proxyscale select` as a daily tool, through the real CLI: the chosen documents written to train
on, counts or fractions for --n, the methods listed from the registry, progress bars, warnings
that name their setting, a complete manifest, the user's umask, and a selection read back as a
study source."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oracles import oracle
from proxyscale.errors import ConfigError
from proxyscale.select import SELECTORS
from proxyscale.select.base import parse_n, resolve_n
from proxyscale.select.checks import BIAS_RHO, UNEVEN_CV, length_bias, spearman
from proxyscale.select.methods import defaults_of, settings_of
from proxyscale.store import read_table


def _cli(*args: str, cwd: Path | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, preexec_fn=pre)


def _select(pool: Path, target: Path, out: Path, *extra: str, method: str = "random", n: str = "4",
            **kw) -> subprocess.CompletedProcess:
    return _cli("select", "--method", method, "--pool", str(pool), "--target", str(target), "--n", n,
                "--out", str(out), "--id-field", "id", *extra, **kw)


def _pool_rows(pool: Path) -> list[dict]:
    return [json.loads(line) for line in pool.read_text().splitlines()]


def test_n_is_a_count_or_a_fraction():
    assert parse_n("300") == 300 and parse_n("0.2") == 0.2 and parse_n("1.0") == 1.0 and parse_n(7) == 7
    assert resolve_n(0.2, 1420) == 284 and resolve_n(1.0, 88) == 88 and resolve_n(0.001, 100) == 1
    assert resolve_n(0.25, 10) == 3 and resolve_n(300, 1420) == 300  # 2.5 rounds half up; a count stays
    for bad, said in (("1.5", "must lie in (0, 1]"), ("0.0", "must lie in (0, 1]"), ("-0.2", "must lie in (0, 1]"),
                      ("0", "at least one"), ("-3", "at least one"), ("abc", "not a number"), ("nan", "(0, 1]")):
        with pytest.raises(ConfigError) as e:
            parse_n(bad, "--n")
        assert str(e.value).startswith("--n ") and said in str(e.value) and "e.g. 0.2" in str(e.value), e.value


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_write_gives_the_chosen_documents_in_pool_order(text_pool, tmp_path, fmt):
    pool, target, _ = text_pool
    r = _select(pool, target, tmp_path / "sel", "--write", fmt, n="0.25", umask=0o022)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "sel"
    rows = _pool_rows(pool)
    chosen = (out / "chosen.txt").read_text().split()
    assert len(chosen) == 22  # 0.25 × 88 documents
    docs = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()] if fmt == "jsonl" else \
        pd.read_parquet(out / "selected.parquet").to_dict("records")
    table = read_table(out / "scores.parquet").set_index("id")
    assert [d["id"] for d in docs] == [r["id"] for r in rows if r["id"] in set(chosen)]  # pool order
    texts = {r["id"]: r["text"] for r in rows}
    for d in docs:
        assert d["text"] == texts[d["id"]] and d["score"] == table.loc[d["id"], "score"]
        assert d["rank"] == chosen.index(d["id"]) == table.loc[d["id"], "rank"]
    marker = json.loads((out / ".proxyscale-output.json").read_text())
    name = f"selected.{fmt}"
    assert marker["files"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    man = json.loads((out / "manifest.json").read_text())
    assert man["files"] == ["chosen.txt", "scores.parquet", name, "manifest.json"] and man["write"] == fmt
    assert (man["n"], man["n_requested"]) == (22, 0.25) and man["seconds"]["writing"] >= 0


def test_list_methods_and_help_come_from_the_registry():
    listed = _cli("select", "--list-methods")
    helped = _cli("select", "--help", "--no-progress")
    assert listed.returncode == 0 and helped.returncode == 0, listed.stderr + helped.stderr
    assert set(SELECTORS.names()) >= {"random", "dsir", "classifier", "dsdm", "bot-dsdm"}
    for method in SELECTORS.names():
        assert f"\n{method}: " in "\n" + listed.stdout and f" {method}: " in helped.stdout, method
        for f in settings_of(method):
            line = f"--set {f.name}=…  ({f.type}, default {f.default!r})"
            assert line in listed.stdout and line in helped.stdout, line
    assert "lr=…  (float, default 0.003)" in listed.stdout and "tokenizer_bytes" in listed.stdout


def test_progress_bars_each_phase_and_no_progress_is_silent(text_pool, tmp_path):
    pool, target, _ = text_pool
    shown = _select(pool, target, tmp_path / "a", "--progress", "--write", "jsonl", method="classifier")
    assert shown.returncode == 0, shown.stderr
    for name in ("reading", "featurising", "scoring", "writing"):
        assert f"{name:<18}: 100%|" in shown.stderr, name  # each bar reached its end, with an ETA column
    assert "<00:00" in shown.stderr
    quiet = _select(pool, target, tmp_path / "b", "--no-progress", "--write", "jsonl", method="classifier")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert (tmp_path / "a" / "selected.jsonl").read_bytes() == (tmp_path / "b" / "selected.jsonl").read_bytes()


def test_length_bias_is_spearman_on_uneven_lengths():
    lengths = np.array([10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120], dtype=float)
    bias = length_bias(-np.log(lengths), lengths)  # longer, lower: rank correlation exactly -1
    assert bias == {"rho": -1.0, "cv": round(float(lengths.std() / lengths.mean()), 4), "n": 10}
    assert bias["cv"] > UNEVEN_CV and abs(bias["rho"]) >= BIAS_RHO
    scipy = oracle("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50).round(1)  # ties share ranks, as in scipy
    assert spearman(a, b) == pytest.approx(scipy.spearmanr(a, b).statistic, abs=1e-12)
    assert length_bias(np.r_[np.full(5, -np.inf), np.arange(9.0)], np.arange(14.0) + 1) is None  # 9 < 10 scored


def _uneven_pool(root: Path) -> tuple[Path, Path]:
    """60 documents of 20 to 1,200 words (a third under 100 tokens) and a target of their words."""
    from pydoc_data.topics import topics

    words = " ".join(v for _, v in sorted(topics.items())[:40]).split()
    rows = [{"id": f"d{i}", "text": " ".join(words[i * 50: i * 50 + 20 * (i + 1)])} for i in range(60)]
    root.mkdir()
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "target.jsonl").write_text("".join(json.dumps({"text": " ".join(words[k:k + 300])}) + "\n"
                                               for k in (100, 5000, 9000)))
    return root / "pool.jsonl", root / "target.jsonl"


def test_dsir_warns_with_counts_and_the_setting(tmp_path):
    from proxyscale.select.dsir import example_length, tokenize

    pool, target = _uneven_pool(tmp_path / "data")
    r = _select(pool, target, tmp_path / "sel", "--set", "num_buckets=512", method="dsir", n="10")
    assert r.returncode == 0, r.stderr
    rows = _pool_rows(pool)
    short = sum(example_length(np.array([len(tokenize(x["text"]))]), 2)[0] < 100 for x in rows)
    assert 0 < short < 30
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (f"warning: dsir: {short} of 60 pool documents are shorter than min_example_length=100 "
                        "tokens and were excluded (score -inf, never chosen); --set min_example_length=N lowers "
                        "the bar (0 keeps every document)")
    table = read_table(tmp_path / "sel" / "scores.parquet")
    ok = np.isfinite(table["score"])
    rho = spearman(table["score"][ok].to_numpy(), np.array([len(x["text"]) for x in rows])[ok.to_numpy()])
    assert rho < -BIAS_RHO and len(lines) == 2  # sums of negative log ratios: longer, lower
    assert lines[1].startswith(f"warning: dsir: scores follow document length (Spearman ρ = {rho:+.2f} ")
    assert "favours short documents" in lines[1]
    man = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert [f"warning: {w}" for w in man["warnings"]] == lines
    assert man["diagnostics"]["length_bias"]["rho"] == pytest.approx(rho, abs=1e-4)
    # more than the eligible documents: the error names the setting and the counts
    r = _select(pool, target, tmp_path / "more", "--set", "num_buckets=512", method="dsir", n=str(60 - short + 1))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "more").exists()
    assert r.stderr.startswith(f"error: dsir: n={61 - short} but only {60 - short} documents are eligible: {short} of "
                               "60 pool documents are shorter than min_example_length=100 tokens; lower n or the "
                               "setting min_example_length (--set min_example_length=N")


def test_equal_lengths_give_no_length_warning(tmp_path):
    from pydoc_data.topics import topics

    words = " ".join(v for _, v in sorted(topics.items())[:40]).split()
    root = tmp_path / "even"
    root.mkdir()
    (root / "pool.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(words[i * 150:i * 150 + 150])})
                                             + "\n" for i in range(40)))
    r = _select(root / "pool.jsonl", root / "pool.jsonl", tmp_path / "sel", method="dsir", n="5")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    bias = json.loads((tmp_path / "sel" / "manifest.json").read_text())["diagnostics"]["length_bias"]
    assert bias["cv"] < UNEVEN_CV


def test_manifest_is_complete_and_modes_follow_the_umask(text_pool, tmp_path):
    pool, target, _ = text_pool
    r = _select(pool, target, tmp_path / "sel", "--set", "C=2.5", method="classifier", umask=0o022)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "sel"
    man = json.loads((out / "manifest.json").read_text())
    assert man["settings"] == {**defaults_of("classifier"), "C": 2.5}  # every setting, defaults included
    import numpy
    import torch

    from proxyscale import __version__

    v = man["versions"]
    assert (v["proxyscale"], v["numpy"], v["torch"].split("+")[0]) == (__version__, numpy.__version__,
                                                                        torch.__version__.split("+")[0])
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    rows = _pool_rows(pool)
    h = hashlib.sha256()
    for row in rows:
        h.update(row["id"].encode() + b"\0" + row["text"].encode() + b"\0\0")
    texts = [json.loads(x)["text"] for x in target.read_text().splitlines()]
    assert man["pool"]["sha256"] == h.hexdigest() and man["pool"]["n"] == len(rows) == man["n_pool"]
    assert man["target"]["sha256"] == hashlib.sha256(b"".join(t.encode() + b"\0" for t in texts)).hexdigest()
    assert {"reading", "featurising", "scoring"} <= set(man["seconds"])
    assert all(s >= 0 for s in man["seconds"].values()) and (man["n"], man["n_requested"]) == (4, 4)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == dict.fromkeys(
        [".proxyscale-output.json", "chosen.txt", "manifest.json", "scores.parquet"], 0o644)
    r = _select(pool, target, tmp_path / "private", "--write", "jsonl", umask=0o077)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "private").iterdir()} == {0o600}


@pytest.mark.parametrize("extra, said", [
    (("--n", "1.5"), "--n 1.5: a fraction must lie in (0, 1]"),
    (("--n", "many"), "--n 'many' is not a number"),
    (("--write", "csv"), "--write 'csv': unknown format; use jsonl or parquet"),
    (("--set", "top_kk=true"), "--set top_kk: --method random has no setting 'top_kk'"),
    (("--method", "dsir", "--set", "top_kk=true"), "(did you mean 'top_k'?); valid: num_buckets, ngrams,"),
    (("--method", "dsir", "--set", "ngrams=two"), "--set ngrams: expected an integer, got 'two'"),
    (("--text-field", "body"), "no string field 'body' (has ['id', 'text']); pass --text-field"),
    (("--split", "validation"), "--hub-name, --split and --revision choose what to read from the Hugging Face hub"),
    (("--max-docs", "0"), "--max-docs 0: give a positive number of documents"),
])
def test_bad_select_input_is_one_line_naming_the_flag(text_pool, tmp_path, extra, said):
    pool, target, _ = text_pool
    args = {"--method": "random", "--n": "4"}
    flat = list(extra)
    for k in ("--method", "--n"):
        if k in flat:
            args[k] = flat[flat.index(k) + 1]
            del flat[flat.index(k):flat.index(k) + 2]
    r = _cli("select", "--method", args["--method"], "--pool", str(pool), "--target", str(target), "--n", args["--n"],
             "--out", str(tmp_path / "sel"), "--id-field", "id", *flat)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], r.stderr
    assert not (tmp_path / "sel").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_written_selection_is_a_study_source(text_pool, tmp_path):
    """`select --write jsonl`, then a scaling spec whose `doc` source is that file: it plans through
    the CLI, and its data steps (tokenizer, shards, test set) run on the selected documents."""
    import yaml

    from bad_inputs import tiny_spec, write_sources
    from proxyscale.run.step import StepContext, resolve
    from proxyscale.studies import load_study

    pool, target, _ = text_pool
    r = _select(pool, target, tmp_path / "sel", "--write", "jsonl", n="40")
    assert r.returncode == 0, r.stderr
    write_sources(tmp_path / "src")
    spec = tiny_spec(tmp_path / "src")
    spec["sources"]["doc"] = {"kind": "local", "path": str(tmp_path / "sel" / "selected.jsonl"), "id_field": "id"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    planned = _cli("plan", "spec.yaml", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    study, s = load_study(tmp_path / "spec.yaml")
    dirs: dict[str, Path] = {}
    for i, step in enumerate(st for st in study.plan(s) if st.kind in ("corpus", "tokenizer", "shard", "testset")):
        dirs[step.key] = tmp_path / "steps" / f"{i:02d}"
        dirs[step.key].mkdir(parents=True)
        resolve(step.fn)(StepContext(step.key, step.kind, step.name, step.config,
                                     {k: dirs[v] for k, v in step.inputs.items()}, dirs[step.key]))
    from proxyscale.data.shards import TokenShard

    shard = TokenShard.open(next(d for k, d in dirs.items() if k.startswith("shard/doc")))
    chosen = set((tmp_path / "sel" / "chosen.txt").read_text().split())
    ids = shard.doc_ids()
    assert set(ids) <= chosen and 24 <= len(ids) < 40  # the selected documents, less the held-out fifth
    assert shard.n_tokens > 1000


# ------------------------------------------------------------------ the hub, from local files in its layout
def _hub_copy(root: Path) -> Path:
    """A dataset directory laid out as on the hub (allenai/c4's configs en and realnewslike, each with
    train and validation JSON-lines files, declared in the README's YAML header)."""
    header = ["---", "configs:"]
    for cfg in ("en", "realnewslike"):
        header += [f"- config_name: {cfg}", "  data_files:"]
        for split in ("train", "validation"):
            (root / cfg).mkdir(parents=True, exist_ok=True)
            (root / cfg / f"c4-{split}.00000-of-00001.json").write_text("".join(
                json.dumps({"text": f"{cfg} {split} document {i}: " + "word " * (5 + i), "timestamp": "2019-04-25",
                            "url": f"https://example.org/{cfg}/{split}/{i}"}) + "\n" for i in range(12)))
            header += [f"  - split: {split}", f"    path: {cfg}/c4-{split}.*.json"]
    (root / "README.md").write_text("\n".join(header + ["---", "# a small local copy of c4", ""]))
    return root


def test_hub_config_split_revision_and_max_docs(tmp_path, monkeypatch):
    datasets = oracle("datasets")
    import proxyscale.api as api

    ds = _hub_copy(tmp_path / "c4")
    seen = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    out = api.select("random", ds, ds, 3, tmp_path / "sel", hub=True, hub_name="realnewslike", split="validation",
                     revision="main", max_docs=5, id_field="url", write="jsonl", progress=False)
    assert seen[0] == ((str(ds), "realnewslike"), {"split": "validation", "streaming": True, "revision": "main"})
    docs = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(docs) == 3 and all(d["text"].startswith("realnewslike validation document ") for d in docs)
    assert {int(d["id"].rsplit("/", 1)[1]) for d in docs} <= set(range(5))  # only the first 5 records
    man = json.loads((out / "manifest.json").read_text())
    assert man["hub"] == {"name": "realnewslike", "split": "validation", "revision": "main", "streaming": True}
    assert man["pool"]["n"] == 5 and man["pool"]["max_docs"] == 5 and man["target"]["n"] == 12
    assert man["versions"]["datasets"] == datasets.__version__


def test_hub_through_the_cli_without_streaming_and_with_a_wrong_config(tmp_path):
    oracle("datasets")
    ds = _hub_copy(tmp_path / "c4")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "proxyscale.cli", "select", "--method", "random", "--hub", "--pool", str(ds),
            "--target", str(ds), "--n", "0.5", "--id-field", "url"]
    r = subprocess.run([*base, "--hub-name", "en", "--no-streaming", "--no-progress", "--out", str(tmp_path / "a")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    chosen = (tmp_path / "a" / "chosen.txt").read_text().split()
    assert len(chosen) == 6 and all(c.startswith("https://example.org/en/train/") for c in chosen)
    r = subprocess.run([*base, "--hub-name", "enn", "--out", str(tmp_path / "b")], env=env, capture_output=True,
                       text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and not (tmp_path / "b").exists(), r.stderr
    assert lines[0].startswith(f"error: could not read dataset {ds} (enn, split train): ValueError: BuilderConfig "
                               "'enn' not found") and lines[0].endswith("Check the dataset name, --hub-name, --split, "
                                                                        "--revision; offline, pass a local copy of the "
                                                                        "dataset's files as the path")

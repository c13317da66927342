"""Sharded pools: per-shard runs (inline, process pool, Ray) give the single-process selection byte
for byte; a killed run resumes shard by shard; bad shards are one line."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORDS = ("the of data model train loss token text science water river mountain code python function value "
         "graph table chair light dark").split()
SETTINGS = {"dsir": ["--set", "min_example_length=5", "--set", "raw_sample_cap=4000"],  # the cap cuts shard 0
            "classifier": ["--set", "max_negatives=70"], "random": []}


def _pool(root: Path, shards: int = 4, docs: int = 60, words: int = 80, seed: int = 0) -> Path:
    """JSONL shards, plain, .gz and .zst in turn, with a repeated text (a tie) across shards."""
    rng = random.Random(seed)
    pool = root / "pool"
    pool.mkdir()
    for k in range(shards):
        lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, words)))})
                 for _ in range(docs)] + [json.dumps({"text": "the same text in every shard"})]
        data = ("\n".join(lines) + "\n").encode()
        if k % 3 == 1:
            (pool / f"s{k:02d}.jsonl.gz").write_bytes(gzip.compress(data))
        elif k % 3 == 2 and _zstd() is not None:
            (pool / f"s{k:02d}.jsonl.zst").write_bytes(_zstd().ZstdCompressor().compress(data))
        else:
            (pool / f"s{k:02d}.jsonl").write_bytes(data)
    (root / "target.jsonl").write_text("".join(json.dumps({"text": "science data model code " * rng.randint(2, 9)})
                                               + "\n" for _ in range(20)))
    return pool


def _zstd():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", "select", "--no-progress", *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _select(root: Path, method: str, out: str, *extra: str, pool: str = "pool") -> bytes:
    r = _cli("--method", method, "--pool", str(root / pool), "--target", str(root / "target.jsonl"), "--n", "40",
             "--out", str(root / out), *SETTINGS[method], *extra)
    assert r.returncode == 0, r.stderr
    assert not (root / f"{out}.work").exists()  # the work directory is removed once the selection is written
    return (root / out / "chosen.txt").read_bytes()


# the classifier's shards go through the same shard phases as DSIR's and random's (~36 s): slow
@pytest.mark.parametrize("method", ["dsir", pytest.param("classifier", marks=pytest.mark.slow), "random"])
def test_sharded_runs_choose_what_one_process_chooses(tmp_path, method):
    _pool(tmp_path)
    single = _select(tmp_path, method, "single")
    assert len(single.splitlines()) == 40 and single.startswith(b"s0")  # ids carry the shard's file name
    assert _select(tmp_path, method, "inline", "--workers", "1") == single
    assert _select(tmp_path, method, "two", "--workers", "2", pool="pool/s*") == single
    if method == "dsir":  # the merged counts give the same scores, not only the same set
        import pandas as pd

        a, b = pd.read_parquet(tmp_path / "single/scores.parquet"), pd.read_parquet(tmp_path / "two/scores.parquet")
        assert a["score"].tolist() == b["score"].tolist()


def test_ray_tasks_choose_what_one_process_chooses(tmp_path):
    pytest.importorskip("ray")
    _pool(tmp_path, shards=3)
    single = _select(tmp_path, "dsir", "single")
    assert _select(tmp_path, "dsir", "ray", "--backend", "ray", "--workers", "2") == single


def test_a_killed_selection_resumes_shard_by_shard(tmp_path):
    _pool(tmp_path, shards=6, docs=250, words=200)
    single = _select(tmp_path, "dsir", "single")
    args = [sys.executable, "-m", "proxyscale.cli", "select", "--no-progress", "--method", "dsir", "--pool",
            str(tmp_path / "pool"), "--target", str(tmp_path / "target.jsonl"), "--n", "40", "--out",
            str(tmp_path / "out"), "--workers", "1", *SETTINGS["dsir"]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "out.work"
    deadline = time.time() + 120
    while not list(work.glob("res-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in work.glob("res-*"))
    assert 1 <= len(done) < 6 and not (tmp_path / "out").exists()  # stopped after a shard, nothing half-written
    assert (work / ".proxyscale-work.json").is_file() and not list(work.glob(".tmp-*"))
    assert _select(tmp_path, "dsir", "out", "--workers", "1") == single


def test_finished_shards_are_not_run_again(tmp_path, monkeypatch):
    from proxyscale.data.sources import SourceSpec
    from proxyscale.select import make_selector
    from proxyscale.select import shard_phases as ph
    from proxyscale.select.shard_phases import sharded_select

    _pool(tmp_path, shards=3)
    calls = []
    monkeypatch.setitem(ph.PHASES, "ids", lambda docs, job: calls.append(job["path"]) or ph._ids(docs, job))
    spec = SourceSpec("local", path=str(tmp_path / "pool"))
    first, work = sharded_select(make_selector("random", "--set"), spec, [], 5, 0, str(tmp_path / "o"))
    assert len(calls) == 3 and len(list(work.path.glob("res-ids-*"))) == 3
    again, _ = sharded_select(make_selector("random", "--set"), spec, [], 5, 0, str(tmp_path / "o"))
    assert len(calls) == 3 and again.chosen_ids == first.chosen_ids  # every shard's result was reused
    work.remove()
    assert not work.path.exists()


def test_bad_shards_are_one_line(tmp_path):
    pool = _pool(tmp_path, shards=2)
    (pool / "s09.jsonl").write_text(json.dumps({"body": "no text here"}) + "\n")
    r = _cli("--method", "random", "--pool", str(pool), "--target", str(tmp_path / "target.jsonl"), "--n", "3",
             "--out", str(tmp_path / "o"), "--workers", "2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "s09.jsonl: line 1: no string field 'text'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.work").exists() or not list(
        (tmp_path / "o.work").glob(".tmp-*"))
    (pool / "s09.jsonl").unlink()
    (pool / "s10.txt").write_text("a text shard\n")
    r = _cli("--method", "random", "--pool", str(pool), "--target", str(tmp_path / "target.jsonl"), "--n", "3",
             "--out", str(tmp_path / "o"), "--workers", "1")
    assert r.returncode == 2 and "shards of mixed formats" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = _cli("--method", "random", "--pool", str(tmp_path / "none-*.jsonl"), "--target",
             str(tmp_path / "target.jsonl"), "--n", "3", "--out", str(tmp_path / "o"), "--workers", "1")
    assert r.returncode == 2 and "no .txt, .jsonl" in r.stderr and "match this pattern" in r.stderr, r.stderr


def test_a_corrupt_zst_shard_is_one_line(tmp_path):
    pytest.importorskip("zstandard")
    pool = _pool(tmp_path, shards=1)
    (pool / "s05.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd this is not a zstd frame")
    r = _cli("--method", "random", "--pool", str(pool), "--target", str(tmp_path / "target.jsonl"), "--n", "3",
             "--out", str(tmp_path / "o"), "--workers", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "s05.jsonl.zst: damaged or not zstd data" in r.stderr and not (tmp_path / "o").exists()

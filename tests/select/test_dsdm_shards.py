"""DsDm and Bot-DsDm on a sharded pool: the same selection and scores as one process (through the
CLI, inline and on a process pool), a killed run resumes with only its unfinished shards, and a
shard that changes is read again."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORDS = ("the of data model train loss token text science water river mountain code python function value "
         "graph table chair light dark def return import class self print").split()
# Tiny proxies; batches of 8 over shards of 13 and 14 documents, so batches straddle shards; the
# BPE learns from the first shard only.
SMALL = {"d_model": 8, "n_heads": 1, "models": 2, "context": 16, "vocab_size": 300, "k": 16,
         "tokens_per_param": 1, "batch_size": 8, "tokenizer_bytes": 1000}
SIZES = (13, 14, 13)


def _pool(root: Path, sizes: tuple[int, ...] = SIZES, seed: int = 0) -> Path:
    """JSONL shards of word salad (ids from the file names), and a target of code-like lines."""
    rng = random.Random(seed)
    pool = root / "pool"
    pool.mkdir()
    for k, size in enumerate(sizes):
        lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40)))})
                 for _ in range(size)]
        (pool / f"s{k}.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps({"text": "def f(self): return code value " * rng.randint(1, 3)}) for _ in range(6)]
    (root / "target.jsonl").write_text("\n".join(lines) + "\n")
    return pool


def _argv(root: Path, method: str, out: str, *extra: str) -> list[str]:
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "proxyscale.cli", "select", "--no-progress", "--method", method, "--pool",
            str(root / "pool"), "--target", str(root / "target.jsonl"), "--n", "9", "--out", str(root / out),
            *sets, *extra]


def _select(root: Path, method: str, out: str, *extra: str) -> tuple[bytes, np.ndarray]:
    """(chosen.txt, every document's score in pool order) of one CLI run."""
    import pandas as pd

    r = subprocess.run(_argv(root, method, out, *extra), capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    assert not (root / f"{out}.work").exists()  # removed once the selection is written
    scores = pd.read_parquet(root / out / "scores.parquet")
    return (root / out / "chosen.txt").read_bytes(), scores["score"].to_numpy()


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, bytes, np.ndarray]:
    """A pool and its one-process DsDm selection through the CLI: (root, chosen.txt, scores)."""
    root = tmp_path_factory.mktemp("dsdm-shards")
    _pool(root)
    return (root, *_select(root, "dsdm", "single"))


def test_sharded_dsdm_chooses_and_scores_what_one_process_does(single, tmp_path):
    """On a process pool of 2. Scores agree to 1e-9 relative (bit-identical here: every row is
    featurised in the batch it has in one process); chosen.txt is byte-identical."""
    root, chosen, scores = single
    sharded, p_scores = _select(root, "dsdm", "sharded", "--workers", "2")
    assert sharded == chosen and len(chosen.splitlines()) == 9
    np.testing.assert_allclose(p_scores, scores, rtol=1e-9, atol=0)
    assert np.ptp(scores) > 0 and {line.split(b":")[0] for line in chosen.splitlines()} == {b"s0.jsonl", b"s1.jsonl",
                                                                                            b"s2.jsonl"}
    man = json.loads((root / "sharded" / "manifest.json").read_text())
    assert man["settings"] == json.loads((root / "single" / "manifest.json").read_text())["settings"]
    assert {"featurising", "proxy training", "TRAK featurisation", "scoring"} <= set(man["seconds"])


def test_sharded_bot_dsdm_chooses_the_bottom_of_the_same_scores(single):
    """Inline (--workers 1): Bot-DsDm's scores are DsDm's, and it keeps what one process's
    Bot-DsDm keeps: the bottom n, ties broken by the seeded key (``base.bottom_n``)."""
    from proxyscale.select.base import bottom_n

    root, _, scores = single
    chosen, b_scores = _select(root, "bot-dsdm", "bot", "--workers", "1")
    np.testing.assert_allclose(b_scores, scores, rtol=1e-9, atol=0)
    import pandas as pd

    ids = pd.read_parquet(root / "single" / "scores.parquet")["id"].tolist()
    assert chosen.decode().split() == [ids[i] for i in bottom_n(scores, 9, ids, 0)]


# Bot-DsDm on Ray is slow-only: the Ray mapper does not depend on the method (the dsdm case covers
# it), and sharded Bot-DsDm is checked against one process by the inline test above
@pytest.mark.parametrize("method", ["dsdm", pytest.param("bot-dsdm", marks=pytest.mark.slow)])
def test_ray_tasks_choose_and_score_what_one_process_does(single, tmp_path, method):
    """Each shard's phases as Ray tasks on a private loopback node (2 CPUs): every score is the
    one-process run's bit for bit, and chosen.txt is its byte for byte (Bot-DsDm: one process's
    Bot-DsDm keeps the bottom n of the same scores, ties broken by the seeded key)."""
    pytest.importorskip("ray")
    import pandas as pd

    from proxyscale.select.base import bottom_n

    root, chosen, scores = single
    if method == "bot-dsdm":
        ids = pd.read_parquet(root / "single" / "scores.parquet")["id"].tolist()
        chosen = "".join(ids[i] + "\n" for i in bottom_n(scores, 9, ids, 0)).encode()
    one = chosen.decode().split()
    assert len(one) == 9 and len({i.split(":")[0] for i in one}) > 1  # chosen from more than one shard
    on_ray, r_scores = _select(root, method, f"ray-{method}", "--backend", "ray", "--workers", "2")
    assert on_ray == chosen
    np.testing.assert_array_equal(r_scores, scores)


def test_a_shard_task_featurises_on_its_own_workers_device(single, tmp_path, monkeypatch, fresh_threads):
    """The features task asks its own process for a device: cuda where torch sees a GPU, else the
    CPU, whatever the driver has; no job names a device. A GPU worker is faked (this machine may
    have none): ``torch.cuda.is_available`` answers True inside the features tasks only, and the
    proxies and batches that the task puts on cuda are put on the CPU instead. The task chose
    cuda for every shard, and on the CPU the weights are the one-process run's bit for bit."""
    import torch

    from proxyscale.select import dsdm, make_selector
    from proxyscale.select import dsdm_shards as ds
    from proxyscale.select import shard_phases as ph
    from proxyscale.select.pool import read_texts, source_of
    from proxyscale.select.shard_phases import sharded_select
    from proxyscale.select.shards import inline_map

    for has_gpu, want in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda has_gpu=has_gpu: has_gpu)
        assert ds.task_device() == torch.device(want)
    monkeypatch.undo()
    root, chosen, scores = single
    seen, sent = [], []

    def gpu_worker(docs, job, fn=ph.PHASES["dsdm-features"]):
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, "is_available", lambda: True)
            return fn(docs, job)

    class OnCpu(dsdm.DsDmScorer):
        def __init__(self, *args, device=None, **kw):
            seen.append(("scorer", str(device)))
            super().__init__(*args, **kw)
    real_models = ds._models
    asked: list[tuple[str, bool]] = []
    monkeypatch.setitem(ph.PHASES, "dsdm-features", gpu_worker)
    monkeypatch.setattr(ds, "_models", lambda paths, device="cpu": seen.append(("models", str(device)))
                        or real_models(paths))
    monkeypatch.setattr(dsdm, "DsDmScorer", OnCpu)
    torch.set_num_threads(fresh_threads)  # as the one-process run's CLI had (the bits depend on it)
    sel, work = sharded_select(make_selector("dsdm", "--set", **SMALL), source_of(str(root / "pool")),
                               read_texts(source_of(str(root / "target.jsonl"))), 9, 0, str(tmp_path / "out"),
                               lambda fn, jobs, gpu=False: sent.extend(jobs) or asked.append(
                                   (json.loads(jobs[0])["phase"], gpu)) or inline_map(fn, jobs))
    assert asked == [("dsdm-encode", False), ("dsdm-features", True), ("dsdm-score", False)]  # a GPU where it helps
    tasks = [x for x in seen if x != ("models", "cpu")]  # the driver's own load of the proxies is on its CPU
    assert tasks == [("models", "cuda"), ("scorer", "cuda")] * 3 and ("models", "cpu") in seen
    assert sorted(str(np.load(p)["device"]) for p in work.path.glob("res-dsdm-features-*.npz")) == ["cuda"] * 3
    assert not any("device" in j or "cuda" in j for j in sent)
    work.remove()
    assert "\n".join(sel.chosen_ids) + "\n" == chosen.decode()
    np.testing.assert_array_equal(sel.scores, scores)


def _kill_during_features(root: Path, *how: str) -> list[str]:
    """Start a sharded DsDm run (``how``: its --workers/--backend, default inline) and kill it
    once one shard's features are written; the names of the results it left."""
    proc = subprocess.Popen(_argv(root, "dsdm", "out", *(how or ("--workers", "1"))), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    work, deadline = root / "out.work", time.time() + 300
    while not list(work.glob("res-dsdm-features-*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return sorted(p.name for p in work.glob("res-*.npz"))


def _resume(root: Path, monkeypatch, remove: bool = True) -> tuple[list[str], dict[str, int]]:
    """The killed run resumed in this process, counting each phase's shard tasks and whether
    the proxies were trained again."""
    from proxyscale.select import make_selector
    from proxyscale.select import shard_phases as ph
    from proxyscale.select.pool import read_texts, source_of
    from proxyscale.select.shard_phases import sharded_select

    calls = dict.fromkeys(("dsdm-encode", "dsdm-features", "dsdm-score"), 0)
    for name in calls:
        def counted(docs, job, fn=ph.PHASES[name], name=name):
            calls[name] += 1
            return fn(docs, job)
        monkeypatch.setitem(ph.PHASES, name, counted)
    before = {p: p.stat().st_mtime_ns for p in (root / "out.work").glob("res-dsdm-proxies-*/*/model.safetensors")}
    sel, work = sharded_select(make_selector("dsdm", "--set", **SMALL), source_of(str(root / "pool")),
                               read_texts(source_of(str(root / "target.jsonl"))), 9, 0, str(root / "out"))
    after = {p: p.stat().st_mtime_ns for p in (root / "out.work").glob("res-dsdm-proxies-*/*/model.safetensors")}
    calls["proxies trained"] = len(set(after.items()) - set(before.items()))
    if remove:
        work.remove()
    return sel.chosen_ids, calls


def test_a_killed_sharded_dsdm_redoes_only_unfinished_shards(single, tmp_path, monkeypatch):
    """A run killed once one shard's features are written resumes with the others only; then a
    shard changed since the work directory was written is read again (results are named by their
    shard's bytes), and the selection is a fresh one-process selection of the changed pool."""
    from proxyscale.select import make_selector
    from proxyscale.select.pool import open_pool, read_texts, source_of

    pool = _pool(tmp_path)
    left = _kill_during_features(tmp_path)
    encoded = [n for n in left if n.startswith("res-dsdm-encode-")]
    featured = [n for n in left if n.startswith("res-dsdm-features-")]
    assert len(encoded) == 3 and 1 <= len(featured) < 3 and not (tmp_path / "out").exists()
    chosen, calls = _resume(tmp_path, monkeypatch, remove=False)
    assert "\n".join(chosen) + "\n" == single[1].decode()  # the same pool (same seed) as the fixture's
    # nothing encoded or trained again, only the unfinished shards featurised; every shard scored
    assert calls == {"dsdm-encode": 0, "dsdm-features": 3 - len(featured), "dsdm-score": 3, "proxies trained": 0}
    with open(pool / "s2.jsonl", "a") as f:
        f.write(json.dumps({"text": "def return import class self print code value"}) + "\n")
    chosen, calls = _resume(tmp_path, monkeypatch)
    # the changed shard encoded again; new windows, so new proxies, features and scores everywhere
    assert calls == {"dsdm-encode": 1, "dsdm-features": 3, "dsdm-score": 3, "proxies trained": 2}
    one = make_selector("dsdm", "--set", **SMALL).select(open_pool(source_of(str(pool))),  # the pool unsharded
                                                         read_texts(source_of(str(tmp_path / "target.jsonl"))), 9, 0)
    assert chosen == one.chosen_ids and chosen != single[1].decode().split()


def test_an_empty_document_in_a_shard_is_one_line(tmp_path):
    pool = _pool(tmp_path)
    (pool / "s1.jsonl").write_text(json.dumps({"text": "a document"}) + "\n" + json.dumps({"text": ""}) + "\n")
    r = subprocess.run(_argv(tmp_path, "dsdm", "out", "--workers", "1"), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{pool}: 1 documents are empty (the first: 's1.jsonl:2'); drop empty documents from the pool" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()  # refused before any shard ran
    (pool / "s1.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    with open(tmp_path / "target.jsonl", "a") as f:
        f.write(json.dumps({"text": ""}) + "\n")
    r = subprocess.run(_argv(tmp_path, "bot-dsdm", "out", "--workers", "1"), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{tmp_path / 'target.jsonl'}: 1 target examples are empty; drop them" in r.stderr
    assert not (tmp_path / "out.work").exists()


def test_a_pool_that_changes_during_a_sharded_run_is_one_error(tmp_path):
    """A shard rewritten after the reading pass: the selection is refused, not written."""
    from proxyscale.errors import DataError
    from proxyscale.select.command import Request, run
    from proxyscale.select.shards import inline_map

    pool = _pool(tmp_path)

    def mapper(fn, jobs, gpu=False):
        (pool / "s0.jsonl").write_text(json.dumps({"text": "a new first shard"}) + "\n")
        return inline_map(fn, jobs)
    req = Request("random", str(pool), str(tmp_path / "target.jsonl"), 5, str(tmp_path / "out"), progress=False,
                  mapper=mapper)
    with pytest.raises(DataError, match="the pool's shards changed while they were being selected from"):
        run(req)
    assert not (tmp_path / "out").exists()


RAY_RESUME = """
import json, sys
from proxyscale.run.backends.ray import ray_map
from proxyscale.select import make_selector
from proxyscale.select.pool import read_texts, source_of
from proxyscale.select.shard_phases import sharded_select
root, small = sys.argv[1], json.loads(sys.argv[2])
sel, _ = sharded_select(make_selector("dsdm", "--set", **small), source_of(root + "/pool"),
                        read_texts(source_of(root + "/target.jsonl")), 9, 0, root + "/out", ray_map(None, 2))
print(json.dumps(sel.chosen_ids))
"""


def _stamps(work: Path) -> dict[str, tuple[int, int]]:
    """Each result file of the work directory (and each proxy's weights): (inode, mtime), which
    change when a task writes it again (results are written under a new name, then renamed)."""
    files = [*work.glob("res-*.npz"), *work.glob("res-*.bin"), *work.glob("res-dsdm-proxies-*/*/model.safetensors")]
    return {str(p.relative_to(work)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


@pytest.mark.slow  # two Ray starts and a proxy training: ~35-50 s on 2 cores
def test_a_killed_ray_dsdm_redoes_only_unfinished_shards(single, tmp_path):
    """On Ray (a private loopback node, 2 CPUs): a run killed once one shard's features are
    written, resumed on Ray, writes only the unfinished shards' features (and every shard's
    scores) and chooses what one process chooses; nothing is encoded or trained again."""
    pytest.importorskip("ray")
    _pool(tmp_path)
    left = _kill_during_features(tmp_path, "--backend", "ray", "--workers", "2")
    featured = [n for n in left if n.startswith("res-dsdm-features-")]
    assert 1 <= len(featured) < 3 and len([n for n in left if n.startswith("res-dsdm-encode-")]) == 3
    work = tmp_path / "out.work"
    before = _stamps(work)
    r = subprocess.run([sys.executable, "-c", RAY_RESUME, str(tmp_path), json.dumps(SMALL)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    assert "\n".join(json.loads(r.stdout.splitlines()[-1])) + "\n" == single[1].decode()
    after = _stamps(work)
    written = [n.split("-")[2] if n.startswith("res-dsdm-") else n for n in after if before.get(n) != after[n]]
    assert sorted(written) == ["features"] * (3 - len(featured)) + ["score"] * 3, written
    assert len([n for n in after if "-proxies-" in n]) == 2 and set(featured) <= set(after)

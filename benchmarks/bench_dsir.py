"""DSIR featurise + weight throughput: proxyscale's ``DSIRSelector`` vs ``data-selection`` 1.0.3.

Both sides read the same JSONL pool (offline text: the Python stdlib's sources and its
``pydoc_data`` language-reference prose, cut into documents of ≈ 2–3 KB), fit the target and raw
distributions and compute every pool document's log importance weight, with the same number of
worker processes. The package's side is ``fit_importance_estimator()`` + ``compute_importance_weights()``
(it hashes the pool twice: once for p_r, once for the weights); ours is ``DSIRSelector.weigh``.
Rounds alternate the two after one warm-up each (so both process pools are started), the ratio of
median wall times is quoted, and the weights are checked equal.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_dsir.py            # workers 1 and 2, ~2 minutes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np


def chunks(text: str, size: int) -> list[str]:
    """Blank-line blocks of ``text`` joined into documents of about ``size`` characters."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for block in text.split("\n\n"):
        cur.append(block)
        n += len(block)
        if n >= size:
            out.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        out.append("\n\n".join(cur))
    return out


def write_corpus(root: Path, max_mb: float) -> tuple[Path, Path, float]:
    """(pool.jsonl, target.jsonl, pool MB): stdlib code + reference prose; the target is every
    tenth prose document (kept out of the pool). Above the ≈ 5 MB of unique text, the pool
    repeats it under new ids (for throughput at larger sizes)."""
    from pydoc_data.topics import topics

    prose = [c for _, v in sorted(topics.items()) for c in chunks(v, 2000)]
    std = Path(sysconfig.get_paths()["stdlib"])
    code = [c for p in sorted(std.glob("*.py")) for c in chunks(p.read_text(errors="replace"), 3000)]
    target, docs = prose[::10], [t for i, t in enumerate(prose) if i % 10] + code
    size, i = 0, 0
    with open(root / "pool.jsonl", "w") as f:
        while size < max_mb * 1e6:  # beyond the ≈ 5 MB there is, the documents again under new ids
            t = docs[i % len(docs)]
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
            size += len(t.encode())
            i += 1
    with open(root / "target.jsonl", "w") as f:
        for t in target:
            f.write(json.dumps({"text": t}) + "\n")
    return root / "pool.jsonl", root / "target.jsonl", size / 1e6


def run_ours(pool_path: Path, target_path: Path, workers: int) -> tuple[float, np.ndarray]:
    from proxyscale.select.dsir import DSIRSelector
    from proxyscale.select.pool import open_pool, read_texts, source_of

    t0 = time.perf_counter()  # reading the files counts on both sides
    pool, target = open_pool(source_of(str(pool_path))), read_texts(source_of(str(target_path)))
    w = DSIRSelector(workers=workers).weigh(pool, target)
    return time.perf_counter() - t0, w.log_weights


def run_package(pool_path: Path, target_path: Path, workers: int, cache: Path) -> tuple[float, np.ndarray]:
    from data_selection import HashedNgramDSIR, hashed_ngram_dsir

    # nltk >= 3.10 compiles its pattern lazily into a TimedPattern whose "no timeout given" sentinel does
    # not survive pickling: once the main process has tokenised (a num_proc=1 run), shipping the
    # tokenizer to joblib workers fails with "timeout not float or None". Uncompile it first.
    hashed_ngram_dsir.wpt._regexp = None
    t0 = time.perf_counter()
    d = HashedNgramDSIR([str(pool_path)], [str(target_path)], cache_dir=str(cache), num_proc=workers)
    d.fit_importance_estimator(num_tokens_to_fit="auto")
    d.compute_importance_weights()
    elapsed = time.perf_counter() - t0
    # Its shards are round-robin over the file: shard j holds documents j, j + S, j + 2S, ...
    parts = [np.load(cache / "log_importance_weights" / f"{j}.npy") for j in range(workers)]
    out = np.empty(sum(len(p) for p in parts))
    for j, p in enumerate(parts):
        out[j::workers] = p
    return elapsed, out


def compare(pool: Path, target: Path, mb: float, workers: int, rounds: int, root: Path) -> dict[str, float]:
    """Alternate the two ``rounds`` times after a warm-up; median wall times and the weights' max |diff|."""
    times: dict[str, list[float]] = {"ours": [], "data-selection": []}
    diff = 0.0
    for r in range(rounds + 1):  # round 0 starts both process pools and is not counted
        t_ours, w_ours = run_ours(pool, target, workers)
        t_pkg, w_pkg = run_package(pool, target, workers, root / f"cache{workers}-{r}")
        np.testing.assert_allclose(w_ours, w_pkg, rtol=1e-9, atol=1e-9)
        diff = max(diff, float(np.abs(w_ours - w_pkg).max()))
        if r:
            times["ours"].append(t_ours)
            times["data-selection"].append(t_pkg)
        print(f"  workers {workers} round {r}: ours {t_ours:.2f} s, data-selection {t_pkg:.2f} s, "
              f"ratio {t_pkg / t_ours:.2f}" + ("" if r else " (warm-up)"), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {**med, "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (each side the same)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=float, default=6.0, help="pool size cap in MB")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool, target, mb = write_corpus(root, args.mb)
        print(f"CPU {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
              f"pool {mb:.2f} MB, {sum(1 for _ in open(pool))} documents", flush=True)
        rows = [(w, compare(pool, target, mb, w, args.rounds, root)) for w in map(int, args.workers.split(","))]
        print(f"load at the end {os.getloadavg()[0]:.1f}\n")
        print("| workers | ours s | data-selection s | ours MB/s per core | data-selection MB/s per core | ratio |")
        print("|---|---|---|---|---|---|")
        for w, m in rows:
            o, p = m["ours"], m["data-selection"]
            print(f"| {w} | {o:.2f} | {p:.2f} | {mb / o / w:.2f} | {mb / p / w:.2f} | **{p / o:.1f}×** |")
        print(f"\nweights equal: max |diff| {max(m['diff'] for _, m in rows):.1e}")


if __name__ == "__main__":
    main()

"""DSIR featurise + weight throughput: proxyscale's ``DSIRSelector`` vs ``data-selection`` 1.0.3.

Both sides read the same JSONL pool (offline text: the Python stdlib's sources and its
``pydoc_data`` language-reference prose, cut into documents of ≈ 2–3 KB), fit the target and raw
distributions and compute every pool document's log importance weight, with the same number of
worker processes. The package's side is ``fit_importance_estimator()`` + ``compute_importance_weights()``
(it hashes the pool twice: once for p_r, once for the weights); ours is ``DSIRSelector.weigh``.
Rounds alternate the two after one warm-up each (so both process pools are started), the ratio of
median wall times is quoted, and the weights are checked equal.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_dsir.py --workers 2 --rounds 3
"""
from __future__ import annotations

import argparse
import json
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
    tenth prose document (kept out of the pool)."""
    from pydoc_data.topics import topics

    prose = [c for _, v in sorted(topics.items()) for c in chunks(v, 2000)]
    std = Path(sysconfig.get_paths()["stdlib"])
    code = [c for p in sorted(std.glob("*.py")) for c in chunks(p.read_text(errors="replace"), 3000)]
    target, docs = prose[::10], [t for i, t in enumerate(prose) if i % 10] + code
    size = 0
    with open(root / "pool.jsonl", "w") as f:
        for i, t in enumerate(docs):
            if size >= max_mb * 1e6:
                break
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
            size += len(t.encode())
    with open(root / "target.jsonl", "w") as f:
        for t in target:
            f.write(json.dumps({"text": t}) + "\n")
    return root / "pool.jsonl", root / "target.jsonl", size / 1e6


def run_ours(pool_path: Path, target_path: Path, workers: int) -> tuple[float, np.ndarray]:
    from proxyscale.select.dsir import DSIRSelector
    from proxyscale.select.pool import open_pool, read_texts, source_of

    t0 = time.perf_counter()
    w = DSIRSelector(workers=workers).weigh(open_pool(source_of(str(pool_path))), read_texts(source_of(str(target_path))))
    return time.perf_counter() - t0, w.log_weights


def run_package(pool_path: Path, target_path: Path, workers: int, cache: Path) -> tuple[float, np.ndarray]:
    from data_selection import HashedNgramDSIR

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=float, default=6.0, help="pool size cap in MB")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool, target, mb = write_corpus(root, args.mb)
        print(f"pool {mb:.2f} MB, {sum(1 for _ in open(pool))} documents; workers {args.workers}")
        times: dict[str, list[float]] = {"ours": [], "data-selection": []}
        for r in range(args.rounds + 1):  # round 0 warms both process pools up and is not counted
            t_ours, w_ours = run_ours(pool, target, args.workers)
            t_pkg, w_pkg = run_package(pool, target, args.workers, root / f"cache{r}")
            np.testing.assert_allclose(w_ours, w_pkg, rtol=1e-9, atol=1e-9)
            if r:
                times["ours"].append(t_ours)
                times["data-selection"].append(t_pkg)
            print(f"round {r}: ours {t_ours:.2f} s, data-selection {t_pkg:.2f} s, ratio {t_pkg / t_ours:.2f}"
                  + ("" if r else " (warm-up)"))
        med = {k: statistics.median(v) for k, v in times.items()}
        print("\n| implementation | median s | MB/s | MB/s per core |\n|---|---|---|---|")
        for k, t in med.items():
            print(f"| {k} | {t:.2f} | {mb / t:.2f} | {mb / t / args.workers:.2f} |")
        print(f"\nratio (data-selection / ours, median wall time): {med['data-selection'] / med['ours']:.2f}x; "
              f"weights equal (max |diff| {np.abs(w_ours - w_pkg).max():.2e})")


if __name__ == "__main__":
    main()

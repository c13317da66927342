"""Sharded selection: DSIR and classifier throughput (MB/s) on a pool cut into JSONL shards, at 1
and 2 worker processes, against the single-process run (the selections are checked equal); peak
RSS of DSIR over many shards vs one shard's size (memory follows the shard, not the pool); and
the single-process DSIR against ``data-selection`` 1.0.3 (see ``bench_dsir.py``).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_select_shards.py     # ~3 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_dsir import run_ours, run_package, write_corpus  # noqa: E402

RSS = """
import resource, sys
from proxyscale.select import make_selector
from proxyscale.select.shard_phases import sharded_select
from proxyscale.select.pool import read_texts, source_of
target = read_texts(source_of(sys.argv[2]))
sel, work = sharded_select(make_selector("dsir", "--set"), source_of(sys.argv[1], id_field="id"), target, 10, 0,
                           sys.argv[3])
work.remove()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def split(pool: Path, out: Path, shards: int) -> Path:
    """``pool`` cut into ``shards`` consecutive JSONL files under ``out``."""
    lines = pool.read_text().splitlines(keepends=True)
    out.mkdir()
    per = -(-len(lines) // shards)
    for k in range(shards):
        (out / f"s{k:03d}.jsonl").write_text("".join(lines[k * per:(k + 1) * per]))
    return out


def timed(method: str, pool: Path, target: Path, out: Path, workers: int | None) -> tuple[float, list[str]]:
    from proxyscale.select import make_selector
    from proxyscale.select.pool import open_pool, read_texts, source_of
    from proxyscale.select.shard_phases import sharded_select
    from proxyscale.select.shards import inline_map, process_map

    t0 = time.perf_counter()
    spec, texts = source_of(str(pool), id_field="id"), read_texts(source_of(str(target)))  # ids: the same both ways
    sel_ = make_selector(method, "--set", **({"workers": 1} if method == "dsir" else {}))
    if workers is None:
        sel = sel_.select(open_pool(spec), texts, 100, 0)
    else:
        sel, work = sharded_select(sel_, spec, texts, 100, 0, str(out), inline_map if workers == 1 else
                                   process_map(workers))
        work.remove()
    return time.perf_counter() - t0, sel.chosen_ids


def peak_rss(pool: Path, target: Path, out: Path) -> int:
    r = subprocess.run([sys.executable, "-c", RSS, str(pool), str(target), str(out)], capture_output=True,
                       text=True, check=True)
    return int(r.stdout.split()[-1]) // 1024  # MB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--shards", type=int, default=16)
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool, target, mb = write_corpus(root, args.mb)
        shards = split(pool, root / "shards", args.shards)
        print(f"CPU {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; pool {mb:.2f} MB in "
              f"{args.shards} shards", flush=True)
        print("| method | run | s | MB/s | same selection |\n|---|---|---|---|---|")
        for method in ("dsir", "classifier"):
            base_s, base = timed(method, pool, target, root / "o", None)
            print(f"| {method} | single process | {base_s:.2f} | {mb / base_s:.2f} | — |", flush=True)
            for w in (1, 2):
                s, chosen = timed(method, shards, target, root / f"o-{method}-{w}", w)
                print(f"| {method} | {w} worker(s), sharded | {s:.2f} | {mb / s:.2f} | {chosen == base} |", flush=True)
        one = split(Path(next(shards.iterdir())), root / "one", 1)
        print(f"\npeak RSS (MB), DSIR inline: {args.shards} shards {peak_rss(shards, target, root / 'r1')}, "
              f"one shard {peak_rss(one, target, root / 'r2')}")
        t_ours, _ = run_ours(pool, target, 1)
        t_pkg, _ = run_package(pool, target, 1, root / "cache")
        print(f"single-process DSIR vs data-selection (1 worker): ours {t_ours:.2f} s, package {t_pkg:.2f} s, "
              f"ratio {t_pkg / t_ours:.1f}×; load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

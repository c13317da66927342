"""Sharded selection: DSIR and classifier throughput (MB/s) on a pool cut into JSONL shards, at 1
and 2 worker processes, against the single-process run (the selections are checked equal); peak
RSS of DSIR over many shards vs one shard's size (memory follows the shard, not the pool); peak
RSS of a DsDm shard worker, per phase, at two shard sizes 4× apart over the same pool; and the
single-process DSIR against ``data-selection`` 1.0.3 (see ``bench_dsir.py``).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_select_shards.py     # ~3 minutes on 2 cores, + ~10 for DsDm
    PYTHONPATH=src .venv/bin/python benchmarks/bench_select_shards.py --only dsdm
    PYTHONPATH=src .venv/bin/python benchmarks/bench_select_shards.py --only throughput --mb 40
"""
from __future__ import annotations

import argparse
import json
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


# One shard task in a fresh process: its result's path and the process's peak RSS (KB). VmHWM,
# not ru_maxrss: Linux carries ru_maxrss over from the parent into a forked child.
HWM = "int(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))"
TASK = f"""
import sys
from proxyscale.select.shard_phases import shard_task
print(shard_task(sys.argv[1]), {HWM})
"""
IMPORTS = f"""
import proxyscale.select.shard_phases, proxyscale.attribute.trak, proxyscale.models.gpt, tokenizers
print({HWM})
"""
# Tiny proxies and a large k: the features (k float32 per document) are most of a shard's data.
DSDM = {"d_model": 8, "n_heads": 1, "models": 1, "context": 64, "vocab_size": 300, "k": 2048,
        "tokens_per_param": 1, "batch_size": 64}


def measured(peaks: dict[str, int]):
    """A shard mapper that runs the first shard's task of every phase in a fresh process (its
    peak RSS in MB goes to ``peaks[phase]``) and the other shards here."""
    from proxyscale.select.shards import inline_map

    def run(fn, jobs):
        for i, job in enumerate(jobs):
            if i:
                yield from inline_map(fn, [job])
                continue
            r = subprocess.run([sys.executable, "-c", TASK, job], capture_output=True, text=True, check=True)
            path, rss = r.stdout.split()[-2:]
            peaks[json.loads(job)["phase"]] = int(rss) // 1024
            yield path
    return run


def dsdm_rss(root: Path, docs: int, shard_counts: tuple[int, ...] = (8, 2)) -> None:
    """Peak RSS of a DsDm shard worker per phase, the same pool cut into shards of two sizes."""
    from proxyscale.select import make_selector
    from proxyscale.select.pool import read_texts, source_of
    from proxyscale.select.shard_phases import sharded_select

    (root / "dsdm").mkdir()
    pool, target, _ = write_corpus(root / "dsdm", 1e9)
    lines = pool.read_text().splitlines(keepends=True)
    lines = (lines * (-(-docs // len(lines))))[:docs]
    (root / "dsdm" / "pool.jsonl").write_text("".join(
        json.dumps({**json.loads(x), "id": f"d{i}"}) + "\n" for i, x in enumerate(lines)))
    texts = read_texts(source_of(str(target)))[:200]
    base = int(subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                              check=True).stdout.split()[-1]) // 1024
    print(f"\nDsDm shard worker, peak RSS (MB): {docs} documents, {len(texts)} targets, {DSDM}; "
          f"imports alone {base} MB")
    print("| shards | documents per shard | phase | peak RSS | above imports |\n|---|---|---|---|---|")
    for count in shard_counts:
        shards, peaks = split(root / "dsdm" / "pool.jsonl", root / f"dsdm-{count}", count), {}
        t0 = time.perf_counter()
        sel, work = sharded_select(make_selector("dsdm", "--set", **DSDM), source_of(str(shards), id_field="id"),
                                   texts, 100, 0, str(root / f"dsdm-out-{count}"), measured(peaks))
        work.remove()
        for ph, mb in peaks.items():
            print(f"| {count} | {docs // count} | {ph} | {mb} | {mb - base} |", flush=True)
        print(f"| {count} | | (whole run {time.perf_counter() - t0:.0f} s) | | |", flush=True)


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
    ap.add_argument("--dsdm-docs", type=int, default=4000, help="pool size of the DsDm memory check")
    ap.add_argument("--only", choices=("all", "dsdm", "throughput"), default="all",
                    help="throughput: only the MB/s table (no memory checks, no package comparison)")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool, target, mb = write_corpus(root, args.mb)
        shards = split(pool, root / "shards", args.shards)
        print(f"CPU {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; pool {mb:.2f} MB in "
              f"{args.shards} shards", flush=True)
        if args.only == "dsdm":
            return dsdm_rss(root, args.dsdm_docs)
        print("| method | run | s | MB/s | same selection |\n|---|---|---|---|---|")
        for method in ("dsir", "classifier"):
            base_s, base = timed(method, pool, target, root / "o", None)
            print(f"| {method} | single process | {base_s:.2f} | {mb / base_s:.2f} | — |", flush=True)
            for w in (1, 2):
                s, chosen = timed(method, shards, target, root / f"o-{method}-{w}", w)
                print(f"| {method} | {w} worker(s), sharded | {s:.2f} | {mb / s:.2f} | {chosen == base} |", flush=True)
        if args.only == "throughput":
            return print(f"load at the end {os.getloadavg()[0]:.1f}")
        one = split(Path(next(shards.iterdir())), root / "one", 1)
        print(f"\npeak RSS (MB), DSIR inline: {args.shards} shards {peak_rss(shards, target, root / 'r1')}, "
              f"one shard {peak_rss(one, target, root / 'r2')}")
        t_ours, _ = run_ours(pool, target, 1)
        t_pkg, _ = run_package(pool, target, 1, root / "cache")
        print(f"single-process DSIR vs data-selection (1 worker): ours {t_ours:.2f} s, package {t_pkg:.2f} s, "
              f"ratio {t_pkg / t_ours:.1f}×; load at the end {os.getloadavg()[0]:.1f}")
        dsdm_rss(root, args.dsdm_docs)


if __name__ == "__main__":
    main()

"""What the store's checksums cost: sha256 of every finished step's files (what `run` checks
before it starts, and `proxyscale verify`), against reading the same bytes without hashing.

    python benchmarks/bench_checksums.py STORE
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from proxyscale.store import Store
from proxyscale.store.checks import output_files


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(root: Path) -> None:
    store = Store(root)
    keys = store.finished_keys()
    files = [f for k in keys for f in output_files(store.final_dir(k))]
    size = sum(f.stat().st_size for f in files)
    for _ in range(2):  # plain reads, the floor (the first warms the page cache, the second is timed)
        t0 = time.perf_counter()
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad = sum(bool(store.problems(k)) for k in keys)
    hash_s = time.perf_counter() - t0
    print(f"{cpu_model()}; {len(keys)} steps, {len(files)} files, {size / 1e6:.1f} MB; damaged: {bad}")
    print(f"read only {read_s:.3f} s; full check {hash_s:.3f} s ({size / 1e9 / hash_s:.2f} GB/s); "
          f"ratio {hash_s / read_s:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python benchmarks/bench_checksums.py STORE (a run store directory)")
    main(Path(sys.argv[1]))

"""Where a run's time went, read from its store's step records (not a test).

Every finished step's ``_step.json`` records ``wall_s``: its own time, or for a member of a batch
its share of the batch's ``batch_wall_s``. Summed per step kind, the shares add up to the
workers' busy time; with several workers that exceeds the run's wall time by their overlap.

    PYTHONPATH=src python benchmarks/store_times.py STORE [--wall SECONDS]

``--wall`` (the run's wall time, e.g. from ``/usr/bin/time``) adds the busy/wall ratio.
``--cores N`` adds the core-seconds left idle between the first step's start and the last step's
end: each step (or batch) occupies its threads from its record's write time less its wall time,
a member of a batch its share; whatever is below N cores in a second is idle.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from bench_checksums import cpu_model  # this folder is on the path when the script runs


def kind_times(store: Path) -> dict[str, dict[str, float]]:
    """Per step kind: steps, summed ``wall_s`` (shares), and the number of distinct batches."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"steps": 0, "wall_s": 0.0, "batched": 0})
    for rec_path in sorted((store / "steps").glob("*/*/_step.json")):
        if rec_path.parent.name.startswith("."):
            continue
        rec = json.loads(rec_path.read_text())
        row = out[rec_path.parent.parent.name]
        row["steps"] += 1
        row["wall_s"] += float(rec.get("wall_s") or 0.0)
        row["batched"] += int(rec.get("group_size", 1) > 1)
    return dict(out)


def idle_core_seconds(store: Path, cores: int) -> tuple[float, float]:
    """``(idle core-seconds, span seconds)`` of the store's steps, from their records' write times."""
    spans = []
    for rec_path in (store / "steps").glob("*/*/_step.json"):
        if rec_path.parent.name.startswith("."):
            continue
        rec, end = json.loads(rec_path.read_text()), rec_path.stat().st_mtime
        whole = float(rec.get("batch_wall_s") or rec.get("wall_s") or 0.0)
        share = float(rec.get("wall_s") or 0.0) / whole if whole > 0 else 0.0
        spans.append((end - whole, end, share * min(int(rec.get("threads") or 1), cores)))
    if not spans:
        return 0.0, 0.0
    t0, t1 = min(a for a, _, _ in spans), max(b for _, b, _ in spans)
    used = [0.0] * (int(t1 - t0) + 1)
    for a, b, load in spans:
        for sec in range(int(a - t0), int(b - t0) + 1):
            overlap = min(b, t0 + sec + 1) - max(a, t0 + sec)
            if overlap > 0:
                used[sec] += overlap * load
    full = [min(1.0, t1 - t0 - sec) for sec in range(len(used))]  # the last second may be partial
    return sum(max(0.0, cores * f - u) for f, u in zip(full, used)), t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--wall", type=float, default=None, help="the run's wall time in seconds")
    ap.add_argument("--cores", type=int, default=None, help="cores the run had: adds its idle core-seconds")
    a = ap.parse_args()
    times = kind_times(a.store)
    busy = sum(r["wall_s"] for r in times.values())
    print(f"{cpu_model()}; store {a.store}")
    print("| step kind | steps | in batches | worker seconds | share |\n|---|---|---|---|---|")
    for kind, r in sorted(times.items(), key=lambda kv: -kv[1]["wall_s"]):
        print(f"| {kind} | {r['steps']} | {r['batched']} | {r['wall_s']:.1f} | {r['wall_s'] / busy:.0%} |")
    print(f"| **all** | {sum(r['steps'] for r in times.values())} | | {busy:.1f} | |")
    if a.wall:
        print(f"run wall time {a.wall:.0f} s; worker seconds / wall = {busy / a.wall:.2f}")
    if a.cores:
        idle, span = idle_core_seconds(a.store, a.cores)
        print(f"{idle:.1f} core-seconds idle of {a.cores} x {span:.1f} s from the first step's start to the last's end")


if __name__ == "__main__":
    main()

"""Where a run's time went, read from its store's step records (not a test).

Every finished step's ``_step.json`` records ``wall_s``: its own time, or for a member of a batch
its share of the batch's ``batch_wall_s``. Summed per step kind, the shares add up to the
workers' busy time; with several workers that exceeds the run's wall time by their overlap.

    PYTHONPATH=src python benchmarks/store_times.py STORE [--wall SECONDS]

``--wall`` (the run's wall time, e.g. from ``/usr/bin/time``) adds the busy/wall ratio.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--wall", type=float, default=None, help="the run's wall time in seconds")
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


if __name__ == "__main__":
    main()

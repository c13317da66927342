"""``bench_suite_scale.py --through-run``: a synthetic suite as one Parquet results table per model
(or, with ``--shared-table``, one table with a ``model`` column for every model), run through the
real ``proxyscale run`` command under ``/usr/bin/time -v``."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_checksums import cpu_model

RESULT_COLUMNS = ("test_set", "example_id", "n_pred_tokens", "loss", "bpb", "correct_prob", "accuracy")
SHARED = "all"  # the shared table's writer name


def build_suite(root: Path, size: tuple[int, int, int, int], shared: bool = False) -> Path:
    """Write every model's results table (one test set at a time, so the builder never holds the
    whole suite) and a suite spec naming them; returns the spec's path. ``shared``: one table
    for all models, with a ``model`` column (DataDecide's layout)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from proxyscale.analyze.synthetic import SuiteDesign, make_synthetic_suite

    n_dist, n_scales, n_seeds, n_ex = size
    s = make_synthetic_suite(0, SuiteDesign(n_dist=n_dist, n_scales=n_scales, n_seeds=n_seeds, n_examples=n_ex))
    info = s["models"].set_index("model")
    ref = str(info.index[info["is_reference"]][0])
    writers: dict[str, pq.ParquetWriter] = {}
    models: list[dict] = []
    (root / "results").mkdir(parents=True)
    for _, load in sorted(s["results"].items()):
        rows = load()
        table = pa.table({"test_set": rows["test_set"].astype(str), "example_id": rows["example_id"].astype(str),
                          "n_pred_tokens": rows["n_tokens"].astype(np.int64),
                          # the synthetic losses may dip below zero; a results table's may not
                          "loss": rows["loss"] + 3.0, "bpb": rows["bpb"] + 3.0,
                          "correct_prob": rows["correct_prob"], "accuracy": rows["correct"]})
        runs = rows[["distribution", "model", "seed"]].iloc[::n_ex].astype(str).itertuples(index=False)
        names = []
        for i, (dist, scale, seed) in enumerate(runs):  # a run's rows are one contiguous block
            name = f"{dist}-{scale}-s{seed}"
            names.append(name)
            key = SHARED if shared else name
            if len(models) < len(names):  # the first test set names every run
                models.append({"name": name, "distribution": dist, "scale": scale, "seed": int(seed),
                               "params": int(info.at[scale, "params"]),
                               "train_tokens": int(info.at[scale, "train_tokens"]),
                               "reference": scale == ref, "results": str(root / "results" / f"{key}.parquet")})
            if not shared:
                _writer(writers, key, root, table.schema).write_table(table.slice(i * n_ex, n_ex))
        if shared:
            table = table.append_column("model", pa.array(np.repeat(names, n_ex)))
            _writer(writers, SHARED, root, table.schema).write_table(table)
        del rows, table
    for w in writers.values():
        w.close()
    spec = {"kind": "suite", "name": "bench", "models": models,
            "test_sets": {t: {"kind": "qa"} for t in sorted(s["results"])}}
    (root / "suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "suite.yaml"


def _writer(writers: dict, key: str, root: Path, schema) -> object:
    import pyarrow.parquet as pq

    if key not in writers:
        writers[key] = pq.ParquetWriter(root / "results" / f"{key}.parquet", schema)
    return writers[key]


def _gnu_time(stderr: str, label: str) -> str:
    m = re.search(rf"{re.escape(label)}: (.+)", stderr)
    return m.group(1).strip() if m else "nan"


def through_run(name: str, size: tuple[int, int, int, int], shared: bool = False) -> dict:
    """Build the suite, then time ``proxyscale run`` on it in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        spec = build_suite(root, size, shared)
        built = time.perf_counter() - t0
        load_before = os.getloadavg()[0]
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "proxyscale.cli", "run", str(spec), "--store",
               str(root / "store"), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name}: proxyscale run failed:\n{proc.stderr[-3000:]}")
        step = next((root / "store" / "steps" / "suite_analyze").glob("[!.]*"))
        analysis_mib = sum(f.stat().st_size for f in step.iterdir()) / 2**20
    n_dist, n_scales, n_seeds, n_ex = size
    return {"size": name, "layout": "one shared table" if shared else "a table per model",
            "models": n_dist * n_scales * n_seeds, "examples": n_ex,
            "rows_millions": round(n_dist * n_scales * n_seeds * n_ex * 10 / 1e6, 2), "build_s": round(built, 1),
            "run_s": round(wall, 1), "peak_rss_gib": round(int(_gnu_time(proc.stderr, "Maximum resident set size "
                                                                         "(kbytes)")) / 2**20, 2),
            "cpu_percent": _gnu_time(proc.stderr, "Percent of CPU this job got"),
            "cpu_s": round(float(_gnu_time(proc.stderr, "User time (seconds)"))
                           + float(_gnu_time(proc.stderr, "System time (seconds)")), 1),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "analysis_mib": round(analysis_mib, 1)}


def through_run_table(names: list[str], sizes: dict[str, tuple[int, int, int, int]],
                      layouts: tuple[bool, ...] = (False,)) -> None:
    """Print one markdown row per size and layout (``layouts``: False a table per model, True
    one shared table)."""
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores")
    print("| layout | models | examples | rows | `proxyscale run` s | CPU s (user+sys) | peak RSS GiB | CPU | "
          "load before → after | suite_analyze output MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for shared in layouts:
            r = through_run(name, sizes[name], shared)
            print(f"| {r['layout']} | {r['models']} | {r['examples']} | {r['rows_millions']}M | {r['run_s']} | "
                  f"{r['cpu_s']} | "
                  f"{r['peak_rss_gib']} | "
                  f"{r['cpu_percent']} | {r['load_before']} → {r['load_after']} | {r['analysis_mib']} |", flush=True)

"""A results table several models share is read by one step (not one per model), and gives the
suite exactly what one table per model gives: the same per-example rows and the same summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import yaml

from proxyscale.store import read_table

DISTS, SCALES, TEST_SETS, N_EX = ("web", "code", "books"), ("S", "L"), ("held", "quiz"), 12


def _rows() -> pd.DataFrame:
    """Per-example results of 3 distributions × 2 scales on 2 test sets, in a model-mixed row order."""
    rng = np.random.default_rng(7)
    rows = []
    for d, dist in enumerate(DISTS):
        for s, scale in enumerate(SCALES):
            for ts in TEST_SETS:
                loss = 2.0 + 0.3 * d - 0.5 * s + rng.uniform(0, 1, N_EX)
                rows.append(pd.DataFrame({"model": f"{dist}-{scale}", "test_set": ts,
                                          "example_id": [f"{ts}{i}" for i in range(N_EX)],
                                          "n_pred_tokens": rng.integers(1, 9, N_EX), "loss": loss,
                                          "bpb": loss / 2.0, "correct_prob": rng.uniform(0, 1, N_EX)}))
    return pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)


def _run(root, files: dict[str, str]):
    """Run the suite whose model ``name`` reads ``files[name]``; returns its store."""
    models = [{"name": f"{d}-{s}", "distribution": d, "scale": s, "seed": 0, "params": 10 ** (4 + k),
               "train_tokens": 2 * 10 ** (5 + k), "reference": s == "L", "results": files[f"{d}-{s}"]}
              for d in DISTS for k, s in enumerate(SCALES)]
    spec = {"kind": "suite", "name": "tables", "models": models, "analysis": {"n_boot": 20}}
    (root / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", "suite.yaml", "--store", "st", "--no-progress"],
                       cwd=root, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stderr
    return root / "st"


def _analysis(store, name: str) -> pd.DataFrame:
    step = next((store / "steps" / "suite_analyze").glob("[!.]*"))
    return read_table(step / name)


def test_a_shared_table_gives_what_per_model_tables_give(tmp_path):
    rows = _rows()
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir(), own.mkdir()
    files = {}
    for scale in SCALES:  # each scale's 3 models share one table
        part = rows[rows["model"].str.endswith(f"-{scale}")]
        part.to_parquet(shared / f"scale-{scale}.parquet")
        files.update({m: str(shared / f"scale-{scale}.parquet") for m in part["model"].unique()})
    a = _run(shared, files)
    for m, part in rows.groupby("model"):  # a table per model, without a model column
        part.drop(columns=["model"]).to_parquet(own / f"{m}.parquet")
    b = _run(own, {m: str(own / f"{m}.parquet") for m in rows["model"].unique()})

    # one step per shared table, serving its 3 models; one step per model's own table
    steps = sorted((a / "steps" / "suite_shared_table").glob("[!.]*"))
    assert [p.name.split("-")[:2] for p in steps] == [["scale", "L"], ["scale", "S"]]
    assert not (a / "steps" / "suite_table").exists()
    assert len(list((b / "steps" / "suite_table").glob("[!.]*"))) == 6
    served = json.loads((steps[1] / "models.json").read_text())["models"]
    assert served == ["web-S", "code-S", "books-S"]

    got, want = _analysis(a, "results.parquet"), _analysis(b, "results.parquet")
    pd.testing.assert_frame_equal(got, want)
    assert len(got) == 6 * 2 * N_EX
    # the values are the table's own, for every model, test set and example
    by = rows.assign(scale=rows["model"].str.split("-").str[1], distribution=rows["model"].str.split("-").str[0])
    merged = got.merge(by, left_on=["distribution", "model", "test_set", "example_id"],
                       right_on=["distribution", "scale", "test_set", "example_id"], suffixes=("", "_in"))
    assert len(merged) == len(got)
    for c in ("loss", "bpb", "correct_prob", "n_pred_tokens"):
        np.testing.assert_array_equal(merged[c].to_numpy(dtype=float), merged[f"{c}_in"].to_numpy(dtype=float), c)
    summary_a, summary_b = _analysis(a, "summary.parquet"), _analysis(b, "summary.parquet")
    pd.testing.assert_frame_equal(summary_a, summary_b)
    assert sorted(summary_a["test_set"]) == ["held", "quiz"] and set(summary_a["model"]) == {"S"}
    assert np.isfinite(summary_a["r2"]).all()

"""The suite's analysis step reads its results one test set at a time; it must give exactly what the
analysis of all results gathered into one table gives (the way the step worked before)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import yaml

from proxyscale.analyze.io import read_analysis
from proxyscale.analyze.synthetic import SuiteDesign, make_synthetic_suite
from proxyscale.store import read_table


def _gathered(store, cfg):
    """Every model's per-test-set tables in one frame, in the order the old step concatenated them."""
    frames = []
    shared = next((store / "steps" / "suite_shared_table").glob("[!.]*"))  # the models share one table
    for r in sorted(cfg["runs"], key=lambda r: f"eval:{r['distribution']}:{r['scale']}:{r['seed']}"):
        for f in sorted(shared.glob("*.parquet")):
            df = read_table(f)
            df = df[df["model"] == r["name"]].reset_index(drop=True)
            frames.append(pd.DataFrame({"test_set": f.stem, "example_id": df["example_id"],
                                        "distribution": r["distribution"], "model": r["scale"], "seed": r["seed"],
                                        **{c: df[c] for c in ("n_pred_tokens", "loss_sum", "loss", "bytes", "bpb",
                                                              "correct_prob", "accuracy")},
                                        "n_tokens": df["n_pred_tokens"]}))
    return pd.concat(frames, ignore_index=True)


def test_streamed_analysis_equals_the_gathered_one(tmp_path):
    from proxyscale.studies.scaling.steps import write_study_analysis

    s = make_synthetic_suite(4, SuiteDesign(n_dist=4, n_scales=2, n_seeds=2, n_test_sets=2, n_examples=30))
    rows = pd.concat([load() for load in s["results"].values()], ignore_index=True)
    rows = rows.assign(loss=rows["loss"] + 3.0, bpb=rows["bpb"] + 3.0)  # results tables hold no negative losses
    rows["name"] = (rows["distribution"].astype(str) + "-" + rows["model"].astype(str) + "-s"
                    + rows["seed"].astype(str))
    table = pd.DataFrame({"model": rows["name"], "test_set": rows["test_set"].astype(str),
                          "example_id": rows["example_id"].astype(str), "n_pred_tokens": rows["n_tokens"],
                          "loss": rows["loss"], "bpb": rows["bpb"], "correct_prob": rows["correct_prob"],
                          "accuracy": rows["correct"]})
    table.to_parquet(tmp_path / "all.parquet")
    info = s["models"].set_index("model")
    runs = rows.drop_duplicates("name")
    spec = {"kind": "suite", "name": "stream", "analysis": {"n_boot": 50},
            "models": [{"name": n, "distribution": str(d), "scale": str(m), "seed": int(sd),
                        "params": int(info.at[m, "params"]), "train_tokens": int(info.at[m, "train_tokens"]),
                        "reference": bool(info.at[m, "is_reference"]), "results": "all.parquet"}
                       for n, d, m, sd in runs[["name", "distribution", "model", "seed"]].itertuples(index=False)]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", "suite.yaml", "--store", "st", "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stderr
    step = next((tmp_path / "st" / "steps" / "suite_analyze").glob("[!.]*"))
    cfg = json.loads((step / "_step.json").read_text())["config"]
    gathered = _gathered(tmp_path / "st", cfg)
    assert len(gathered) == 16 * 2 * 30
    write_study_analysis(tmp_path / "whole", gathered, cfg, {})
    streamed, whole = read_analysis(step, kind="scaling"), read_analysis(tmp_path / "whole", kind="scaling")
    assert sorted(streamed.tables) == sorted(whole.tables) and "summary" in whole.tables
    for name, want in whole.tables.items():
        got = streamed.tables[name]
        # (the config read back from the step record has its keys sorted: so do the models table's columns)
        assert sorted(got.columns) == sorted(want.columns) and len(got) == len(want), name
        for c in want.columns:
            if pd.api.types.is_float_dtype(want[c]):
                np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=f"{name}.{c}")
            else:
                assert got[c].astype(str).tolist() == want[c].astype(str).tolist(), f"{name}.{c}"
    assert np.isfinite(whole.tables["summary"]["r2"]).all() and len(whole.tables["summary"]) == 2
    results = read_table(step / "results.parquet")
    assert len(results) == len(gathered) and sorted(set(results["test_set"])) == ["task00", "task01"]

"""The suite's evidence, checked when the plan is built (so a bad input is refused before any step
runs) and named by content (so a step re-runs only when its input files change).

- a **checkpoint**: :func:`~proxyscale.evaluate.hf.check_model_dir` (config, safetensors weights
  that do not link outside the directory, a tokenizer) and the weights' sha256;
- **samples**: a glob of lm-eval results files (or directories holding one); per task test set
  the one results file recording that task, its samples file, and the task's version and
  number of few-shot examples, which must agree across the suite's models;
- a **results** table (Parquet or CSV): columns ``test_set``, ``example_id`` and metric columns
  (a ``model`` column, when present, selects the model's rows); losses must be finite and ≥ 0.
  A table several models name is read and hashed once for all of them (it must then have the
  ``model`` column), as DataDecide's one table of 1,050 models would be.
"""
from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError, DataError
from ...store.output import sha256_file
from .spec import METRICS, SuiteModel, SuiteSpec

SAMPLE_METRICS = ("bpb", "correct_prob", "accuracy")  # lm-eval logs carry no token counts: no per-token loss
LOSS_COLUMNS = ("loss", "loss_sum", "bpb")  # must be finite and ≥ 0 in a results table
TABLE_SUFFIXES = (".parquet", ".csv")


def user_path(path: str) -> Path:
    """A path from the spec, resolved (relative paths are relative to the working directory)."""
    return Path(path).expanduser().resolve()


def checkpoint_evidence(m: SuiteModel) -> dict[str, Any]:
    from ...evaluate.hf import check_model_dir, weights_sha256

    d = user_path(str(m.checkpoint))
    try:
        check_model_dir(d)
    except (DataError, ConfigError) as e:
        raise type(e)(f"models.{m.name}.checkpoint: {e}") from None
    return {"checkpoint": str(d), "weights_sha256": weights_sha256(d)}


def _results_files(m: SuiteModel) -> list[Path]:
    found: list[Path] = []
    for hit in sorted(glob.glob(str(Path(str(m.samples)).expanduser()), recursive=True)):
        p = Path(hit).resolve()
        found += sorted(p.glob("results_*.json")) if p.is_dir() else [p] if p.name.startswith("results_") else []
    if not found:
        raise DataError(f"models.{m.name}.samples: '{m.samples}' matches no lm-eval results_*.json file (nor a "
                        "directory holding one); give the --output_path lm-eval wrote with --log_samples")
    return found


def _tasks_of(path: Path) -> dict[str, Any]:
    try:
        configs = json.loads(path.read_text(encoding="utf-8")).get("configs")
    except (OSError, ValueError, AttributeError):
        raise DataError(f"{path}: not a readable lm-eval results JSON; give the results_<timestamp>.json "
                        "lm-eval wrote") from None
    return configs if isinstance(configs, dict) else {}


def samples_evidence(m: SuiteModel, tasks: Mapping[str, tuple[str, str | None]]) -> dict[str, Any]:
    """Per test set (name → (task, id_field)): the model's run of that task, named by content."""
    from ...data.lmeval import task_run

    files = _results_files(m)
    out = {}
    for ts, (task, id_field) in sorted(tasks.items()):
        hits = [f for f in files if task in _tasks_of(f)]
        if len(hits) != 1:
            have = sorted({t for f in files for t in _tasks_of(f)})
            why = (f"no run of task '{task}' (its runs hold: {', '.join(have) or 'none'})" if not hits else
                   f"{len(hits)} runs of task '{task}' ({', '.join(h.name for h in hits[:3])})")
            raise DataError(f"models.{m.name}.samples: {why}; give one lm-eval run of each task test set")
        run = task_run(m.name, hits[0], task)
        out[ts] = {"task": task, "id_field": id_field, "results": str(run.results), "samples": str(run.samples),
                   "sha256": [sha256_file(run.results), sha256_file(run.samples)],
                   "output_type": run.output_type, "version": run.version, "n_shot": run.n_shot}
    return out


def check_same_task_settings(runs: Mapping[str, Mapping[str, Any]]) -> None:
    """Every model's run of one test set's task has the same task version and few-shot count."""
    by_ts: dict[str, dict[str, Any]] = {}
    for model, per_ts in runs.items():
        for ts, r in per_ts.items():
            by_ts.setdefault(ts, {})[model] = r
    for ts, rs in sorted(by_ts.items()):
        for what in ("output_type", "version", "n_shot"):
            values = {m: r[what] for m, r in rs.items()}
            if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
                listing = ", ".join(f"{m}: {v}" for m, v in sorted(values.items()))
                raise DataError(f"test set {ts}: the lm-eval task {what} differs across models ({listing}); "
                                "compare runs of one task version and setting")


def read_results_table(path: Path, model: str | None):
    """The rows of a results table (all, or those whose ``model`` column is ``model``). Parquet
    label columns are read as categoricals: a table of a whole suite repeats each label millions
    of times."""
    import pandas as pd

    if path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
        raise DataError(f"{path}: not a Parquet or CSV file; give a results table (.parquet or .csv)")
    try:
        df = _read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001  (pyarrow and pandas raise many kinds on a bad file)
        raise DataError(f"{path}: unreadable as a table ({type(e).__name__}); write it with pandas "
                        "to_parquet or to_csv") from None
    if model is not None and "model" in df.columns:
        df = df[df["model"].astype(str) == model].reset_index(drop=True)
    return df


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    labels = [c for c in ("model", "test_set", "example_id") if c in names]
    # one column at a time into pandas, each Arrow buffer freed once converted: half the peak
    return pq.read_table(path, read_dictionary=labels).to_pandas(split_blocks=True, self_destruct=True)


def model_rows(df: Any, models: list[str], where: str) -> dict[str, Any]:
    """Model name -> the positions of its rows in a table shared by ``models`` (which must have a
    ``model`` column); refuses a model without rows, naming it."""
    import numpy as np

    if "model" not in df.columns:
        raise DataError(f"{where}: models {', '.join(models[:3])}{' ...' if len(models) > 3 else ''} share this "
                        "table but it has no model column; add a model column naming each row's model, or give "
                        "each model its own table")
    found = {str(k): v for k, v in df.groupby("model", observed=True, sort=False).indices.items()}
    return {m: found.get(m, np.zeros(0, dtype=np.int64)) for m in models}


def check_results_table(df: Any, where: str) -> list[str]:
    """The metrics a results table offers; refuses missing columns and NaN or negative losses."""
    import numpy as np

    missing = [c for c in ("test_set", "example_id") if c not in df.columns]
    metrics = [c for c in METRICS if c in df.columns]
    if missing or not metrics:
        raise DataError(f"{where}: needs columns test_set, example_id and at least one of {', '.join(METRICS)}; "
                        f"it has {', '.join(map(str, df.columns)) or 'none'}")
    if df.empty:
        raise DataError(f"{where}: no rows for this model; give its per-example results")
    for col in (c for c in LOSS_COLUMNS if c in df.columns):
        vals = df[col].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(vals) | (vals < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: {col} is {vals[i]} at test set {df['test_set'].iloc[i]}, example "
                            f"{df['example_id'].iloc[i]}; losses must be finite and ≥ 0 (drop diverged runs)")
    dup = df.duplicated(["test_set", "example_id"])
    if dup.any():
        r = df[dup].iloc[0]
        raise DataError(f"{where}: example {r['example_id']} of test set {r['test_set']} appears twice; give one "
                        "row per test set × example (and a model column when the table holds several models)")
    return metrics


# One `proxyscale run` builds the plan several times (checks, preflight, run, report); a suite of
# DataDecide's size names 1,050 tables, so each is read and hashed once per process, again only
# when its size or modification time changes (the step re-checks the sha256 before it reads).
_TABLE_EVIDENCE: dict[tuple[str, tuple[str, ...], int, int], dict[str, dict[str, Any]]] = {}


def _model_evidence(df: Any, name: str, path: Path, sha256: str) -> dict[str, Any]:
    metrics = check_results_table(df, f"models.{name}.results ({path})")
    return {"results": str(path), "sha256": sha256, "metrics": metrics,
            "test_sets": sorted(map(str, df["test_set"].astype(str).unique()))}


def table_evidence(path: Path, models: list[str]) -> dict[str, dict[str, Any]]:
    """Model name -> its checked evidence from the results table at ``path``, which ``models``
    name; the table is read and hashed once, however many models share it."""
    st = path.stat() if path.is_file() else None
    key = (str(path), tuple(models), st.st_size, st.st_mtime_ns) if st is not None else None
    if key is not None and key in _TABLE_EVIDENCE:
        return {m: dict(r) for m, r in _TABLE_EVIDENCE[key].items()}
    if len(models) == 1:  # a table of its own: a model column, if any, still selects its rows
        df = read_results_table(path, models[0])
        out = {models[0]: _model_evidence(df, models[0], path, sha256_file(path))}
    else:
        df = read_results_table(path, None)
        rows, sha = model_rows(df, models, str(path)), sha256_file(path)
        out = {m: _model_evidence(df.iloc[rows[m]], m, path, sha) for m in models}
        served = sorted({t for r in out.values() for t in r["test_sets"]})
        for r in out.values():
            r.update(shared_by=list(models), table_test_sets=served)
    if key is not None:
        _TABLE_EVIDENCE[key] = out
    return {m: dict(r) for m, r in out.items()}


def gather(spec: SuiteSpec) -> dict[str, dict[str, Any]]:
    """Every model's checked evidence (name → record), and the metric check across models."""
    tasks = {t: (str(ts.task), ts.id_field) for t, ts in spec.test_sets.items() if ts.task}
    tables: dict[Path, list[str]] = {}
    for m in spec.models:
        if m.evidence[0] == "results":
            tables.setdefault(user_path(str(m.results)), []).append(m.name)
    from_tables = {name: r for path, names in tables.items() for name, r in table_evidence(path, names).items()}
    out: dict[str, dict[str, Any]] = {}
    for m in spec.models:
        kind = m.evidence[0]
        if kind == "checkpoint":
            out[m.name] = {"kind": kind, **checkpoint_evidence(m), "metrics": list(METRICS)}
        elif kind == "samples":
            out[m.name] = {"kind": kind, "runs": samples_evidence(m, tasks), "metrics": list(SAMPLE_METRICS)}
        else:
            out[m.name] = {"kind": kind, **from_tables[m.name]}
    check_same_task_settings({n: r["runs"] for n, r in out.items() if r["kind"] == "samples"})
    _check_metric(spec.analysis.metric, out)
    return out


def _check_metric(metric: str, evidence: Mapping[str, Mapping[str, Any]]) -> None:
    lack = sorted(n for n, r in evidence.items() if metric not in r["metrics"])
    if lack:
        common = [x for x in METRICS if all(x in r["metrics"] for r in evidence.values())]
        why = " (lm-eval logs carry no token counts)" if any(evidence[n]["kind"] == "samples" for n in lack) else ""
        raise ConfigError(f"analysis.metric {metric}: model(s) {', '.join(lack[:5])} have no {metric}{why}; choose "
                          f"a metric every model has: {', '.join(common) or 'none — add the column to the tables'}")


def nan_or(value: Any) -> float:
    return math.nan if value is None else float(value)

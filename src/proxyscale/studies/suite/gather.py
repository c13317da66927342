"""The suite's per-example results, gathered and read back one test set at a time.

A suite of DataDecide's size holds 1,050 models × 10 test sets × 2,000 examples = 21 million
result rows, spread over one small table per model and test set. The analysis step never holds
them all: :func:`write_results` reads one test set's tables of every model (and n-gram
baseline), checks that the analysed metric covers them, and appends them to ``results.parquet``
as that test set's row groups; :func:`result_loaders` then hands the analysis one loader per
test set, each reading only its own row groups back (the row groups of one test set hold only
that test set, so the filter skips the others by their statistics). A results table several
models share comes as one step whose per-test-set tables hold every such model's rows: each is
read once per test set and split by its ``model`` column.

Rows keep the order the whole-table gathering had (runs by role, then n-gram baselines), so the
analysis sums them in the same order and gives the same values to the last bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ...errors import DataError
from ...store import read_table
from ...store.io import atomic_path

METRIC_COLUMNS = ("n_pred_tokens", "loss_sum", "loss", "bytes", "bpb", "correct_prob", "accuracy")
SHARED = "models.json"  # in a suite_shared_table step: the models its tables hold
RESULT_COLUMNS = ("test_set", "example_id", "distribution", "model", "seed", *METRIC_COLUMNS, "n_tokens")


@dataclass(frozen=True)
class Evidence:
    """One model run's (or n-gram baseline's) per-test-set tables and the labels of its rows."""

    distribution: str
    model: str  # the scale label (or the n-gram's name): the analysis's model
    seed: int
    files: dict[str, Path]  # test set -> its per-example table
    ngram: bool = False
    select: str | None = None  # the model's name in a table shared by several models (its ``model`` column)


def evidence_of(runs: list[Mapping[str, Any]], inputs: Mapping[str, Path]) -> list[Evidence]:
    """Every run's evidence (sorted by role, as the scaling study gathers its runs), then the
    n-gram baselines' (sorted by role)."""
    from ..scaling.plan import NGRAM_NAMES

    def files(path: Path) -> dict[str, Path]:
        return {f.stem: f for f in sorted(path.glob("*.parquet"))}

    def run(r: Mapping[str, Any]) -> Evidence:
        path = inputs[f"model:{r['name']}"]
        shared = str(r["name"]) if (path / SHARED).is_file() else None
        return Evidence(str(r["distribution"]), str(r["scale"]), int(r["seed"]), files(path), select=shared)

    by_role = {f"eval:{r['distribution']}:{r['scale']}:{r['seed']}": r for r in runs}
    out = [run(r) for _, r in sorted(by_role.items())]
    for role, path in sorted(inputs.items()):
        if role.startswith("ngram:"):
            _, dist, order = role.split(":")
            out.append(Evidence(dist, NGRAM_NAMES.get(int(order), f"{order}gram"), 0, files(path), ngram=True))
    return out


def test_set_rows(evidence: list[Evidence], ts: str) -> Any:
    """Every row of test set ``ts`` (columns :data:`RESULT_COLUMNS`, metrics as float64)."""
    import numpy as np
    import pandas as pd

    frames = []
    shared = _SharedTables()
    for ev in evidence:
        if ts not in ev.files:
            continue
        df = read_table(ev.files[ts]) if ev.select is None else shared.rows(ev.files[ts], ev.select)
        if df is None:  # the shared table has no rows of this model on this test set
            continue
        cols = ("loss",) if ev.ngram else METRIC_COLUMNS  # a count model has no bytes or choices
        frames.append(pd.DataFrame({"test_set": ts, "example_id": df["example_id"].astype(str),
                                    "distribution": ev.distribution, "model": ev.model, "seed": ev.seed,
                                    **{c: df[c] for c in cols}, "n_tokens": df["n_pred_tokens"]}))
    rows = pd.concat(frames, ignore_index=True).reindex(columns=list(RESULT_COLUMNS))
    for c in (*METRIC_COLUMNS, "n_tokens"):
        rows[c] = rows[c].astype(np.float64)
    rows["seed"] = rows["seed"].astype(np.int64)
    return rows


class _SharedTables:
    """One test set's tables shared by several models, each read once and split by model."""

    def __init__(self) -> None:
        self._read: dict[Path, tuple[Any, dict[str, Any]]] = {}

    def rows(self, path: Path, model: str) -> Any:
        """``model``'s rows of the shared table at ``path`` (None: it has none)."""
        if path not in self._read:
            df = read_table(path)
            where = df.groupby("model", observed=True, sort=False).indices
            self._read[path] = (df, {str(k): v for k, v in where.items()})
        df, where = self._read[path]
        return df.iloc[where[model]].reset_index(drop=True) if model in where else None


def _covered(rows: Any, ts: str, metric: str) -> bool:
    """True: every row has ``metric``; False: none has (the test set is left out); a test set
    where only some rows have it is refused, naming the first row that lacks it."""
    import numpy as np

    finite = np.isfinite(rows[metric].to_numpy(dtype=np.float64))
    if finite.all():
        return True
    if not finite.any():
        return False
    bad = rows[~finite].iloc[0]
    raise DataError(f"test set {ts}: {metric} is missing for model {bad['model']} ({bad['distribution']}, "
                    f"seed {bad['seed']}) on example {bad['example_id']}; give every model the metric on "
                    "every example, or choose another analysis.metric")


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([*((c, pa.string()) for c in RESULT_COLUMNS[:4]), ("seed", pa.int64()),
                      *((c, pa.float64()) for c in RESULT_COLUMNS[5:])])


def write_results(path: Path, evidence: list[Evidence], metric: str) -> tuple[list[str], dict[str, str]]:
    """Write every test set's rows to ``path`` (atomically, one test set in memory at a time);
    returns the test sets written and those left out because no model has ``metric`` on them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({ts for ev in evidence for ts in ev.files})
    kept, dropped = [], {}
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, _schema()) as writer:
        for ts in names:
            rows = test_set_rows(evidence, ts)
            if _covered(rows, ts, metric):
                writer.write_table(pa.Table.from_pandas(rows, schema=_schema(), preserve_index=False))
                kept.append(ts)
            else:
                dropped[ts] = f"no model has {metric} on it"
            del rows
    return kept, dropped


def result_loaders(path: Path, test_sets: list[str]) -> dict[str, Callable[[], Any]]:
    """Test set -> a function reading that test set's rows back from ``path``."""
    import pyarrow.parquet as pq

    def load(ts: str) -> Any:
        return pq.read_table(path, filters=[("test_set", "=", ts)]).to_pandas()

    return {ts: (lambda ts=ts: load(ts)) for ts in test_sets}

"""One pass over one test set's results: everything the analysis needs from the rows themselves.

A suite of DataDecide's size has 21 million result rows (1,050 runs × 10 test sets × 2,000
examples). The analysis therefore reads results one test set at a time (:data:`ResultSource`)
and keeps only what :func:`scan_test_set` returns: run means per metric, bootstrap replicates
of the cell means (example weights × seed terms, never copies of the table) and the
per-example correlation table. The rows are dropped before the next test set is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Union

import numpy as np
import pandas as pd

from ..errors import DataError
from ..seeding import np_rng
from . import bootstrap as bs
from . import metrics as mt
from . import stats

ResultSource = Union[pd.DataFrame, Mapping[str, Callable[[], pd.DataFrame]]]
RESULT_COLUMNS = ("test_set", "example_id", "distribution", "model", "seed", "loss")


@dataclass(frozen=True)
class TestSetScan:
    """What one test set's rows leave behind."""

    test_set: str
    run_means: dict[str, pd.DataFrame]   # metric -> distribution, model, seed, value
    reps: dict[str, bs.Replicates]       # metric -> cell-mean replicates (paired across metrics)
    per_example: pd.DataFrame
    n_examples: int


def split_source(results: ResultSource) -> dict[str, Callable[[], pd.DataFrame]]:
    """Test set -> a loader of its rows: a DataFrame is split once, a mapping is used as given."""
    if isinstance(results, pd.DataFrame):
        if "test_set" not in results.columns:
            raise DataError(f"the results table lacks column(s) ['test_set']; it has {list(results.columns)}")
        return {str(ts): (lambda g=g: g) for ts, g in results.groupby("test_set", sort=True)}
    return dict(results)


def check_rows(frame: pd.DataFrame, ts: str, names: dict[str, pd.Index], chosen: str = "loss") -> None:
    """Columns present, one test set, finite losses (when loss is the analysed metric: another
    metric's coverage is checked where it is read), and every name known to its table."""
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"the results table lacks column(s) {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"the results of test set '{ts}' are empty; run the study's evaluation steps first")
    if set(map(str, frame["test_set"].unique())) != {ts}:
        raise DataError(f"the results given for test set '{ts}' hold rows of other test sets; pass one per test set")
    losses = pd.to_numeric(frame["loss"], errors="coerce").to_numpy(dtype=np.float64)
    if chosen == "loss" and not np.isfinite(losses).all():
        raise DataError("the results table has non-finite losses; a diverged run must be excluded, not analyzed")
    for col, table in (("model", "models"), ("distribution", "distributions"), ("test_set", "test_sets")):
        unknown = sorted(set(frame[col].astype(str).unique()) - set(names[col]))
        if unknown:
            raise DataError(f"results name {col}(s) {unknown[:5]} missing from the {table} table; add them there")


def _available(frame: pd.DataFrame, ts: str, chosen: str) -> dict[str, np.ndarray]:
    """Oriented values of every metric this test set carries on every row.

    The analysed metric carried by only some rows is an error naming the models that lack it; a
    side metric carried by only some rows is left out of the side-by-side comparison."""
    out = {}
    for name in mt.METRICS:
        vals = mt.oriented(frame, name)
        cov = mt.coverage(vals)
        if cov == "partial" and name == chosen:
            have = [m for m in mt.METRICS if mt.coverage(mt.oriented(frame, m)) == "all"]
            raise DataError(f"metric '{name}' is missing for model(s) {mt.lacking_models(frame, vals)[:5]} on test "
                            f"set '{ts}'; evaluate them for it, or set analysis.metric to one every model has "
                            f"there ({', '.join(have)})")
        if cov == "all":
            out[name] = vals
    return out


def _run_means(wide: bs.Wide, nums: np.ndarray) -> pd.DataFrame:
    tot = wide.weights.sum(axis=0)
    frame = wide.runs.to_frame(index=False)
    return frame.assign(value=nums.sum(axis=0) / np.where(tot > 0, tot, 1.0))


def scan_test_set(frame: pd.DataFrame, ts: str, *, chosen: str, loss: str, reference: str, proxies: list[str],
                  seed: int, n_boot: int, with_reps: bool = True) -> TestSetScan | None:
    """Run means, replicates and per-example r of one test set (``None``: it lacks the chosen metric).

    ``loss`` (example_mean / token_mean) weighs the rows of the per-token loss; every other metric
    is a mean over examples. Every metric's replicates come from identically seeded generators,
    so they share example resamples and seed draws (paired)."""
    values = _available(frame, ts, chosen)
    if chosen not in values:
        return None
    ones = np.ones(len(frame))
    loss_w = bs.run_weights(frame, loss)[1].to_numpy()
    wide = bs.widen(frame, ones)
    run_means, reps = {}, {}
    chosen_nums = None
    for name, vals in values.items():
        row_w = loss_w if name == "loss" else ones
        dens = wide.weights if row_w is ones else np.bincount(
            wide.flat, weights=row_w, minlength=wide.weights.size).reshape(wide.weights.shape)
        nums = wide.sums(vals, row_w)
        run_means[name] = _run_means(bs.Wide(wide.examples, wide.runs, wide.flat, dens, wide.present), nums)
        if with_reps:
            reps[name] = bs.wide_replicates(nums, dens, wide.runs, rng=np_rng(seed, "bootstrap", ts), n_boot=n_boot)
        if name == chosen:
            chosen_nums = nums / np.where(dens > 0, dens, 1.0)
    per_ex = per_example_r(wide, chosen_nums, ts, reference, proxies)
    return TestSetScan(ts, run_means, reps, per_ex, len(wide.examples))


def per_example_r(wide: bs.Wide, values: np.ndarray, ts: str, reference: str, proxies: list[str]) -> pd.DataFrame:
    """Per test example: Pearson r across distributions between a proxy's and the reference's
    per-example value (each averaged over the cell's seeds)."""
    cell_of = pd.MultiIndex.from_arrays([wide.runs.get_level_values(0), wide.runs.get_level_values(1)])
    cells = cell_of.unique().sort_values()
    avg = np.zeros((len(wide.runs), len(cells)))
    avg[np.arange(len(wide.runs)), cells.get_indexer(cell_of)] = 1.0
    n = wide.present.astype(np.float64) @ avg  # (E, C) seeds with a result
    with np.errstate(invalid="ignore", divide="ignore"):
        cell = np.where(n > 0, np.where(wide.present, values, 0.0) @ avg / n, np.nan)  # (E, C)
    models = cells.get_level_values(0)
    ref_cols = {d: i for i, (m, d) in enumerate(cells) if m == reference}
    out = []
    for m in proxies:
        mine = {d: i for i, (mm, d) in enumerate(cells) if mm == m}
        dists = sorted(set(mine) & set(ref_cols))
        if m not in set(models) or not dists:
            continue
        xa, ya = cell[:, [mine[d] for d in dists]], cell[:, [ref_cols[d] for d in dists]]  # (E, D)
        ok = np.isfinite(xa).all(axis=1) & np.isfinite(ya).all(axis=1)
        r = np.full(len(wide.examples), np.nan)
        if ok.any() and len(dists) >= 2:
            r[ok] = stats.pearson(xa[ok], ya[ok])
        keep = np.isfinite(xa).any(axis=1) & np.isfinite(ya).any(axis=1)  # examples both were scored on
        out.append(pd.DataFrame({"test_set": ts, "model": m, "example_id": wide.examples[keep].astype(str),
                                 "r": r[keep], "n_dist": len(dists)}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()

"""Validation of the study tables and the seed × distribution loss matrices built from them.

The analysis consumes four pandas tables produced by the study runner (see
:func:`proxyscale.analyze.correlate.analyze_study`). This module checks them once, with errors
that say which column or row is wrong, and turns per-example results into the matrices every
statistic works on: for one (test set, model), a DataFrame indexed by seed with one column per
distribution holding the mean test loss over examples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError

MODEL_COLUMNS = ("model", "kind", "params", "train_tokens", "flops", "is_reference")
DIST_COLUMNS = ("distribution", "sources")
TEST_SET_COLUMNS = ("test_set", "kind", "source")


def _require(df: pd.DataFrame, cols: tuple[str, ...], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"the {name} table lacks column(s) {missing}; it has {list(df.columns)}")


@dataclass(frozen=True)
class Study:
    """Validated inputs plus the per-(test set, distribution, model, seed) mean losses."""

    models: pd.DataFrame        # indexed by model name
    distributions: pd.DataFrame  # indexed by distribution name
    test_sets: pd.DataFrame     # indexed by test-set name, with a "framing" column
    reference: str
    run_means: pd.DataFrame     # columns test_set, distribution, model, seed, loss (the analysed metric)

    matrices: dict[tuple[str, str], pd.DataFrame]  # (test_set, model) -> seeds × distributions

    def matrix(self, test_set: str, model: str) -> pd.DataFrame:
        """Seeds × distributions mean-loss matrix (empty if the model has no results there)."""
        return self.matrices.get((test_set, model), pd.DataFrame())

    def proxies(self) -> list[str]:
        """Every model with results except the reference, ordered by compute then name."""
        present = set(self.run_means["model"]) - {self.reference}
        rank = {"unigram": 1, "bigram": 2, "trigram": 3}  # n-grams tie on compute: order them naturally
        return sorted(present, key=lambda m: (float(self.models.at[m, "flops"]), int(self.models.at[m, "params"]),
                                              rank.get(m, 9), m))

    def ngrams(self) -> list[str]:
        return [m for m in self.proxies() if self.models.at[m, "kind"] == "ngram"]


def _framing(test_sets: pd.DataFrame, distributions: pd.DataFrame) -> pd.Series:
    """'mixed' (no single source), 'never_trained_on' (no distribution has the source) or 'per_source'."""
    trained = set(s for srcs in distributions["sources"] for s in srcs)

    def one(src: object) -> str:
        if src is None or (isinstance(src, float) and np.isnan(src)):
            return "mixed"
        return "per_source" if src in trained else "never_trained_on"

    return test_sets["source"].map(one)


def check_tables(models: pd.DataFrame, distributions: pd.DataFrame,
                 test_sets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """Check the models, distributions and test-set tables; return them indexed, and the reference."""
    for df, cols, name in ((models, MODEL_COLUMNS, "models"), (distributions, DIST_COLUMNS, "distributions"),
                           (test_sets, TEST_SET_COLUMNS, "test_sets")):
        _require(df, cols, name)
    mods = models.drop_duplicates("model").set_index("model")
    refs = list(mods.index[mods["is_reference"].astype(bool)])
    if len(refs) != 1:
        raise DataError(f"exactly one model must have is_reference=True, found {refs or 'none'}")
    bad_kind = sorted(set(mods["kind"]) - {"neural", "ngram"})
    if bad_kind:
        raise DataError(f"model kind must be 'neural' or 'ngram', got {bad_kind}")
    ts = test_sets.drop_duplicates("test_set").set_index("test_set").copy()
    dists = distributions.drop_duplicates("distribution").set_index("distribution").copy()
    dists["sources"] = dists["sources"].map(lambda s: [str(v) for v in s])
    ts["framing"] = _framing(ts, dists)
    return mods, dists, ts, refs[0]


def build_study(models: pd.DataFrame, distributions: pd.DataFrame, test_sets: pd.DataFrame, reference: str,
                run_means: pd.DataFrame) -> Study:
    """The study over ``run_means`` (test_set, distribution, model, seed, loss: the analysed
    metric's run mean, lower is better), from tables :func:`check_tables` returned."""
    if run_means.empty:
        raise DataError("the results table is empty; run the study's evaluation steps first")
    run_means = run_means.sort_values(["test_set", "distribution", "model", "seed"]).reset_index(drop=True)
    matrices = {k: g.pivot(index="seed", columns="distribution", values="loss")
                for k, g in run_means.groupby(["test_set", "model"], sort=True)}
    return Study(models, distributions, test_sets, reference, run_means, matrices)


def complete_rows(mat: pd.DataFrame, dists: list[str]) -> np.ndarray:
    """Rows (seeds) of ``mat`` that have a value for every distribution in ``dists``: (S, D)."""
    if mat.empty or not dists:
        return np.zeros((0, len(dists)))
    sub = mat.reindex(columns=dists).to_numpy(dtype=np.float64)
    return sub[np.isfinite(sub).all(axis=1)]


def seed_mean(mat: pd.DataFrame, dists: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distribution: mean over available seeds, sd over seeds (ddof=1; nan for one), count."""
    sub = mat.reindex(columns=dists).to_numpy(dtype=np.float64)
    n = np.isfinite(sub).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(sub, axis=0) / np.maximum(n, 1), np.nan)
        dev = np.where(np.isfinite(sub), sub - mean, 0.0)
        sd = np.where(n > 1, np.sqrt((dev * dev).sum(axis=0) / np.maximum(n - 1, 1)), np.nan)
    return mean, sd, n


def shared_distributions(study: Study, test_set: str, models: list[str], keep: list[str] | None = None) -> list[str]:
    """Distributions where every model in ``models`` has at least one seed on ``test_set``."""
    common: set[str] | None = None
    for m in models:
        mat = study.matrix(test_set, m)
        have = set(mat.columns[mat.notna().any(axis=0)]) if not mat.empty else set()
        common = have if common is None else common & have
    out = sorted(common or set())
    return [d for d in out if keep is None or d in keep]

"""Step functions of the suite: one per model bringing its per-example evidence into the store
(evaluating a checkpoint, reading lm-eval sample logs, reading a results table), and the
analysis, which writes the small-to-large analysis the scaling study writes.

Each evidence step writes ``<test set>.parquet`` with the columns of :data:`COLUMNS` (NaN where
the evidence has no such value; a table several models share gets one step, whose tables add a
``model`` column) and refuses input files whose sha256 changed since the plan was
built (the step's key names their content). Heavy imports happen inside the functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...errors import DataError
from ...run.step import StepContext, step_kind
from ...store import write_table
from ..fragments.lm_ladder import test_set_paths
from ..scaling.steps import test_counts, write_study_analysis
from .spec import SuiteAnalysisSpec

COLUMNS = ("example_id", "n_pred_tokens", "loss_sum", "loss", "bytes", "bpb", "correct_prob", "accuracy")
META = "suite"  # the analysis meta record this study adds: metric, evidence per model, dropped test sets


@dataclass(frozen=True)
class SuiteEvalStep:
    model: str
    checkpoint: str
    weights_sha256: str
    batch_size: int = 16
    # left out of the key at its default, so stores evaluated before the setting keep their keys
    document_start: Literal["lm_eval", "prefix"] = field(default="lm_eval", metadata={"omit_default": True})


@dataclass(frozen=True)
class SuiteSamplesStep:
    model: str
    runs: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SuiteTableStep:
    model: str
    results: str
    sha256: str
    test_sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuiteSharedTableStep:
    results: str
    sha256: str
    models: tuple[str, ...]
    test_sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuiteAnalyzeStep:
    analysis: SuiteAnalysisSpec
    models: tuple[dict[str, Any], ...]
    runs: tuple[dict[str, Any], ...]
    test_sets: dict[str, dict[str, Any]]
    distributions: dict[str, tuple[str, ...]]
    seed: int
    mixtures: dict[str, dict[str, float]] = field(default_factory=dict)


def _unchanged(path: Path, sha256: str, what: str) -> None:
    from ...store.output import sha256_file

    if not path.is_file() or sha256_file(path) != sha256:
        raise DataError(f"{path}: the {what} changed since the plan was built; run the suite again")


def _frame(df: Any, keep: tuple[str, ...] = ()) -> Any:
    """``df`` with the columns ``keep``, then every column of :data:`COLUMNS` (NaN where absent)."""
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    return df[[*keep, *COLUMNS]].assign(example_id=df["example_id"].astype(str))


@step_kind("suite_eval", config=SuiteEvalStep)
def suite_eval_step(ctx: StepContext) -> None:
    """Per-example metrics of one local Hugging Face checkpoint on every text test set; with
    ``document_start: prefix``, examples whose tokens start with the suite tokenizer's
    end-of-text token (those at their document's start) get the model's prefix token too."""
    from ...data.testset import read_test_set, starts_document
    from ...data.tokenizer import load_tokenizer
    from ...evaluate.hf import evaluate_hf, load_hf, weights_sha256

    c: SuiteEvalStep = ctx.cfg
    if weights_sha256(c.checkpoint) != c.weights_sha256:
        raise DataError(f"{c.checkpoint}: the weights changed since the plan was built; run the suite again")
    loaded = load_hf(c.checkpoint)
    eos = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json").eos_id if c.document_start == "prefix" else None
    for name, path in sorted(test_set_paths(ctx).items()):
        ts = read_test_set(path)
        flags = [starts_document(e, eos) for e in ts.examples] if eos is not None else None
        df = evaluate_hf(c.checkpoint, ts, batch_size=c.batch_size, loaded=loaded, doc_start=flags)
        write_table(ctx.out / f"{name}.parquet", _frame(df))


@step_kind("suite_samples", config=SuiteSamplesStep)
def suite_samples_step(ctx: StepContext) -> None:
    """Per-document metrics of one model's lm-eval runs, one table per task test set."""
    from ...data.lmeval import read_lmeval

    c: SuiteSamplesStep = ctx.cfg
    for ts, run in sorted(c.runs.items()):
        for key, sha in zip(("results", "samples"), run["sha256"]):
            _unchanged(Path(run[key]), sha, f"lm-eval {key} file")
        df = read_lmeval({c.model: run["results"]}, run["task"], id_field=run.get("id_field"))
        write_table(ctx.out / f"{ts}.parquet", _frame(df.drop(columns=["model", "test_set"])))


@step_kind("suite_table", config=SuiteTableStep)
def suite_table_step(ctx: StepContext) -> None:
    """One model's rows of a per-example results table, one table per test set."""
    from .evidence import check_results_table, read_results_table

    c: SuiteTableStep = ctx.cfg
    _unchanged(Path(c.results), c.sha256, "results table")
    df = read_results_table(Path(c.results), c.model)
    check_results_table(df, f"{c.results} (model {c.model})")
    for ts, part in df.groupby(df["test_set"].astype(str), sort=True):
        write_table(ctx.out / f"{ts}.parquet", _frame(part.reset_index(drop=True)))


@step_kind("suite_shared_table", config=SuiteSharedTableStep)
def suite_shared_table_step(ctx: StepContext) -> None:
    """The rows of every model a results table serves, read once: ``<test set>.parquet`` holds a
    ``model`` column and :data:`COLUMNS`, each model's rows together (in ``models`` order, each in
    the table's order); ``models.json`` lists the models, so the analysis knows to select."""
    import numpy as np
    import pandas as pd

    from ...store import write_json
    from .evidence import check_results_table, model_rows, read_results_table
    from .gather import SHARED

    c: SuiteSharedTableStep = ctx.cfg
    _unchanged(Path(c.results), c.sha256, "results table")
    df = read_results_table(Path(c.results), None)
    rows = model_rows(df, list(c.models), c.results)
    for m, idx in rows.items():
        check_results_table(df.iloc[idx], f"{c.results} (model {m})")
    owner = np.full(len(df), -1, dtype=np.int64)  # each row's index in c.models (-1: not served)
    for k, idx in enumerate(rows.values()):
        owner[idx] = k
    codes, names = pd.factorize(df["test_set"])
    for j, ts in enumerate(names):  # one test set's rows copied at a time, not the whole table
        sel = np.flatnonzero((codes == j) & (owner >= 0))
        sel = sel[np.argsort(owner[sel], kind="stable")]  # by model, each in the table's order
        part = df.iloc[sel].reset_index(drop=True).assign(model=pd.Categorical.from_codes(owner[sel],
                                                                                          list(c.models)))
        write_table(ctx.out / f"{ts}.parquet", _frame(part, ("model",)))
        del part
    write_json(ctx.out / SHARED, {"results": c.results, "models": list(c.models)})


@step_kind("suite_analyze", config=SuiteAnalyzeStep)
def suite_analyze_step(ctx: StepContext) -> None:
    """The small-to-large analysis of the suite's per-example results (the scaling study's tables)."""
    from .gather import evidence_of, result_loaders, write_results

    cfg = ctx.config
    metric = cfg["analysis"]["metric"]
    path = ctx.out / "results.parquet"
    kept, dropped = write_results(path, evidence_of(cfg["runs"], ctx.inputs), metric)
    if not kept:
        raise DataError(f"no test set has {metric} for the suite's models; choose another analysis.metric")
    tests = {t: v for t, v in cfg["test_sets"].items() if t in set(kept)}
    counts = {t: c for t, c in test_counts(ctx).items() if t in tests}
    meta = {"test_counts": counts, META: {"metric": metric, "runs": list(cfg["runs"]), "dropped": dropped,
                                          "ngrams": any(r.startswith("ngram:") for r in ctx.inputs)}}
    # one test set in memory at a time: the analysis reads each back through its loader
    write_study_analysis(ctx.out, result_loaders(path, kept), {**cfg, "test_sets": tests}, meta)

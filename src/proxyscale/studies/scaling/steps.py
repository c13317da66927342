"""Step functions of the small-to-large study: the n-gram baselines and the analysis.

Each writes only inside ``ctx.out``; heavy imports happen inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...run.step import StepContext, step_kind
from ...store import read_json, read_table, write_table
from ..fragments.lm_ladder import test_set_paths, train_stream
from ..fragments.pool import CHOSEN, WINDOWS
from .spec import AnalysisSpec


@dataclass(frozen=True)
class NgramStep:
    order: int
    distribution: str
    mixture: dict[str, float]
    context: int
    vocab_size: int
    tokens: int
    seed: int


@dataclass(frozen=True)
class AnalyzeStep:
    analysis: AnalysisSpec
    models: tuple[dict[str, Any], ...]
    test_sets: dict[str, dict[str, Any]]
    distributions: dict[str, tuple[str, ...]]
    seed: int
    mixtures: dict[str, dict[str, float]] = field(default_factory=dict)


@step_kind("ngram", config=NgramStep)
def ngram_step(ctx: StepContext) -> None:
    """A zero-compute proxy: an n-gram count model of the distribution, scored on every test set."""
    import numpy as np

    from ...analyze.ngram import fit_ngram, score_test_set
    from ...data.testset import read_test_set

    cfg = ctx.config
    n_batches = max(1, cfg["tokens"] // (64 * cfg["context"]))
    if "selection" in ctx.inputs:  # a selection-induced distribution: its chosen pool windows
        windows = np.load(ctx.inputs["pool"] / WINDOWS, mmap_mode="r", allow_pickle=False)
        chosen = np.sort(np.load(ctx.inputs["selection"] / CHOSEN, allow_pickle=False))
        docs = list(np.asarray(windows[np.resize(chosen, min(len(chosen), n_batches * 64))]))
    else:
        stream = train_stream(ctx, cfg["context"], cfg["seed"])
        docs = [row for i in range(n_batches) for row in np.asarray(stream.batch(i, 64))]  # one doc per window
    model = fit_ngram(docs, cfg["order"], cfg["vocab_size"])
    for name, path in sorted(test_set_paths(ctx).items()):
        write_table(ctx.out / f"{name}.parquet", score_test_set(model, read_test_set(path)))


def _gather_results(ctx: StepContext):
    import pandas as pd

    from .plan import NGRAM_NAMES

    frames = []
    for role, path in sorted(ctx.inputs.items()):
        parts = role.split(":")
        if parts[0] in ("target", "count"):
            continue
        if parts[0] == "eval":
            dist, model, seed = parts[1], parts[2], int(parts[3])
        else:
            dist, model, seed = parts[1], NGRAM_NAMES.get(int(parts[2]), f"{parts[2]}gram"), 0
        for f in sorted(path.glob("*.parquet")):
            df = read_table(f)
            frames.append(pd.DataFrame({"test_set": f.stem, "example_id": df["example_id"], "distribution": dist,
                                        "model": model, "seed": seed, "loss": df["loss"],
                                        "n_tokens": df["n_pred_tokens"], "correct": df["correct"]}))
    results = pd.concat(frames, ignore_index=True)
    return results[~_target_examples(ctx, results)].reset_index(drop=True)


def _target_examples(ctx: StepContext, results):
    """Rows of examples that a selection used as its target: they are not evaluated."""
    import numpy as np

    from ...data.testset import read_test_set

    drop = np.zeros(len(results), dtype=bool)
    for role, path in ctx.inputs.items():
        if role.startswith("target:"):
            test_set = role.split(":")[1]
            ids = {e.example_id for e in read_test_set(path / "test.parquet").examples}
            drop |= (results["test_set"] == test_set).to_numpy() & results["example_id"].isin(ids).to_numpy()
    return drop


@step_kind("analyze", version=3, config=AnalyzeStep)
def analyze_step(ctx: StepContext) -> None:
    """All small-to-large tables of the study (pure analysis over the per-example results)."""
    results = _gather_results(ctx)
    write_table(ctx.out / "results.parquet", results)
    meta = {"compute": _compute_spent(ctx), "test_counts": test_counts(ctx)}
    write_study_analysis(ctx.out, results, ctx.config, meta)


def write_study_analysis(out: Path, results: Any, cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Run :func:`~proxyscale.analyze.correlate.analyze_study` over per-example ``results`` and the
    models, distributions and test sets of ``cfg`` (an :class:`AnalyzeStep` config as plain data),
    and write the small-to-large analysis (kind ``scaling``) into ``out``. Every study kind that
    yields small-to-large results (a native ladder, a suite of others' models) writes through here,
    so they share one report."""
    import pandas as pd

    from ...analyze.correlate import analyze_study
    from ...analyze.io import write_analysis

    models = pd.DataFrame(cfg["models"])
    dists = pd.DataFrame([{"distribution": d, "sources": s, "mixture": _mixture_text(cfg.get("mixtures", {}).get(d))}
                          for d, s in sorted(cfg["distributions"].items())])
    tests = pd.DataFrame([{"test_set": t, **v} for t, v in sorted(cfg["test_sets"].items())])
    a = cfg["analysis"]
    analysis = analyze_study(results, models, dists, tests, seed=cfg["seed"], r2_threshold=a["r2_threshold"],
                             decision_threshold=a["decision_threshold"], n_boot=a["n_boot"], loss=a["loss"],
                             metric=a.get("metric", "loss"))
    write_analysis(analysis, out, kind="scaling", meta=meta)


def test_counts(ctx: StepContext) -> dict[str, Any]:
    """Examples requested and built per test set (inputs ``count:<test set>``)."""
    return {role[6:]: read_json(path / "testset.json") for role, path in sorted(ctx.inputs.items())
            if role.startswith("count:")}


def _mixture_text(mix: dict[str, float] | None) -> str | None:
    """'prose 0.50, code 0.25, doc 0.25': normalised weights, largest first (None for a selection)."""
    if not mix:
        return None
    total = sum(mix.values())
    items = sorted(((s, w / total) for s, w in mix.items() if w > 0), key=lambda t: (-t[1], t[0]))
    return ", ".join(f"{s} {w:.2f}" for s, w in items)


def _compute_spent(ctx: StepContext) -> dict[str, Any]:
    """Training FLOPs and wall time actually spent per model, as each eval step recorded it."""
    return {role[5:]: read_json(path / "train_metrics.json") for role, path in sorted(ctx.inputs.items())
            if role.startswith("eval:") and (path / "train_metrics.json").is_file()}

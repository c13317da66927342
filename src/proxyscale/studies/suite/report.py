"""The suite's report: the small-to-large report of the scaling study (the same tables, figures
and files, read from the same analysis format), with a section saying where each model's
evidence came from, which metric was compared, and whether the n-gram control is there."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ...analyze.io import read_analysis
from ...report.body import Body
from ...report.section import Section
from ...report.tables import from_frame
from ..scaling.report import report_parts as scaling_parts
from .steps import META

EVIDENCE_TEXT = {"checkpoint": "checkpoint, evaluated per example here", "samples": "lm-eval sample logs",
                 "results": "per-example results table"}
METRIC_TEXT = {"loss": "per-token loss (nats)", "bpb": "bits per byte", "correct_prob": "correct-choice probability",
               "accuracy": "accuracy"}


def suite_section(meta: dict[str, Any]) -> Section:
    """Where every model's evidence came from, the metric, and the n-gram control."""
    b = Body()
    metric = str(meta.get("metric", "loss"))
    b.p(f"A suite of models trained elsewhere, each labelled with its training distribution, scale and seed. "
        f"Compared metric: {METRIC_TEXT.get(metric, metric)} [analysis.metric: {metric}]; below, 'loss' means "
        f"this metric. Scales play the part of ladder rungs.")
    if not meta.get("ngrams"):
        b.p("The n-gram control is absent: no distribution lists its training `sources` (or the metric is not "
            "the per-token loss), so no count model could be fitted to control for.", cls="lead")
    runs = pd.DataFrame(meta.get("runs") or [])
    if len(runs):
        runs = runs.assign(evidence=runs["evidence"].map(lambda e: EVIDENCE_TEXT.get(e, e)),
                           reference=runs["reference"].map(lambda r: "yes" if r else ""))
        b.table("Suite models", from_frame(runs.sort_values(["scale", "distribution", "seed"]), {
            "name": "model", "distribution": "distribution", "scale": "scale", "seed": "seed",
            "reference": "reference", "evidence": "evidence"}))
    dropped = meta.get("dropped") or {}
    if dropped:
        b.bullets([f"{t}: left out ({why})" for t, why in sorted(dropped.items())])
    return b.section("Suite")


def report_parts(analysis_dir: str | Path) -> tuple[list[Section], dict[str, bytes | str]]:
    """The scaling report's sections and files, the suite's section after the overview."""
    sections, files = scaling_parts(analysis_dir)
    meta = dict(read_analysis(analysis_dir, kind="scaling").meta.get(META) or {})
    return [sections[0], suite_section(meta), *sections[1:]], files

"""Step functions of the selection study itself: the analysis. (Pool, proxies, DsDm scores,
target parts and selections come from the shared fragments.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...run.step import StepContext, step_kind


@dataclass(frozen=True)
class SelAnalyzeStep:
    name: str
    seed: int
    n_boot: int
    reference: str
    reference_seeds: tuple[int, ...]
    targets: tuple[str, ...]
    target_kinds: dict[str, str]
    rungs: dict[str, dict[str, Any]]
    proxies: tuple[str, ...]
    dsdm_models: int
    trak_flops: dict[str, float]
    context: int
    pool_windows: int
    selections: tuple[dict[str, Any], ...]


@step_kind("sel_analyze", version=2, config=SelAnalyzeStep)
def sel_analyze_step(ctx: StepContext) -> None:
    """Holdout loss per method and proxy scale with CIs, gains over random, compute multiplier."""
    from ...analyze.selection import analyze_selection

    analyze_selection(ctx.config, ctx.inputs, ctx.out)


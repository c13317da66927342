"""Selection across scale (paper §3.2): DsDm from proxies of several scales, Bot-DsDm, DSIR, a
classifier and random; the reference trained on each selection; target-holdout losses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...run.plan import Plan
from ..base import Study, register_study
from ..fragments import data, lm_ladder, pool, selection  # noqa: F401  (registers the fragments' step kinds)
from . import steps  # noqa: F401  (registers the study's step kinds)
from .plan import budget_table, build_selection_plan
from .spec import SelectionSpec


class SelectionStudy(Study):
    kind = "selection"
    spec_type = SelectionSpec
    analysis_kind = "sel_analyze"
    title = "proxyscale selection study"

    def plan(self, spec: SelectionSpec) -> Plan:
        return build_selection_plan(spec)

    def describe(self, spec: SelectionSpec, plan: Plan, store: Any = None) -> str:
        from ...run.describe import describe_steps, fmt_flops

        lines = [describe_steps(f"selection study '{spec.name}'", plan, store), "",
                 f"  {'rung':>8} {'params':>10} {'tokens':>12} {'windows':>9} {'FLOPs/run':>10}"]
        for name, r in budget_table(spec).items():
            lines.append(f"  {name:>8} {r['params']:>10,} {r['tokens']:>12,} {r['windows']:>9,} "
                         f"{fmt_flops(r['flops']):>10}{'  (reference)' if r['is_reference'] else ''}")
        return "\n".join(lines)

    def report_parts(self, analysis_dir: Path) -> tuple[list[Any], dict[str, Any]]:
        from .report import report_parts

        return report_parts(analysis_dir)


SELECTION = register_study(SelectionStudy())

"""Attribution across scale (paper §3.1): TRAK at every width of a ladder, LDS against
reference-width models retrained on α-subsets, counterfactual removal, compute spent."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...run.plan import Plan
from ..base import Study, register_study
from ..fragments import lds, lm_attr, vision  # noqa: F401  (registers the fragments' step kinds)
from . import steps  # noqa: F401  (registers the study's step kinds)
from .plan import build_attribution_plan, describe_attribution_plan
from .spec import AttributionSpec


class AttributionStudy(Study):
    kind = "attribution"
    spec_type = AttributionSpec
    analysis_kind = "attr_analyze"
    title = "proxyscale attribution study"

    def plan(self, spec: AttributionSpec) -> Plan:
        return build_attribution_plan(spec)

    def describe(self, spec: AttributionSpec, plan: Plan, store: Any = None) -> str:
        return describe_attribution_plan(spec, plan, store)

    def report_parts(self, analysis_dir: Path) -> tuple[list[Any], dict[str, Any]]:
        from .report import report_parts

        return report_parts(analysis_dir)

    def joined_sections(self, analysis_dir: Path) -> list[Any]:
        from .report import attribution_section

        return [attribution_section(analysis_dir)]


ATTRIBUTION = register_study(AttributionStudy())

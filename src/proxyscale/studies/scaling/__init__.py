"""Small-to-large scaling (paper §2): GPT ladders on many training distributions; how well proxy
losses predict the reference's, against n-gram baselines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...models.memory import GpuType
from ...run.plan import Plan
from ..base import Study, register_study
from ..fragments import data, lm_ladder, pool, selection  # noqa: F401  (registers the fragments' step kinds)
from . import steps  # noqa: F401  (registers the study's step kinds)
from .plan import build_plan
from .spec import StudySpec


class ScalingStudy(Study):
    kind = "scaling"
    spec_type = StudySpec
    analysis_kind = "analyze"
    title = "proxyscale study"

    def parse(self, raw: Any, where: str = "study") -> StudySpec:
        """As :meth:`Study.parse`, reading ``train.micro_batch_size: auto`` (each rung's
        micro-batch sized for the GPU by the planner) into ``auto_micro_batch``."""
        train = raw.get("train") if isinstance(raw, dict) else None
        if isinstance(train, dict) and train.get("micro_batch_size") == "auto":
            raw = {**raw, "train": {**train, "micro_batch_size": 0}, "auto_micro_batch": True}
        return super().parse(raw, where)

    def plan(self, spec: StudySpec) -> Plan:
        return build_plan(spec)

    def describe(self, spec: StudySpec, plan: Plan, store: Any = None) -> str:
        from .describe import describe_plan

        return describe_plan(spec, plan, store)

    def gpu_of(self, spec: StudySpec) -> GpuType:
        return spec.gpu.type

    def step_resources(self, spec: StudySpec, plan: Plan) -> tuple[dict[str, float], dict[str, int]]:
        from .gpus import step_resources

        return step_resources(spec, plan)

    def report_parts(self, analysis_dir: Path) -> tuple[list[Any], dict[str, Any]]:
        from .report import report_parts

        return report_parts(analysis_dir)


SCALING = register_study(ScalingStudy())

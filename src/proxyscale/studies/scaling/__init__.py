"""Small-to-large scaling (paper §2): GPT ladders on many training distributions; how well proxy
losses predict the reference's, against n-gram baselines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigError
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
        _check_auto_words(raw)
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


def _check_auto_words(raw: Any) -> None:
    """A word other than ``auto`` where a whole number or ``auto`` goes is one line saying so
    (the generic converter would only say "expected an integer")."""
    if not isinstance(raw, dict):
        return
    ladder = raw.get("ladder") if isinstance(raw.get("ladder"), dict) else {}
    rungs = ladder.get("rungs") if isinstance(ladder.get("rungs"), list) else []
    found = [("train.micro_batch_size", (raw.get("train") or {}).get("micro_batch_size")
              if isinstance(raw.get("train"), dict) else None), ("ladder.ranks", ladder.get("ranks"))]
    found += [(f"ladder.rungs[{i}].ranks", r.get("ranks")) for i, r in enumerate(rungs) if isinstance(r, dict)]
    for where, value in found:
        if isinstance(value, str) and value != "auto":
            raise ConfigError(f"{where}: {value!r} is neither a whole number nor auto; give a number, or auto to let "
                              "the planner size it for the GPU")

"""Suites (SPEC §9): the small-to-large analysis of models proxyscale did not train — local
Hugging Face checkpoints, lm-eval sample logs or per-example results tables — with the same
report as a native ladder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError
from ...run.plan import Plan
from ..base import Study, register_study
from ..fragments import data as _data  # noqa: F401  (registers the data fragment's step kinds)
from ..scaling import steps as _scaling_steps  # noqa: F401  (registers the ngram step kind)
from . import steps  # noqa: F401  (registers the suite's step kinds)
from .plan import build_plan
from .spec import FILL_ME, SuiteSpec, find_fill_me


class SuiteStudy(Study):
    kind = "suite"
    spec_type = SuiteSpec
    analysis_kind = "suite_analyze"
    title = "proxyscale suite"

    def parse(self, data: Any, where: str = "study") -> Any:
        field = find_fill_me(data) if isinstance(data, Mapping) else None
        if field:
            raise ConfigError(f"{field}: still {FILL_ME}; fill in every {FILL_ME} field `suite init` left")
        return super().parse(data, where)

    def plan(self, spec: SuiteSpec) -> Plan:
        return build_plan(spec)

    def report_parts(self, analysis_dir: Path) -> tuple[list[Any], dict[str, Any]]:
        from .report import report_parts

        return report_parts(analysis_dir)


SUITE = register_study(SuiteStudy())

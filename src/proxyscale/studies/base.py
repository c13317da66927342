"""The Study protocol: what a study kind declares, and the registry the API looks kinds up in.

A study kind is one folder under ``studies/`` holding its spec (a frozen dataclass with a
``kind`` field naming it in YAML), its plan (composed from :mod:`proxyscale.studies.fragments`),
its step functions (registered with :func:`proxyscale.run.step.step_kind`), its analysis entry
(the plan's last step, of kind :attr:`Study.analysis_kind`) and its report sections. It is
registered once with :func:`register_study` (the kinds shipped with proxyscale are imported,
and so registered, by ``proxyscale.studies``); ``api`` and ``cli`` never name a kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

from ..config import from_dict, load_yaml
from ..errors import ConfigError, StoreError
from ..models.memory import GpuType
from ..registry import Registry
from ..run.describe import describe_steps
from ..run.plan import Plan, Step

DEFAULT_KIND = "scaling"  # a YAML spec without `kind:` is a small-to-large study


class Study:
    """Base class of a study kind. Subclasses set :attr:`kind`, :attr:`spec_type` and
    :attr:`analysis_kind`, and implement :meth:`plan` and :meth:`report_parts`; the rest has
    defaults that fit most kinds.

    Every spec type has the fields ``name``, ``kind``, ``seed`` and ``executor``
    (:class:`~proxyscale.run.executor.ExecutorSpec`)."""

    kind: ClassVar[str]
    spec_type: ClassVar[type]
    analysis_kind: ClassVar[str] = "analyze"
    title: ClassVar[str] = "proxyscale study"

    def parse(self, data: Any, where: str = "study") -> Any:
        """The typed spec from plain data (strict: unknown keys are errors with a hint)."""
        spec = from_dict(self.spec_type, data, where)
        self.check(spec)
        return spec

    def check(self, spec: Any) -> None:
        """Checks that need more than the spec's own dataclasses (default: building the plan,
        which validates every step's config against its kind)."""
        self.plan(spec)

    def plan(self, spec: Any) -> Plan:
        raise NotImplementedError

    def analysis_step(self, plan: Plan) -> Step:
        """The step whose directory holds the study's analysis (the report's input)."""
        steps = plan.of_kind(self.analysis_kind)
        if len(steps) != 1:
            raise ConfigError(f"{self.kind} study: expected one '{self.analysis_kind}' step, found {len(steps)}")
        return steps[0]

    def describe(self, spec: Any, plan: Plan, store: Any = None) -> str:
        """Dry-run text (``proxyscale plan``): every step; kinds add their own tables."""
        return describe_steps(f"{self.kind} study '{spec.name}'", plan, store)

    def gpu_of(self, spec: Any) -> Optional[GpuType]:
        """The GPU the study is planned for (``run`` refuses a step that would not fit it), or
        None for kinds that name none."""
        return None

    def step_resources(self, spec: Any, plan: Plan) -> Optional[tuple[dict[str, float], dict[str, int]]]:
        """(hours, GPUs) per step key for ``plan --gpus N`` (:mod:`proxyscale.run.schedule`), or
        None for kinds that do not time their steps on GPUs."""
        return None

    def report_parts(self, analysis_dir: Path) -> tuple[list[Any], dict[str, Any]]:
        """The report's sections and extra files (name → bytes or text) from the analysis."""
        raise NotImplementedError

    def joined_sections(self, analysis_dir: Path) -> list[Any]:
        """Sections this study contributes when joined into another study's report."""
        return self.report_parts(analysis_dir)[0]

    def report_title(self, spec: Any) -> str:
        return f"{self.title}: {spec.name}"


STUDIES: Registry[Study] = Registry("study kind")


def register_study(study: Study, *, replace: bool = False) -> Study:
    """Register a study kind under ``study.kind`` (the YAML ``kind:``)."""
    return STUDIES.add(study.kind, study, replace=replace)


def study_of(spec: Any) -> Study:
    """The registered study kind of a spec object."""
    study = STUDIES.get(getattr(spec, "kind", DEFAULT_KIND))
    if not isinstance(spec, study.spec_type):
        raise ConfigError(f"a {type(spec).__name__} is not a '{study.kind}' spec ({study.spec_type.__name__})")
    return study


def load_study(source: Any) -> tuple[Study, Any]:
    """(study kind, typed spec) from a YAML path, plain data, or a spec object."""
    if not isinstance(source, (str, Path, Mapping)):
        return study_of(source), source
    data = load_yaml(source) if isinstance(source, (str, Path)) else source
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a study spec is a mapping of settings, got {type(data).__name__}")
    kind = data.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected the name of a study kind, got {kind!r}")
    study = STUDIES.get(kind)
    try:
        return study, study.parse(dict(data))
    except ConfigError as e:
        if isinstance(source, (str, Path)):
            raise ConfigError(f"{source}: {e}") from None
        raise


def finished_analysis(study: Study, spec: Any, store: Any, plan: Optional[Plan] = None) -> Path:
    """The finished analysis directory of a study in ``store``, or a clear error."""
    step = study.analysis_step(plan or study.plan(spec))
    if not store.is_done(step.key):
        raise StoreError(f"{study.kind} study '{spec.name}' has no finished analysis in {store.root}; "
                         "run `proxyscale run` first")
    store.check(step.key)  # one line naming the damaged file, not a parser's traceback
    return store.final_dir(step.key)


__all__: Sequence[str] = ["DEFAULT_KIND", "STUDIES", "Study", "finished_analysis", "load_study",
                          "register_study", "study_of"]

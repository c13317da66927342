"""Library entry points behind the CLI (and for notebooks): run, plan, status, report."""
from __future__ import annotations

from pathlib import Path

from .run.spec import StudySpec, load_spec

DEMO_SPEC = Path(__file__).parent / "configs" / "demo.yaml"


def _spec(spec: str | Path | StudySpec) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else load_spec(spec)


def run_study(spec: str | Path | StudySpec, store: str | Path = "runs", *, workers: int = 0,
              backend: str | None = None, progress: bool = True) -> Path:
    """Run every unfinished step of a study, then write its report; returns the report path."""
    from .run.backends import make_backend
    from .run.executor import default_workers, run_plan
    from .run.study import build_plan
    from .store import Store

    s = _spec(spec)
    st = Store(store)
    plan = build_plan(s)
    n = workers or s.executor.workers or default_workers()
    be = make_backend(backend or s.executor.backend, n, ray_address=s.executor.ray_address,
                      slurm_args=s.executor.slurm_args, job_dir=st.study_dir(s.name) / "jobs")
    try:
        summary = run_plan(plan, st, be, max_batch=s.executor.max_batch, progress=progress)
    finally:
        be.shutdown()
    summary.raise_for_failures()
    return write_study_report(s, st.root)


def plan_text(spec: str | Path | StudySpec, store: str | Path | None = None) -> str:
    from .run.describe import describe_plan
    from .run.study import build_plan
    from .store import Store

    s = _spec(spec)
    return describe_plan(s, build_plan(s), Store(store) if store else None)


def status_text(spec: str | Path | StudySpec, store: str | Path = "runs") -> tuple[str, int]:
    from .run.describe import describe_status
    from .run.study import build_plan
    from .store import Store

    s = _spec(spec)
    text, total = describe_status(build_plan(s), Store(store))
    return text, total["failed"]


def write_study_report(spec: str | Path | StudySpec, store: str | Path = "runs") -> Path:
    """Write ``<store>/<study>/report.html`` (and report.md) from the finished analysis step."""
    from .errors import StoreError
    from .report import write_report
    from .run.study import build_plan
    from .store import Store

    s = _spec(spec)
    st = Store(store)
    analysis = build_plan(s).of_kind("analyze")[0]
    if not st.is_done(analysis.key):
        raise StoreError(f"study '{s.name}' has no finished analysis in {st.root}; run `proxyscale run` first")
    html, _md = write_report(st.final_dir(analysis.key), st.study_dir(s.name), title=f"proxyscale study: {s.name}")
    return html

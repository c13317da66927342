"""Library entry points behind the CLI (and for notebooks): run, plan, status, report, attribute."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .run.attribution import AttributionSpec
from .run.spec import StudySpec, load_spec

DEMO_SPEC = Path(__file__).parent / "configs" / "demo.yaml"
ATTRIBUTION_DEMO_SPEC = Path(__file__).parent / "configs" / "attribution-demo.yaml"
ATTRIBUTION_SPEC = Path(__file__).parent / "configs" / "attribution.yaml"
AnySpec = Union[StudySpec, AttributionSpec]


def _spec(spec: str | Path | AnySpec) -> AnySpec:
    """A small-to-large study, or an attribution study when the YAML says ``kind: attribution``."""
    if isinstance(spec, (StudySpec, AttributionSpec)):
        return spec
    from .config import load_yaml
    from .run.attribution import check_kind, is_attribution_data, load_attribution_spec

    data = load_yaml(spec)
    check_kind(data)
    return load_attribution_spec(spec) if is_attribution_data(data) else load_spec(spec)


def _build_plan(s: AnySpec):
    if isinstance(s, AttributionSpec):
        from .run.attribution import build_attribution_plan

        return build_attribution_plan(s)
    from .run.study import build_plan

    return build_plan(s)


def run_study(spec: str | Path | AnySpec, store: str | Path = "runs", *, workers: int = 0,
              backend: str | None = None, progress: bool = True) -> Path:
    """Run every unfinished step of a study (small-to-large or attribution), then write its
    report; returns the report path."""
    s = _spec(spec)
    _run(s, _build_plan(s), store, workers, backend, progress)
    return write_study_report(s, store)


def run_demo(store: str | Path = "runs", *, workers: int = 0, progress: bool = True) -> Path:
    """The demo: the small-to-large study of configs/demo.yaml and the short attribution study of
    configs/attribution-demo.yaml; one report with both (plus the attribution study's own)."""
    lm, attr = _spec(DEMO_SPEC), _spec(ATTRIBUTION_DEMO_SPEC)
    _run(lm, _build_plan(lm), store, workers, None, progress)
    _run(attr, _build_plan(attr), store, workers, None, progress)
    write_study_report(attr, store)
    return write_study_report(lm, store, attribution=attr)


def _run(s: AnySpec, plan: Any, store: str | Path, workers: int, backend: str | None, progress: bool) -> None:
    from .run.backends import make_backend
    from .run.executor import default_workers, run_plan
    from .store import Store

    st = Store(store)
    n = workers or s.executor.workers or default_workers()
    be = make_backend(backend or s.executor.backend, n, ray_address=s.executor.ray_address,
                      slurm_args=s.executor.slurm_args, job_dir=st.study_dir(s.name) / "jobs")
    try:
        summary = run_plan(plan, st, be, max_batch=s.executor.max_batch, progress=progress)
    finally:
        be.shutdown()
    summary.raise_for_failures()


def plan_text(spec: str | Path | AnySpec, store: str | Path | None = None) -> str:
    from .run.describe import describe_plan
    from .store import Store

    s = _spec(spec)
    if isinstance(s, AttributionSpec):
        from .run.attribution import describe_attribution_plan

        return describe_attribution_plan(s, _build_plan(s), Store(store) if store else None)
    return describe_plan(s, _build_plan(s), Store(store) if store else None)


def status_text(spec: str | Path | AnySpec, store: str | Path = "runs") -> tuple[str, int]:
    from .run.describe import describe_status
    from .store import Store

    s = _spec(spec)
    text, total = describe_status(_build_plan(s), Store(store))
    return text, total["failed"]


def write_study_report(spec: str | Path | AnySpec, store: str | Path = "runs", *,
                       attribution: str | Path | AnySpec | None = None) -> Path:
    """Write ``<store>/<study>/report.html`` (and report.md) from the finished analysis step.

    ``attribution`` names a finished attribution study whose section joins this report."""
    from .errors import StoreError
    from .report import write_report
    from .store import Store

    s = _spec(spec)
    st = Store(store)
    if isinstance(s, AttributionSpec):
        from .report.attribution import write_attribution_report

        analysis = _build_plan(s).of_kind("attr_analyze")[0]
        if not st.is_done(analysis.key):
            raise StoreError(f"attribution study '{s.name}' has no finished analysis in {st.root}; "
                             "run `proxyscale run` first")
        html, _md = write_attribution_report(st.final_dir(analysis.key), st.study_dir(s.name),
                                             title=f"proxyscale attribution study: {s.name}")
        return html
    analysis = _build_plan(s).of_kind("analyze")[0]
    if not st.is_done(analysis.key):
        raise StoreError(f"study '{s.name}' has no finished analysis in {st.root}; run `proxyscale run` first")
    from .report.compute import compute_section

    adir = st.final_dir(analysis.key)
    extra = [sec for sec in (compute_section(adir),) if sec is not None]
    if attribution is not None:
        from .report.attribution import attribution_section

        a = _spec(attribution)
        a_key = _build_plan(a).of_kind("attr_analyze")[0].key
        if not st.is_done(a_key):
            raise StoreError(f"attribution study '{a.name}' has no finished analysis; run it first")
        extra.append(attribution_section(st.final_dir(a_key)))
    html, _md = write_report(adir, st.study_dir(s.name), title=f"proxyscale study: {s.name}", extra_sections=extra)
    return html


def attribute(model: Any, state_dicts: Sequence[Mapping[str, Any]], train_data: Any, target_data: Any,
              task: Any = "classification", *, out: str | Path | None = None, **settings: Any) -> Any:
    """TRAK attribution scores of your own PyTorch model and data: (n_train, n_targets) float32.

    Args:
        model: the architecture (``nn.Module``); its weights come from ``state_dicts``.
        state_dicts: one state dict per ensemble member (independent seeds and/or checkpoints
            from the last third of training); more members give better scores.
        train_data, target_data: tuples of arrays sharing the first axis — ``(x, y)`` for
            classification, ``(tokens (B, L), mask (B, L-1))`` for ``task="lm"`` — or
            non-shuffling DataLoaders.
        task: ``"classification"`` (log-odds margin), ``"lm"`` (mean per-token log-odds) or an
            :class:`~proxyscale.attribute.outputs.OutputFunction` (e.g.
            ``LMLogOdds(fused_attention=False)`` for the GPT of this package).
        out: also write the scores to this ``.npy`` path (atomically).
        **settings: TRAK settings — ``k`` (projection dimension), ``projector``, ``lambda_ratio``
            (ridge λ as a multiple of the mean squared feature norm; 1.0 is safe), ``use_q``,
            ``param_filter``, ``seed``, ``batch_size`` ... (see :class:`proxyscale.attribute.TRAK`).

    Higher scores mean the training example raises the target's output. Example::

        scores = proxyscale.api.attribute(MyNet(), [torch.load(p, weights_only=True) for p in ckpts],
                                          (x_train, y_train), (x_test[:100], y_test[:100]), k=1024)
    """
    import numpy as np

    from .attribute.trak import trak_scores
    from .errors import ConfigError
    from .store import write_npy

    if not state_dicts:
        raise ConfigError("attribute: pass at least one state dict (ideally several models or checkpoints)")
    scores = np.asarray(trak_scores(model, list(state_dicts), train_data, target_data, task, **settings),
                        dtype=np.float32)
    if out is not None:
        write_npy(out, scores)
    return scores


def attribution_options_spec(*, data: str = "digits", root: Optional[str] = None, n_train: int = 1000,
                             n_targets: int = 100, family: str = "mlp", width: float = 1.0, models: int = 5,
                             k: int = 512, lambda_ratio: float = 1.0, epochs: int = 30,
                             seed: int = 0) -> AttributionSpec:
    """An attribution spec from a few options (what ``proxyscale attribute`` without a spec uses)."""
    from .run.attribution import parse_attribution_spec

    # A ladder needs two widths; only ``width`` is ever run by attribution_scores.
    return parse_attribution_spec({
        "name": "attribute", "kind": "attribution", "seed": seed,
        "data": {"name": data, "root": root, "n_train": n_train, "n_targets": n_targets},
        "ladder": {"family": family, "widths": [width, 2 * width], "reference": width},
        "models_per_width": models, "train": {"epochs": epochs}, "trak": {"k": k, "lambda_ratio": lambda_ratio}})


def attribution_scores(spec: str | Path | AttributionSpec, store: str | Path = "runs", *,
                       width: Optional[float] = None, out: str | Path | None = None, workers: int = 0,
                       progress: bool = True) -> Path:
    """Train one width's ensemble of an attribution spec and compute its TRAK scores (resumable,
    shared with ``run_study``); returns the scores ``.npy`` path (copied to ``out`` if given).
    The scores use ``trak.lambda_ratio`` and ``trak.use_q``: choosing among candidates needs the
    study's held-out ground truth (``run_study`` records the choice in ``lds.parquet``)."""
    from .errors import ConfigError
    from .run.attribution import width_label
    from .run.plan import Plan
    from .store import Store, write_npy

    s = _spec(spec)
    if not isinstance(s, AttributionSpec):
        raise ConfigError("proxyscale attribute needs an attribution spec (a YAML file with `kind: attribution`)")
    w = s.ladder.reference if width is None else width
    if w not in s.ladder.widths:
        raise ConfigError(f"--width {w:g} is not one of the spec's widths {list(s.ladder.widths)}")
    full, sub = _build_plan(s), Plan()
    trak = next(st for st in full.of_kind("attr_trak") if st.name == width_label(w))
    sub.add(full[trak.inputs["models"]])
    sub.add(trak)
    _run(s, sub, store, workers, None, progress)
    path = Store(store).final_dir(trak.key) / "scores.npy"
    if out is not None:
        import numpy as np

        write_npy(out, np.load(path, allow_pickle=False))
        return Path(out)
    return path

"""Library entry points behind the CLI (and for notebooks): run, plan, status, report, attribute.

Every function takes a study spec as a YAML path, plain data or a spec object, and looks its
kind up in the study registry (:mod:`proxyscale.studies`); nothing here names a study kind.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .errors import ConfigError, StoreError
from .run.plan import Plan
from .store import Store
from .store.faults import check_directory, require_writable, store_errors
from .studies import Study, finished_analysis, load_study

DEMO_SPEC = Path(__file__).parent / "configs" / "demo.yaml"
ATTRIBUTION_DEMO_SPEC = Path(__file__).parent / "configs" / "attribution-demo.yaml"
ATTRIBUTION_SPEC = Path(__file__).parent / "configs" / "attribution.yaml"
SELECTION_DEMO_SPEC = Path(__file__).parent / "configs" / "selection-demo.yaml"


def __getattr__(name: str) -> Any:
    """``proxyscale.api.attribute`` (attribution of your own model) is imported on first use, so
    the commands that never touch torch in this process start without importing it."""
    if name == "attribute":
        from .attribute.user import attribute
        return attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SpecLike = Any  # a YAML path, a mapping, or a spec object of a registered study kind


def run_study(spec: SpecLike, store: str | Path = "runs", *, workers: int = 0, backend: str | None = None,
              progress: bool = True, force: bool = False) -> Path:
    """Run every unfinished step of a study, then write its report; returns the report path.
    Before any step runs, its sources are checked and its resource estimate must fit this
    machine (:mod:`proxyscale.studies.preflight`); ``force`` runs a plan that does not fit."""
    study, s = load_study(spec)
    _run([(study, s)], store, workers, backend, progress, force)
    return write_study_report(s, store)


def run_studies(specs: Sequence[SpecLike], store: str | Path = "runs", *, workers: int = 0,
                backend: str | None = None, progress: bool = True, force: bool = False) -> list[Path]:
    """Run several studies in one store as one plan, then write each one's report; returns the
    report paths. A step they share runs once, and one study's steps use the cores another leaves
    idle. The executor settings are the first study's; the others may differ in ``workers`` only."""
    studies = [load_study(spec) for spec in specs]
    if not studies:
        raise ConfigError("run_studies: give at least one study spec")
    _run(studies, store, workers, backend, progress, force)
    return [write_study_report(s, store) for _, s in studies]


def run_demo(store: str | Path = "runs", *, workers: int = 0, progress: bool = True) -> Path:
    """The demo: the small-to-large study of configs/demo.yaml, the short attribution study of
    configs/attribution-demo.yaml and the short selection study of configs/selection-demo.yaml;
    one report with all three (each of the other two also gets its own)."""
    check_directory(Path(store))
    studies = [load_study(p) for p in (DEMO_SPEC, ATTRIBUTION_DEMO_SPEC, SELECTION_DEMO_SPEC)]
    # One run of the three plans together: the attribution study needs no corpus, so its steps
    # fill the cores the others leave idle (the corpus build, each study's last analyses).
    _run(studies, store, workers, None, progress)
    for _, s in studies[1:]:
        write_study_report(s, store)
    return write_study_report(studies[0][1], store, join=[s for _, s in studies[1:]])


def study_plan(study: Study, s: Any, st: Optional[Store], measure: bool = False) -> Plan:
    """The study's plan with the measured training choices of store ``st`` in its keys
    (``measure``: measure the missing ones, which writes the store's calibration; otherwise they
    are read, and a choice not measured yet stays ``auto``)."""
    from .studies.fragments.measured import measured_choices

    if st is None:
        return study.plan(s)
    with measured_choices(st, measure=measure):
        return study.plan(s)


def _run(studies: list[tuple[Study, Any]], store: str | Path, workers: int, backend: str | None, progress: bool,
         force: bool = False) -> None:
    if workers < 0:
        raise ConfigError(f"--workers {workers}: give a number of workers ≥ 1, or 0 for one per core")
    st = Store(store)
    check_directory(st.root)
    st.check_format()
    with store_errors(st.root):
        _run_in(studies, st, workers, backend, progress, force)


def _run_in(studies: list[tuple[Study, Any]], st: Store, workers: int, backend: str | None, progress: bool,
            force: bool) -> None:
    """Run the studies' plans as one (steps they share run once) with the first study's executor
    settings; the others may differ in ``workers`` only (how many run at once, not what)."""
    from .run.backends import make_backend
    from .run.executor import default_workers, run_plan
    from .studies.preflight import preflight

    s = studies[0][1]
    for study, other in studies:
        if replace(other.executor, workers=0) != replace(s.executor, workers=0):
            raise ConfigError(f"studies {s.name} and {other.name} run together but their executor settings differ")
        preflight(study_plan(study, other, st), st, max_batch=other.executor.max_batch, force=force,
                  gpu=study.gpu_of(other))
    require_writable(st.root)  # a read-only store is refused before any step runs (or measures)
    st.check_format(create=True)
    plans = [study_plan(study, other, st, measure=True) for study, other in studies]  # measuring writes
    plan = plans[0] if len(plans) == 1 else Plan.union(plans)
    n = workers or s.executor.workers or default_workers()
    be = make_backend(backend or s.executor.backend, n, ray_address=s.executor.ray_address,
                      slurm_args=s.executor.slurm_args, job_dir=st.study_dir(s.name) / "jobs",
                      retries=s.executor.retries)
    try:
        summary = run_plan(plan, st, be, max_batch=s.executor.max_batch, progress=progress,
                           retries=s.executor.retries)
    finally:
        be.shutdown()
    summary.say_what_was_mended()
    from .studies.fragments.data import warn_shortfalls

    for one in plans:
        warn_shortfalls(one, st)
    summary.raise_for_failures()


def _existing_store(store: str | Path) -> Store:
    """The run store at ``store``, or a StoreError when there is none (reading never creates one)."""
    from .store.layout import STORE_FILE

    root = Path(store)
    check_directory(root)
    if not root.is_dir():
        raise StoreError(f"no run store at {root}: run the study first (`proxyscale run SPEC --store {root}`) "
                         "or pass the --store it ran in")
    if not (root / STORE_FILE).is_file() and not (root / "steps").is_dir():
        raise StoreError(f"{root} is not a proxyscale run store (no {STORE_FILE}); pass the --store the study ran in")
    st = Store(root)
    st.check_format()
    return st


def plan_text(spec: SpecLike, store: str | Path | None = None, gpus: Optional[int] = None) -> str:
    """Dry-run text: every step of the study, its kind's cost tables, the resource estimate
    that ``run`` checks, what it would submit, and with ``gpus`` the study's wall-clock on that
    many GPUs (:mod:`proxyscale.run.schedule`)."""
    from .studies.preflight import preflight_text

    study, s = load_study(spec)
    st = None
    if store is not None:
        st = Store(store)
        check_directory(st.root)
        st.check_format()
    plan = study_plan(study, s, st)
    parts = [study.describe(s, plan, st), _submission(s, plan, st)]
    if gpus is not None:
        parts.append(_schedule(study, s, plan, gpus))
    # last: what `run` would do (its final line is the verdict)
    parts.append(preflight_text(plan, st, max_batch=s.executor.max_batch, gpu=study.gpu_of(s)))
    return "\n\n".join(parts)


def _submission(s: Any, plan: Plan, st: Optional[Store]) -> str:
    """What ``run`` would submit for the steps not yet done, per step kind."""
    from .run.executor import available_cores
    from .run.submit import submission_text
    from .studies.preflight import pending_steps

    job_dir = (st or Store("runs")).study_dir(s.name) / "jobs"
    return submission_text(plan, pending_steps(plan, st), s.executor.backend, job_dir=job_dir.resolve(),
                           cores=available_cores(), slurm_args=s.executor.slurm_args)


def _schedule(study: Study, s: Any, plan: Plan, gpus: int) -> str:
    """``plan --gpus N``: the study packed on N GPUs, its makespan and critical path."""
    from .run.schedule import describe_schedule, list_schedule

    res = study.step_resources(s, plan)
    if res is None:
        raise ConfigError(f"--gpus: a {study.kind} study does not time its steps on GPUs; drop --gpus")
    return describe_schedule(plan, list_schedule(plan, res[0], res[1], gpus))


def status_text(spec: SpecLike, store: str | Path = "runs") -> tuple[str, int]:
    """Done / running / failed / pending steps per kind; and how many failed."""
    from .run.describe import describe_status
    from .studies.fragments.data import shortfalls, test_set_counts

    study, s = load_study(spec)
    st = _existing_store(store)
    plan = study_plan(study, s, st)
    text, total = describe_status(plan, st)
    warnings = "".join(f"\nwarning: {line}" for line in shortfalls(test_set_counts(plan, st)))
    return text + warnings, total["failed"]


def write_study_report(spec: SpecLike, store: str | Path = "runs", *, join: Sequence[SpecLike] = ()) -> Path:
    """Write ``<store>/<study>/report.html`` (and report.md) from the finished analysis step;
    the sections of each finished study in ``join`` are added to it. Returns the HTML path."""
    from .report import write_report

    study, s = load_study(spec)
    st = _existing_store(store)
    try:
        sections, files = study.report_parts(finished_analysis(study, s, st, study_plan(study, s, st)))
        for other in join:
            o_study, o = load_study(other)
            o_dir = finished_analysis(o_study, o, st, study_plan(o_study, o, st))
            sections = [*sections, *o_study.joined_sections(o_dir)]
    except (OSError, ValueError) as e:  # an analysis written without sums and damaged since
        raise StoreError(f"cannot read the analysis of '{s.name}' in {st.root} ({type(e).__name__}: {e}); "
                         "`proxyscale verify` checks the store, `proxyscale run` re-runs what is damaged") from None
    require_writable(st.root)
    with store_errors(st.root):
        html, _md = write_report(st.study_dir(s.name), study.report_title(s), sections, files=files)
    return html


def verify_store(spec: Optional[SpecLike] = None, store: str | Path = "runs") -> tuple[str, int]:
    """Check every finished step's files (of a study's plan, or of the whole store) against the
    sums recorded when it finished. Returns the text and how many steps are damaged."""
    st = _existing_store(store)
    if spec is not None:
        study, s = load_study(spec)
        keys = [step.key for step in study_plan(study, s, st) if st.is_done(step.key)]
    else:
        keys = st.finished_keys()
    bad = {k: found for k in keys if (found := st.problems(k))}
    lines = [f"{len(keys)} finished step(s) checked, {len(bad)} damaged"]
    for k, found in bad.items():
        lines.append(f"damaged: {k}: {'; '.join(found)}")
    if bad:
        lines.append("`proxyscale run SPEC` re-runs the damaged steps (and what read them, if the results differ)")
    return "\n".join(lines), len(bad)


def export_model(step_or_model: str, store: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a Hugging Face model directory (GPT-2 weights, config and the study's tokenizer) of
    the trained model ``step_or_model`` names: a ``train`` step key, or a unique prefix or name."""
    from .store.find import find_step

    st = _existing_store(store)
    key = find_step(st, "train", step_or_model)  # before torch loads: a wrong name is a quick line
    from .data.tokenizer import load_tokenizer
    from .models.gpt import load_gpt
    from .models.hf_export import export_hf

    st.check(key)
    rel = str(st.record(key).get("inputs", {}).get("tokenizer", ""))
    if not rel.startswith("steps/tokenizer/") or not st.is_done(rel.removeprefix("steps/")):
        raise StoreError(f"{key}: its tokenizer step ({rel or 'none recorded'}) is not in store {st.root}; "
                         "re-run the study that trained it")
    tok = load_tokenizer(st.final_dir(rel.removeprefix("steps/")) / "tokenizer.json")
    return export_hf(load_gpt(st.final_dir(key)), out, tokenizer=tok, overwrite=overwrite, flag="--out",
                     inputs=[("--store", st.root)])


def suite_init(folder: str | Path, out: str | Path = "suite.yaml", *, overwrite: bool = False) -> Path:
    """Write a suite spec skeleton listing the Hugging Face checkpoints and lm-eval runs found
    under ``folder``, with the fields only the user knows marked ``FILL-ME``."""
    from .studies.suite.init import write_skeleton

    return write_skeleton(folder, out, overwrite=overwrite)


def attribution_options_spec(*, data: str = "digits", root: Optional[str] = None, n_train: int = 1000,
                             n_targets: int = 100, family: str = "mlp", width: float = 1.0, models: int = 5,
                             k: int = 512, lambda_ratio: float = 1.0, epochs: int = 30, seed: int = 0) -> Any:
    """An attribution spec from a few options (what ``proxyscale attribute`` without a spec uses)."""
    # A ladder needs two widths; only ``width`` is ever run by attribution_scores.
    return load_study({
        "name": "attribute", "kind": "attribution", "seed": seed,
        "data": {"name": data, "root": root, "n_train": n_train, "n_targets": n_targets},
        "ladder": {"family": family, "widths": [width, 2 * width], "reference": width},
        "models_per_width": models, "train": {"epochs": epochs}, "trak": {"k": k, "lambda_ratio": lambda_ratio}})[1]


def attribution_scores(spec: SpecLike, store: str | Path = "runs", *, width: Optional[float] = None,
                       out: str | Path | None = None, workers: int = 0, progress: bool = True,
                       overwrite: bool = False) -> Path:
    """Train one width's ensemble of an attribution spec and compute its TRAK scores (resumable,
    shared with ``run_study``); returns the scores ``.npy`` path (copied to ``out`` if given).
    The scores use ``trak.lambda_ratio`` and ``trak.use_q``: choosing among candidates needs the
    study's held-out ground truth (``run_study`` records the choice in ``lds.parquet``).
    ``out`` follows the output policy (:mod:`proxyscale.store.output`, single file: a sidecar
    ``<out>.proxyscale-output.json`` marks it as proxyscale's): checked before anything runs,
    never the store, the spec or the data, replaced only with ``overwrite``."""
    from .store.output import check_output, output_file
    from .studies.attribution.plan import width_steps

    study, s = load_study(spec)
    inputs = _attribution_inputs(spec, s, store)
    if out is not None:
        check_output(out, inputs=inputs, overwrite=overwrite, single_file=True)
    sub, trak_key = width_steps(study, s, width)
    _run([(_FixedPlan(sub), s)], store, workers, None, progress)
    path = Store(store).final_dir(trak_key) / "scores.npy"
    if out is None:
        return path
    with output_file(out, inputs=inputs, overwrite=overwrite, need_bytes=path.stat().st_size) as tmp:
        tmp.write_bytes(path.read_bytes())
    return Path(out)


class _FixedPlan:
    """A study stand-in whose plan is one already built (``proxyscale attribute``'s sub-plan)."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    def plan(self, _spec: Any) -> Plan:
        return self._plan

    def gpu_of(self, _spec: Any) -> None:
        """No GPU named: the sub-plan runs where ``attribute`` runs."""
        return None


def _attribution_inputs(spec: SpecLike, s: Any, store: str | Path) -> list[tuple[str, Any]]:
    """What ``attribute --out`` may not be, lie in or contain: the store, the spec file, the data root."""
    inputs: list[tuple[str, Any]] = [("--store", store)]
    if isinstance(spec, (str, Path)):
        inputs.append(("spec", spec))
    root = getattr(getattr(s, "data", None), "root", None)
    if root:
        inputs.append(("data.root", root))
    return inputs


def select(method: str, pool: str | Path, target: str | Path, n: int | float | str, out: str | Path, *,
           seed: int = 0, hub: bool = False, text_field: str = "text", id_field: Optional[str] = None,
           target_text_field: Optional[str] = None, settings: Optional[Mapping[str, Any]] = None,
           overwrite: bool = False, write: Optional[str] = None, hub_name: Optional[str] = None,
           split: str = "train", revision: Optional[str] = None, max_docs: Optional[int] = None,
           streaming: bool = True, progress: Optional[bool] = None, workers: Optional[int] = None,
           backend: Optional[str] = None, ray_address: Optional[str] = None) -> Path:
    """Pick documents of ``pool`` toward ``target`` with a registered method (random, dsir,
    classifier, dsdm, bot-dsdm; :func:`proxyscale.select.describe_methods` lists their settings);
    write the chosen ids, every document's score and a manifest (every setting, input hashes,
    versions, wall time per phase, warnings) to ``out``.

    ``n``: a count (an integer ≥ 1) or a fraction of the pool in (0, 1] (``0.2``, or ``"0.2"``).
    ``pool``/``target``: a text directory or file, ``.jsonl`` or ``.parquet``, read under the same
    policy as a study's sources; with ``hub``, Hugging Face dataset names, read at config
    ``hub_name``, ``split`` and ``revision`` (``streaming``: without downloading the whole
    dataset first). ``max_docs``: read only the pool's first documents. ``write`` (``"jsonl"``
    or ``"parquet"``) also writes the chosen documents, in pool order with ids and scores, to
    ``out/selected.<write>`` (a study's local source can read it). ``progress``: bars with ETA on
    stderr (``None``: when stderr is a terminal); warnings are one stderr line each regardless.
    ``out`` follows the output policy (:mod:`proxyscale.store.output`): never an input, never a
    directory proxyscale did not write; an earlier selection is replaced only with
    ``overwrite``. Same inputs and seed give a byte-identical selection.

    ``workers`` or ``backend`` (``"local"``: a process pool of ``workers``; ``"ray"``: Ray tasks
    on ``ray_address`` or a private loopback node) treat the pool's files (a directory or a glob)
    as shards, featurised and scored per shard, resumable from ``<out>.work/``
    (:mod:`proxyscale.select.shards`); the selection is the same as without them."""
    from .select.command import Hub, Request, run

    hub_at = Hub(name=hub_name, split=split, revision=revision, streaming=streaming) if hub else None
    if not hub and (hub_name is not None or revision is not None or split != "train"):
        raise ConfigError("--hub-name, --split and --revision choose what to read from the Hugging Face hub; add "
                          "--hub, or leave them out for local files")
    return run(Request(method, str(pool), str(target), n, str(out), seed=seed, hub=hub_at, text_field=text_field,
                       id_field=id_field, target_text_field=target_text_field, settings=dict(settings or {}),
                       overwrite=overwrite, write=write, max_docs=max_docs, progress=progress,
                       mapper=_shard_mapper(workers, backend, ray_address)))


def _shard_mapper(workers: Optional[int], backend: Optional[str], ray_address: Optional[str]) -> Any:
    """How ``select`` runs per-shard tasks (None: the whole pool in this process)."""
    if backend not in (None, "local", "ray"):
        raise ConfigError(f"--backend {backend!r}: use local or ray")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers}: give a number of processes ≥ 1 (0: one per core)")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address is for --backend ray; add it or leave --ray-address out")
    if backend == "ray":
        from .run.backends.ray import ray_map

        return ray_map(ray_address, workers or 0)
    if workers is None and backend is None:
        return None
    from .select.shards import inline_map, process_map

    n = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return inline_map if n == 1 else process_map(n)


__all__ = ["Study", "attribute", "attribution_options_spec", "attribution_scores", "plan_text", "run_demo",  # noqa: F822 - `attribute` comes from __getattr__
           "run_studies", "run_study", "select", "status_text", "verify_store", "write_study_report"]

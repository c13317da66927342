"""The suite's spec: models someone else trained, each labelled and with one piece of evidence.

A suite lists models (training distribution, scale label, seed, parameters, training tokens,
reference or not) and where their per-example evidence comes from: a local Hugging Face
checkpoint that proxyscale evaluates on the suite's text test sets, lm-evaluation-harness sample
logs, or a per-example results table. The checks here read no files; those that must (weights,
logs, tables) run when the plan is built (:mod:`proxyscale.studies.suite.evidence`).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...config import suggest
from ...errors import ConfigError
from ...models.ladder import train_flops
from ...run.executor import ExecutorSpec
from ...run.plan import check_name
from ..fragments.data import CorpusSpec, TestSetSpec, TokenizerSpec, check_sources
from ..scaling.spec import AnalysisSpec

FILL_ME = "FILL-ME"  # what `suite init` writes where the user must fill a field in
METRICS = ("loss", "bpb", "correct_prob", "accuracy")
EVIDENCE = ("checkpoint", "samples", "results")


@dataclass(frozen=True)
class SuiteModel:
    """One model of the suite and its evidence: exactly one of ``checkpoint`` (a local Hugging
    Face directory), ``samples`` (a glob of lm-eval results files or their directories) or
    ``results`` (a Parquet or CSV per-example table)."""

    name: str
    distribution: str
    scale: str
    seed: int
    params: int
    train_tokens: int
    flops: Optional[float] = None
    reference: bool = False
    checkpoint: Optional[str] = None
    samples: Optional[str] = None
    results: Optional[str] = None

    def __post_init__(self) -> None:
        check_name(self.name, "models: the model name")
        where = f"models.{self.name}"
        check_name(self.distribution, f"{where}.distribution")
        check_name(self.scale, f"{where}.scale")
        given = [k for k in EVIDENCE if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of checkpoint, samples or results (got "
                              f"{', '.join(given) or 'none'})")
        if self.params <= 0 or self.train_tokens <= 0:
            raise ConfigError(f"{where}: params and train_tokens must be positive, got {self.params} and "
                              f"{self.train_tokens}")
        if self.flops is not None and not self.flops > 0:
            raise ConfigError(f"{where}.flops must be positive (or left out for 6·params·train_tokens)")

    @property
    def evidence(self) -> tuple[str, str]:
        """(kind, path or glob) of the model's evidence."""
        kind = next(k for k in EVIDENCE if getattr(self, k) is not None)
        return kind, str(getattr(self, kind))

    @property
    def compute(self) -> float:
        return float(self.flops) if self.flops is not None else float(train_flops(self.params, self.train_tokens))


@dataclass(frozen=True)
class SuiteTestSet:
    """A test set of the suite: built from held-out text of ``sources`` (or ``hub``) for
    checkpoint models, as in the scaling spec; or ``task``, the lm-eval task whose sample logs
    are the test set; or neither, a test set that only results tables hold (``kind`` and
    ``source`` then only describe it)."""

    kind: Literal["lm", "cloze", "qa", "choice"] = "lm"
    sources: tuple[str, ...] = ()
    hub: Optional[str] = None
    n_examples: int = 200
    task: Optional[str] = None
    id_field: Optional[str] = None
    source: Optional[str] = None

    def __post_init__(self) -> None:
        if self.task is not None and (self.sources or self.hub):
            raise ConfigError("a test set is either built (sources or hub) or an lm-eval task, not both")

    @property
    def built(self) -> bool:
        return bool(self.sources) or self.hub is not None

    def build_spec(self) -> TestSetSpec:
        return TestSetSpec(kind=self.kind, sources=self.sources, hub=self.hub, n_examples=self.n_examples)

    def framing_source(self) -> Optional[str]:
        """The one source the test set comes from (None: mixed), as the scaling study records it."""
        if self.built:
            return self.sources[0] if len(self.sources) == 1 and self.hub is None else None
        return self.source


@dataclass(frozen=True)
class SuiteAnalysisSpec(AnalysisSpec):
    """The scaling study's analysis settings plus ``metric``: which per-example column is compared
    (``loss``: per-token loss in nats; ``bpb``: bits per byte; ``correct_prob``; ``accuracy``)."""

    metric: Literal["loss", "bpb", "correct_prob", "accuracy"] = "loss"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss == "token_mean" and self.metric in ("correct_prob", "accuracy"):
            raise ConfigError(f"analysis.loss: token_mean weighs examples by predicted tokens, which means "
                              f"nothing for {self.metric}; use loss: example_mean")


@dataclass(frozen=True)
class SuiteEvaluationSpec:
    """How checkpoints are scored. ``document_start``: ``lm_eval`` (default) adds the model's
    prefix token (BOS, else EOS) only before an empty context, as lm-evaluation-harness does, so
    checkpoint evaluations agree with lm-eval sample logs; ``prefix`` also adds it before the
    context of every example that starts at its document's start, the way proxyscale's own models
    saw their documents (an exported native model then gives the native losses on qa, cloze and
    choice examples too)."""

    document_start: Literal["lm_eval", "prefix"] = "lm_eval"


@dataclass(frozen=True)
class SuiteSpec:
    """A suite study (SPEC §9)."""

    name: str
    models: tuple[SuiteModel, ...]
    kind: Literal["suite"] = "suite"
    seed: int = 0
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)
    test_sets: dict[str, SuiteTestSet] = field(default_factory=dict)
    context: int = 128
    heldout_fraction: float = 0.1
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    analysis: SuiteAnalysisSpec = field(default_factory=SuiteAnalysisSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    eval_batch_size: int = 16
    evaluation: SuiteEvaluationSpec = field(default_factory=SuiteEvaluationSpec)

    def __post_init__(self) -> None:
        check_name(self.name, "name: the suite name")
        if not self.models:
            raise ConfigError("models: list the suite's models (`proxyscale suite init DIR` writes a skeleton)")
        if self.context < 8 or not 0.0 < self.heldout_fraction < 1.0 or self.eval_batch_size < 1:
            raise ConfigError("context must be ≥ 8, heldout_fraction strictly between 0 and 1, eval_batch_size ≥ 1")
        self._check_models()
        self._check_data()

    def _check_models(self) -> None:
        dup = [n for n, c in Counter(m.name for m in self.models).items() if c > 1]
        if dup:
            raise ConfigError(f"models: the name '{dup[0]}' is used twice; give every model its own name")
        runs = Counter((m.distribution, m.scale, m.seed) for m in self.models)
        twice = [r for r, c in runs.items() if c > 1]
        if twice:
            d, s, seed = twice[0]
            names = [m.name for m in self.models if (m.distribution, m.scale, m.seed) == twice[0]]
            raise ConfigError(f"models {', '.join(names)}: the same distribution '{d}', scale '{s}' and seed {seed}; "
                              "give each run its own seed (or fix the labels)")
        ref_scales = sorted({m.scale for m in self.models if m.reference})
        if len(ref_scales) != 1:
            raise ConfigError(f"models: mark the reference models (the largest scale) with `reference: true`; "
                              f"exactly one scale may be the reference, found {ref_scales or 'none'}")
        stray = [m.name for m in self.models if m.scale == ref_scales[0] and not m.reference]
        if stray:
            raise ConfigError(f"models {', '.join(stray)}: scale '{ref_scales[0]}' is the reference scale; mark "
                              "them `reference: true` too, or give them another scale label")
        if len({m.scale for m in self.models}) < 2:
            raise ConfigError("models: every model has the reference scale; a suite needs smaller proxy scales too")
        dists = sorted({m.distribution for m in self.models})
        if len(dists) < 2:
            raise ConfigError(f"models: only one training distribution ({dists[0]}); comparing proxies needs at "
                              "least two distributions (three or more for R²)")
        self._check_scales()

    def _check_scales(self) -> None:
        """Models of one scale label share params, training tokens and FLOPs (one row per scale)."""
        seen: dict[str, set[tuple[int, int, float]]] = defaultdict(set)
        for m in self.models:
            seen[m.scale].add((m.params, m.train_tokens, m.compute))
        for scale, sizes in sorted(seen.items()):
            if len(sizes) > 1:
                raise ConfigError(f"scale '{scale}': its models differ in params / train_tokens / flops "
                                  f"({sorted(sizes)}); give models of one size one scale label")

    def _check_data(self) -> None:
        built = {t: ts.build_spec() for t, ts in self.test_sets.items() if ts.built}
        for t in self.test_sets:
            check_name(t, "test_sets: the test set name")
        if self.sources or built:
            check_sources(self.sources, built, self.tokenizer)
        for dname, mix in self.distributions.items():
            check_name(dname, "distributions: the distribution name")
            for s, w in mix.items():
                if s not in self.sources:
                    raise ConfigError(f"distributions.{dname}: unknown source '{s}'{suggest(s, self.sources)}")
                if not isinstance(w, (int, float)) or w < 0:
                    raise ConfigError(f"distributions.{dname}.{s}: weight must be a number ≥ 0, got {w!r}")
        if self.distributions:
            for m in self.models:
                if m.distribution not in self.distributions:
                    raise ConfigError(f"models.{m.name}.distribution: '{m.distribution}' is not under "
                                      f"distributions{suggest(m.distribution, self.distributions)}")
        kinds = {m.evidence[0] for m in self.models}
        if "checkpoint" in kinds and not built:
            raise ConfigError("test_sets: checkpoint models need test sets built from `sources` (or `hub`) to "
                              "be evaluated on, e.g. {kind: lm, sources: [web], n_examples: 200}")
        if "samples" in kinds and not any(ts.task for ts in self.test_sets.values()):
            raise ConfigError("test_sets: models with lm-eval samples need test sets naming their tasks, "
                              "e.g. hellaswag: {task: hellaswag}")

    def trained_sources(self) -> list[str]:
        """Sources some distribution trains on with positive weight (the n-gram baselines' data)."""
        return sorted({s for mix in self.distributions.values() for s, w in mix.items() if w > 0})

    @property
    def reference_scale(self) -> str:
        return next(m.scale for m in self.models if m.reference)


def find_fill_me(data: Any, where: str = "") -> Optional[str]:
    """The first field still holding :data:`FILL_ME` (e.g. ``models[2].distribution``), else None."""
    if isinstance(data, str):
        return where if data.strip() == FILL_ME else None
    items = (data.items() if isinstance(data, dict)
             else enumerate(data) if isinstance(data, (list, tuple)) else ())
    for k, v in items:
        found = find_fill_me(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}".lstrip("."))
        if found:
            return found
    return None

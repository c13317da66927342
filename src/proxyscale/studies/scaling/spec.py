"""The small-to-large study's spec: what to train, on what, and how to compare it.

A spec is data (frozen dataclasses), read strictly by :func:`proxyscale.studies.load_study`:
unknown keys get a "did you mean" hint, impossible sizes are rejected before any work starts. This module imports
no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...config import suggest
from ...errors import ConfigError
from ...models.memory import GpuType, lookup_gpu
from ...run.executor import ExecutorSpec
from ...run.plan import check_name
from ...train.optim import TrainConfig
from ..fragments.data import CorpusSpec, TestSetSpec, TokenizerSpec, check_sources
from ..fragments.lm_ladder import LadderSpec, RungSpec
from ..fragments.pool import DsDmSpec, PoolSpec

__all__ = ["AnalysisSpec", "GpuSpec", "LadderSpec", "RungSpec", "SelectedSpec", "StudySpec", "TestSetSpec",
           "TokenizerSpec"]


@dataclass(frozen=True)
class GpuSpec:
    """The GPU a study is planned for: a name from the table of
    :mod:`proxyscale.models.memory` (``H100-80GB``, ``H200-141GB``, ``A100-40GB``, ``A100-80GB``,
    ``L4-24GB``), or any name with ``memory_gb`` and ``peak_tflops`` (either also overrides a
    known GPU's number), and the MFU that turns FLOPs into hours. ``plan`` sizes every rung's
    micro-batch and ranks for it; ``run`` refuses a step that would not fit it."""

    name: str = "H100-80GB"
    mfu: float = 0.40
    peak_tflops: Optional[float] = None
    memory_gb: Optional[float] = None

    def __post_init__(self) -> None:
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"gpu.mfu must lie in (0, 1], got {self.mfu:g} (0.4 is typical for an H100)")
        lookup_gpu(self.name, self.memory_gb, self.peak_tflops)  # a known name, or both numbers

    @property
    def type(self) -> GpuType:
        """The GPU's memory and peak TFLOP/s."""
        return lookup_gpu(self.name, self.memory_gb, self.peak_tflops)


@dataclass(frozen=True)
class AnalysisSpec:
    """How the study's results are compared. ``metric`` ranks the distributions: ``loss``
    (per-token loss), ``bpb`` (bits per byte), ``correct_prob`` (correct-choice probability) or
    ``accuracy``; the last two are higher-is-better and read as 1 − value. ``loss`` defines a
    model's mean test loss: ``example_mean`` (mean over examples of each example's mean
    per-token loss) or ``token_mean`` (total loss over total predicted tokens: long examples
    weigh more; loss metric only)."""

    r2_threshold: float = 0.9
    decision_threshold: float = 0.9
    n_boot: int = 1000
    ngram_orders: tuple[int, ...] = (1, 2, 3)
    loss: Literal["example_mean", "token_mean"] = "example_mean"
    metric: Literal["loss", "bpb", "correct_prob", "accuracy"] = "loss"

    def __post_init__(self) -> None:
        if self.loss == "token_mean" and self.metric != "loss":
            raise ConfigError(f"analysis.loss: token_mean weighs the tokens of the per-token loss; with "
                              f"analysis.metric: {self.metric} use loss: example_mean")
        if not (0 < self.r2_threshold <= 1 and 0 < self.decision_threshold <= 1):
            raise ConfigError("analysis: r2_threshold and decision_threshold must lie in (0, 1]")
        if self.n_boot < 20:
            raise ConfigError(f"analysis.n_boot={self.n_boot}: a bootstrap needs at least 20 resamples "
                              "(1000 is typical)")
        if any(o not in (1, 2, 3) for o in self.ngram_orders) or len(set(self.ngram_orders)) != len(self.ngram_orders):
            raise ConfigError(f"analysis.ngram_orders {list(self.ngram_orders)}: distinct orders among 1, 2 and 3")


@dataclass(frozen=True)
class SelectedSpec:
    """A selection-induced training distribution (the paper's 4 of 10): ``method`` picks the
    reference's token budget of pool windows toward the first ``n_target`` examples (a seeded
    split) of test set ``target`` — those examples are then left out of that test set's
    evaluation — with DsDm's proxies of ladder rung ``proxy``."""

    method: Literal["random", "dsir", "classifier", "dsdm", "bot-dsdm"]
    target: Optional[str] = None
    proxy: Optional[str] = None
    n_target: int = 100
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """A whole small-to-large study."""

    name: str
    sources: dict[str, dict[str, Any]]
    distributions: dict[str, dict[str, float]]
    test_sets: dict[str, TestSetSpec]
    ladder: LadderSpec
    kind: Literal["scaling"] = "scaling"
    seed: int = 0
    context: int = 128
    heldout_fraction: float = 0.1
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    gpu: GpuSpec = field(default_factory=GpuSpec)
    pool: Optional[PoolSpec] = None
    selections: dict[str, SelectedSpec] = field(default_factory=dict)
    dsdm: DsDmSpec = field(default_factory=DsDmSpec)
    # set by `train.micro_batch_size: auto`: each rung's micro-batch is the largest that fits the GPU
    auto_micro_batch: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "name: the study name")
        if not self.distributions:
            raise ConfigError("distributions: define at least one training distribution")
        if self.context < 8:
            raise ConfigError(f"context={self.context} is too short; use at least 8 tokens")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError("heldout_fraction must lie strictly between 0 and 1")
        check_sources(self.sources, self.test_sets, self.tokenizer)
        for dname in {**self.distributions, **self.selections}:
            check_name(dname, "distributions: the distribution name")
        for dname, mix in self.distributions.items():
            _check_mixture(dname, mix, self.sources)
        for sname, sel in self.selections.items():
            self._check_selection(sname, sel)
        if self.analysis.metric in _NOT_RECORDED:
            raise ConfigError(f"analysis.metric: {self.analysis.metric} is not recorded by this study's evaluation "
                              f"(it records per-token loss and, on multiple-choice test sets, accuracy); use loss "
                              f"or accuracy")
        if self.analysis.metric == "accuracy" and not any(t.kind == "choice" for t in self.test_sets.values()):
            raise ConfigError("analysis.metric: accuracy needs a multiple-choice test set (kind: choice); the others "
                              "have one candidate per example and no accuracy. Add one, or use metric: loss")

    def _check_selection(self, sname: str, sel: SelectedSpec) -> None:
        where = f"selections.{sname}"
        if sname in self.distributions:
            raise ConfigError(f"{where}: '{sname}' is also a distribution; give the selection another name")
        if self.pool is None:
            raise ConfigError(f"{where}: a selection needs a `pool:` (its sources and number of windows)")
        for s in self.pool.sources:
            if s not in self.sources:
                raise ConfigError(f"pool.sources: unknown source '{s}'{suggest(s, self.sources)}")
        if sel.method != "random" and sel.target not in self.test_sets:
            raise ConfigError(f"{where}.target: '{sel.target}' is not a test set"
                              f"{suggest(str(sel.target), self.test_sets)}; {sel.method} selects toward one")
        if sel.method in ("dsdm", "bot-dsdm") and sel.proxy not in [r.name for r in self.ladder.rungs]:
            raise ConfigError(f"{where}.proxy: '{sel.proxy}' is not a ladder rung; DsDm needs proxy models")
        if sel.n_target < 1:
            raise ConfigError(f"{where}: n_target must be ≥ 1")
        if sel.proxy is not None and sel.method in ("dsdm", "bot-dsdm") and \
                self.rung_context(self.rung(sel.proxy)) != self.pool_context:
            raise ConfigError(f"{where}.proxy: DsDm's proxies read whole pool windows of {self.pool_context} tokens "
                              f"(the longest rung context); pick a proxy rung with that context")

    def rung(self, name: str) -> RungSpec:
        return self.ladder.rung(name)

    def rung_context(self, rung: RungSpec) -> int:
        return rung.context or self.context

    @property
    def pool_context(self) -> int:
        """Pool windows fit every rung: the longest training context (a shorter-context model
        reads each window's first tokens)."""
        return max(self.rung_context(r) for r in self.ladder.rungs)

    @property
    def test_context(self) -> int:
        """Test sequences must fit every rung: the shortest training context."""
        return min(self.rung_context(r) for r in self.ladder.rungs)


_NOT_RECORDED = ("bpb", "correct_prob")  # suites of existing models carry these; this evaluator does not


def _check_mixture(dname: str, mix: dict[str, float], sources: dict[str, Any]) -> None:
    if not mix:
        raise ConfigError(f"distributions.{dname}: give at least one source with a weight")
    for s, w in mix.items():
        if s not in sources:
            raise ConfigError(f"distributions.{dname}: unknown source '{s}'{suggest(s, sources)}")
        if not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"distributions.{dname}.{s}: weight must be a number ≥ 0, got {w!r}")
    if sum(mix.values()) <= 0:
        raise ConfigError(f"distributions.{dname}: weights sum to zero")

"""The selection-transfer study's spec (paper §3.2, SPEC §6): select pool documents toward a
target with DsDm at several proxy scales, Bot-DsDm, DSIR, a classifier and random; train the
reference on each selection at one token budget; compare target-holdout losses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...config import suggest
from ...errors import ConfigError
from ...run.executor import ExecutorSpec
from ...run.plan import check_name
from ...train.optim import TrainConfig
from ..fragments.data import CorpusSpec, TestSetSpec, TokenizerSpec, check_sources
from ..fragments.lm_ladder import RungSpec, check_rungs
from ..fragments.pool import METHODS, DsDmSpec, PoolSpec


@dataclass(frozen=True)
class TargetSpec:
    """A target task: ``n_target`` examples to select toward and a disjoint ``n_holdout`` to
    evaluate on, built from held-out text of ``sources`` (kind ``qa``: loss on the answer, as
    SQuAD; ``cloze``: the last word, as LAMBADA) or loaded from the hub (``hub: squad``)."""

    kind: Literal["lm", "cloze", "qa", "choice"]
    sources: tuple[str, ...] = ()
    hub: Optional[str] = None
    n_target: int = 150
    n_holdout: int = 150

    def __post_init__(self) -> None:
        if self.n_target < 1 or self.n_holdout < 2:
            raise ConfigError("targets: n_target ≥ 1 and n_holdout ≥ 2 are needed")
        TestSetSpec(self.kind, self.sources, self.hub, self.n_target + self.n_holdout)

    def test_set(self) -> TestSetSpec:
        return TestSetSpec(self.kind, self.sources, self.hub, self.n_target + self.n_holdout)


@dataclass(frozen=True)
class SelectionSpec:
    """A whole selection-transfer study (``kind: selection`` in YAML)."""

    name: str
    sources: dict[str, dict[str, Any]]
    pool: PoolSpec
    targets: dict[str, TargetSpec]
    proxies: tuple[RungSpec, ...]
    reference: RungSpec
    kind: Literal["selection"] = "selection"
    seed: int = 0
    context: int = 128
    heldout_fraction: float = 0.1
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    test_sets: dict[str, TestSetSpec] = field(default_factory=dict)
    methods: tuple[str, ...] = METHODS
    tokens_per_param: float = 20.0
    reference_seeds: tuple[int, ...] = (0, 1)
    random_budgets: tuple[float, ...] = (0.5, 1.0, 2.0)
    dsdm: DsDmSpec = field(default_factory=DsDmSpec)
    dsir: dict[str, Any] = field(default_factory=dict)
    classifier: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    n_boot: int = 1000
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)

    def __post_init__(self) -> None:
        check_name(self.name, "name: the study name")
        check_sources(self.sources, {**{t: ts.test_set() for t, ts in self.targets.items()}, **self.test_sets},
                      self.tokenizer)
        for s in self.pool.sources:
            if s not in self.sources:
                raise ConfigError(f"pool.sources: unknown source '{s}'{suggest(s, self.sources)}")
        if not self.targets:
            raise ConfigError("targets: define at least one target task")
        for t in self.targets:
            check_name(t, "targets: the target name")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"methods: unknown method '{m}'{suggest(m, METHODS)}; known: {', '.join(METHODS)}")
        if "random" not in self.methods:
            raise ConfigError("methods: 'random' is the baseline every gain is measured against; keep it")
        needs_proxy = {"dsdm", "bot-dsdm"} & set(self.methods)
        if needs_proxy and not self.proxies:
            raise ConfigError("proxies: DsDm needs at least one proxy rung")
        if self.proxies:
            check_rungs((*self.proxies, self.reference), self.reference.name, "proxies")
        if len(self.reference_seeds) < 2:
            raise ConfigError("reference_seeds: give at least two seeds (the CIs are over seeds and examples)")
        if 1.0 not in self.random_budgets or any(b <= 0 for b in self.random_budgets):
            raise ConfigError("random_budgets: positive multiples of the reference budget, including 1.0")
        if self.context < 8 or self.n_boot < 100:
            raise ConfigError("context must be ≥ 8 and n_boot ≥ 100")

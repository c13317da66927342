"""The YAML study spec: what to train, on what, and how to compare it.

A spec is data (frozen dataclasses). :func:`load_spec` reads YAML strictly: unknown keys get a
"did you mean" hint, impossible sizes are rejected before any work starts. This module imports
neither torch nor the data layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..config import from_dict, load_yaml, suggest
from ..errors import ConfigError


@dataclass(frozen=True)
class RungSpec:
    """One model size of the ladder."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int = 1
    context: Optional[int] = None  # training context of this rung (default: the study's)

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_layers <= 0 or self.n_heads <= 0:
            raise ConfigError(f"rung '{self.name}': d_model, n_layers and n_heads must be positive")
        if self.d_model % self.n_heads:
            raise ConfigError(f"rung '{self.name}': d_model={self.d_model} is not divisible by "
                              f"n_heads={self.n_heads}; pick a head count that divides the width")


@dataclass(frozen=True)
class LadderSpec:
    """The ladder: proxies and one reference, trained on ``tokens_per_param`` × params tokens."""

    rungs: tuple[RungSpec, ...]
    reference: str
    tokens_per_param: float = 20.0
    proxy_seeds: tuple[int, ...] = (0,)
    reference_seeds: tuple[int, ...] = (0,)
    mup: bool = False

    def __post_init__(self) -> None:
        names = [r.name for r in self.rungs]
        if len(names) < 2:
            raise ConfigError("ladder.rungs: give at least two rungs (proxies and a reference)")
        if len(set(names)) != len(names):
            raise ConfigError(f"ladder.rungs: duplicate rung names in {names}")
        if self.reference not in names:
            raise ConfigError(f"ladder.reference: '{self.reference}' is not a rung{suggest(self.reference, names)}")
        if self.tokens_per_param <= 0:
            raise ConfigError("ladder.tokens_per_param must be positive (the paper uses about 20)")
        if not self.proxy_seeds or not self.reference_seeds:
            raise ConfigError("ladder: proxy_seeds and reference_seeds need at least one seed each")


@dataclass(frozen=True)
class TestSetSpec:
    """A test set: built from held-out text of ``sources`` (embedded/local) or loaded from the hub."""

    kind: Literal["lm", "cloze", "qa", "choice"]
    sources: tuple[str, ...] = ()
    hub: Optional[str] = None  # one of the paper's test sets by name: c4, pile, squad, lambada, hellaswag, trivia_qa
    n_examples: int = 200

    def __post_init__(self) -> None:
        if self.n_examples <= 0:
            raise ConfigError("test set n_examples must be positive")
        if not self.sources and self.hub is None:
            raise ConfigError("a test set needs either 'sources' (held-out text) or 'hub' (a paper test set)")


@dataclass(frozen=True)
class TokenizerSpec:
    vocab_size: int = 512
    sample_bytes: int = 4_000_000

    def __post_init__(self) -> None:
        if not 259 <= self.vocab_size <= 1_000_000:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size}: a byte-level BPE needs at least 259 "
                              "entries (256 bytes + specials); use e.g. 512 for the demo, 50,368 for the paper")


@dataclass(frozen=True)
class ExecutorSpec:
    backend: Literal["local", "ray", "slurm"] = "local"
    workers: int = 0  # 0 = one per core
    max_batch: int = 8  # how many same-shape small models one worker trains at once
    batch_below_params: int = 500_000
    ray_address: Optional[str] = None
    slurm_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuSpec:
    """What ``proxyscale plan`` assumes to turn FLOPs into GPU-hours."""

    name: str = "H100 SXM (bf16 dense)"
    peak_tflops: float = 989.0
    mfu: float = 0.40


@dataclass(frozen=True)
class AnalysisSpec:
    r2_threshold: float = 0.9
    decision_threshold: float = 0.9
    n_boot: int = 1000
    ngram_orders: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class StudySpec:
    """A whole small-to-large study."""

    name: str
    sources: dict[str, dict[str, Any]]
    distributions: dict[str, dict[str, float]]
    test_sets: dict[str, TestSetSpec]
    ladder: LadderSpec
    seed: int = 0
    context: int = 128
    heldout_fraction: float = 0.1
    corpus: dict[str, Any] = field(default_factory=dict)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    train: dict[str, Any] = field(default_factory=dict)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    gpu: GpuSpec = field(default_factory=GpuSpec)
    attribution: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name: '{self.name}' must be a non-empty name without '/'")
        if not self.sources:
            raise ConfigError("sources: define at least one source")
        if not self.distributions:
            raise ConfigError("distributions: define at least one training distribution")
        if self.context < 8:
            raise ConfigError(f"context={self.context} is too short; use at least 8 tokens")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError("heldout_fraction must lie strictly between 0 and 1")
        for dname, mix in self.distributions.items():
            _check_mixture(dname, mix, self.sources)
        for tname, ts in self.test_sets.items():
            for s in ts.sources:
                if s not in self.sources:
                    raise ConfigError(f"test_sets.{tname}.sources: unknown source '{s}'{suggest(s, self.sources)}")

    def rung(self, name: str) -> RungSpec:
        return next(r for r in self.ladder.rungs if r.name == name)

    def rung_context(self, rung: RungSpec) -> int:
        return rung.context or self.context

    @property
    def test_context(self) -> int:
        """Test sequences must fit every rung: the shortest training context."""
        return min(self.rung_context(r) for r in self.ladder.rungs)


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


def parse_spec(data: Any, where: str = "study") -> StudySpec:
    """Build a :class:`StudySpec` from plain data (strict)."""
    spec = from_dict(StudySpec, data, where)
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML study spec; errors name the file."""
    data = load_yaml(path)
    try:
        return parse_spec(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

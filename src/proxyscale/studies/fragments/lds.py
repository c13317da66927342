"""The LDS ground-truth fragment, one path for vision models and GPTs: random α-subsets of the
training set, then reference-size models retrained on them in chunks (each chunk one step the
executor can run in parallel), their target outputs averaged over seeds by the analysis."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError
from ...run.plan import Plan, Step
from ...run.step import StepContext, step_kind
from ...store import write_npy


@dataclass(frozen=True)
class LDSSpec:
    """Ground truth: ``n_subsets`` random α-subsets (plus ``n_holdout`` more, used only to choose
    TRAK's λ / Q weighting), ``seeds_per_subset`` reference-width models each (averaged),
    trained in steps of ``chunk`` subsets (the executor runs chunks in parallel).
    ``shared_seeds`` gives replicate r of every subset the same seed (common random numbers:
    same initialisation and coupled data order), so subset effects are not buried under
    initialisation noise; the noise ceiling is then measured between coupled replicates."""

    alpha: float = 0.5
    n_subsets: int = 100
    n_holdout: int = 0
    seeds_per_subset: int = 2
    chunk: int = 25
    shared_seeds: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"lds.alpha={self.alpha} must be in (0, 1); 0.5 is standard")
        if self.n_subsets < 10:
            raise ConfigError(f"lds.n_subsets={self.n_subsets}: use at least 10 (≥ 50 for a stable LDS)")
        if self.seeds_per_subset < 2:
            raise ConfigError("lds.seeds_per_subset must be ≥ 2: the ground truth is averaged over seeds "
                              "and two seeds give its noise ceiling")
        if self.chunk < 1 or self.n_holdout < 0:
            raise ConfigError("lds.chunk must be ≥ 1 and lds.n_holdout ≥ 0")

    @property
    def total(self) -> int:
        """Subsets drawn: the scored ones, then the held-out ones (the last ``n_holdout`` rows)."""
        return self.n_subsets + self.n_holdout


@dataclass(frozen=True)
class SubsetsStep:
    n_train: int
    alpha: float
    n_subsets: int
    seed: int


def add_lds(plan: Plan, lds: LDSSpec, *, n_train: int, subsets_name: str, subsets_seed: int, retrain_kind: str,
            retrain_name: Callable[[int, int], str], retrain_config: Callable[[int, int], dict[str, Any]],
            inputs: dict[str, str], per_model_flops: float, prefix: str = "") -> dict[str, str]:
    """Add the subsets step and one ``retrain_kind`` step per chunk of ``lds.chunk`` subsets
    (config from ``retrain_config(start, stop)``, inputs ``inputs`` plus ``subsets``).
    Returns the analysis inputs ``<prefix>subsets`` and ``<prefix>retrain:<start>``."""
    sub = plan.add(Step("attr_subsets", subsets_name, {"n_train": n_train, "alpha": lds.alpha,
                                                      "n_subsets": lds.total, "seed": subsets_seed}, cost=1e6))
    out = {f"{prefix}subsets": sub}
    for start in range(0, lds.total, lds.chunk):
        stop = min(start + lds.chunk, lds.total)
        out[f"{prefix}retrain:{start:06d}"] = plan.add(Step(
            retrain_kind, retrain_name(start, stop), retrain_config(start, stop), {"subsets": sub, **inputs},
            cost=per_model_flops * (stop - start) * lds.seeds_per_subset))
    return out


@step_kind("attr_subsets", config=SubsetsStep)
def attr_subsets_step(ctx: StepContext) -> None:
    """The LDS α-subsets as masks (m, n) bool."""
    from ...attribute.subsets import sample_subsets

    c: SubsetsStep = ctx.cfg
    write_npy(ctx.out / "masks.npy", sample_subsets(c.n_train, c.alpha, c.n_subsets, np.random.default_rng(c.seed)))

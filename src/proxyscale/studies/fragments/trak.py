"""TRAK settings shared by every attribution fragment, and scoring many candidate settings
(λ ratio, Q weighting, ensemble size) from one featurisation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import ConfigError


@dataclass(frozen=True)
class TrakSpec:
    """TRAK settings: projection dimension, projector, λ = lambda_ratio · mean‖φ‖², Q weighting,
    and ``checkpoints_per_model`` (evenly spaced over the last third of training).

    ``lambda_ratios`` (candidates) and ``choose_q`` (try Q weighting on and off) make the
    analysis choose per width the setting with the best LDS on ``lds.n_holdout`` held-out
    subsets (SPEC §8); the LDS is then reported on the other subsets. ``lambda_ratio`` and
    ``use_q`` are the setting used without a choice (and for the counterfactual removal sets).
    ``score_by_m`` also scores the first 1..M models, for LDS against ensemble size."""

    k: int = 512
    projector: Literal["gaussian", "rademacher", "sparse"] = "rademacher"
    lambda_ratio: float = 1.0
    use_q: bool = False
    lambda_ratios: tuple[float, ...] = ()
    choose_q: bool = False
    score_by_m: bool = True
    checkpoints_per_model: int = 1
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.k < 1 or self.checkpoints_per_model < 1 or self.batch_size < 1:
            raise ConfigError("trak: k, checkpoints_per_model and batch_size must be ≥ 1")
        if self.lambda_ratio < 0 or any(r < 0 for r in self.lambda_ratios):
            raise ConfigError("trak.lambda_ratio(s) must be ≥ 0 (1.0 is a safe default)")
        if len(set(self.lambda_ratios)) != len(self.lambda_ratios):
            raise ConfigError(f"trak.lambda_ratios {list(self.lambda_ratios)} has repeats")

    @property
    def ratios(self) -> tuple[float, ...]:
        """The λ ratios scored: the candidates, or just ``lambda_ratio``."""
        return tuple(float(r) for r in (self.lambda_ratios or (self.lambda_ratio,)))

    @property
    def q_options(self) -> tuple[bool, ...]:
        """The Q weightings scored: both with ``choose_q``, else just ``use_q``."""
        return (False, True) if self.choose_q else (self.use_q,)

    def candidates(self) -> list[tuple[float, bool]]:
        """The (λ ratio, Q weighting) settings scored; more than one means a held-out choice."""
        return [(r, q) for r in self.ratios for q in self.q_options]


def candidate_scores(trak: Any, targets: Any, ts: TrakSpec, n_files: int) -> list[tuple[dict, np.ndarray]]:
    """Scores for every (λ ratio, Q) candidate of the spec, with the first 1..M models when
    ``score_by_m`` (each model brings its ``checkpoints_per_model`` checkpoints); ``n_models``
    in the returned settings counts models, not checkpoints."""
    per = ts.checkpoints_per_model
    n_models = n_files // per
    counts = list(range(1, n_models + 1)) if ts.score_by_m else [n_models]
    out = trak.score_candidates(targets, ts.ratios, ts.q_options, n_models=[c * per for c in counts])
    return [({**c, "n_models": c["n_models"] // per}, s) for c, s in out]

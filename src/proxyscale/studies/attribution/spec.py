"""The attribution-transfer study's spec (paper §3.1).

Do attribution scores computed with small proxy models predict what a large (reference) model
does when its training data changes? A YAML file with ``kind: attribution`` is this study.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...errors import ConfigError
from ...run.executor import ExecutorSpec
from ...run.plan import check_name
from ..fragments.lds import LDSSpec
from ..fragments.lm_attr import LMAttrSpec
from ..fragments.trak import TrakSpec
from ..fragments.vision import AttrDataSpec, WidthLadderSpec, vision_train_config

__all__ = ["AttrDataSpec", "AttributionSpec", "CounterfactualSpec", "LDSSpec", "LMAttrSpec", "TrakSpec",
           "WidthLadderSpec"]


@dataclass(frozen=True)
class CounterfactualSpec:
    """Removal sets (paper App. B.2) for the first ``n_targets`` targets, built from the TRAK
    scores of width ``scores_width`` (default: the smallest); every width is retrained on them
    with ``n_seeds`` seeds. ``n_targets: 0`` turns the experiment off."""

    n_targets: int = 3
    fractions: tuple[float, ...] = (0.02, 0.05, 0.1)
    class_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    n_random: int = 2
    n_seeds: int = 2
    scores_width: Optional[float] = None

    def __post_init__(self) -> None:
        if self.n_targets < 0 or self.n_seeds < 1:
            raise ConfigError("counterfactual: n_targets must be ≥ 0 and n_seeds ≥ 1")


@dataclass(frozen=True)
class AttributionSpec:
    """A whole attribution-transfer study (``kind: attribution`` in YAML).

    ``train`` holds :class:`proxyscale.train.vision.VisionTrainConfig` fields (checked when the
    spec is loaded); ``lm`` an optional language-model block (:class:`LMAttrSpec`)."""

    name: str
    ladder: WidthLadderSpec
    kind: Literal["attribution"] = "attribution"
    seed: int = 0
    data: AttrDataSpec = field(default_factory=AttrDataSpec)
    models_per_width: int = 5
    train: dict[str, Any] = field(default_factory=dict)
    trak: TrakSpec = field(default_factory=TrakSpec)
    lds: LDSSpec = field(default_factory=LDSSpec)
    counterfactual: CounterfactualSpec = field(default_factory=CounterfactualSpec)
    n_boot: int = 1000
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    lm: Optional[LMAttrSpec] = None

    def __post_init__(self) -> None:
        check_name(self.name, "name: the study name")
        if self.n_boot < 20:
            raise ConfigError(f"n_boot={self.n_boot}: a bootstrap needs at least 20 resamples (1000 is typical)")
        if self.models_per_width < 1:
            raise ConfigError("models_per_width must be ≥ 1 (the paper uses 8; 5 is a good small setting)")
        sw = self.counterfactual.scores_width
        if sw is not None and sw not in self.ladder.widths:
            raise ConfigError(f"counterfactual.scores_width={sw:g} is not one of ladder.widths "
                              f"{list(self.ladder.widths)}")
        if len(self.trak.candidates()) > 1 and self.lds.n_holdout < 5:
            raise ConfigError(f"trak: {len(self.trak.candidates())} candidate settings (lambda_ratios/choose_q) are "
                              f"chosen on held-out subsets; set lds.n_holdout ≥ 5 (20 is typical), "
                              f"got {self.lds.n_holdout}")
        if self.counterfactual.n_targets > self.data.n_targets:
            raise ConfigError("counterfactual.n_targets cannot exceed data.n_targets")
        self.vision_train()

    def vision_train(self) -> dict[str, Any]:
        """The vision training recipe as data (validated; checkpoints from ``trak``)."""
        return vision_train_config(self.train, self.trak.checkpoints_per_model)

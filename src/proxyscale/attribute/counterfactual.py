"""Counterfactual removal (paper App. B.2): do small and large models react alike when the
same training examples are removed?

For one target example, :func:`removal_masks` builds training sets (keep-masks over the n
training examples) by removing

- ``random``: a uniformly random fraction (up to 10%);
- ``top`` / ``bottom``: the highest / lowest attribution scores for the target;
- ``similar`` / ``dissimilar``: the examples most / least similar to the target in a feature
  space (cosine similarity; the caller chooses the features, e.g. a trained model's
  penultimate layer or raw pixels);
- ``class``: 25/50/75% of the training examples of the target's class (random ones).

:func:`removal_margins` trains models of a given size on every set and returns the target's
margin per set (averaged over seeds); running it for a small and a large model gives the
scatter, and :func:`r_squared` its coefficient of determination. All are pure functions;
the study wiring writes their arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .retrain import RetrainConfig, retrain_outputs


@dataclass(frozen=True)
class RemovalConfig:
    """Which removal sets to build: fractions of the train set for random/top/bottom/similar/
    dissimilar removal, fractions of the target's class, and random draws per fraction."""

    fractions: tuple[float, ...] = (0.02, 0.05, 0.1)
    class_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    n_random: int = 2

    def __post_init__(self) -> None:
        if any(not 0 < f < 1 for f in self.fractions + self.class_fractions):
            raise ConfigError("removal fractions must be in (0, 1); the paper removes up to 0.1 of the "
                              "train set and 0.25/0.5/0.75 of the target's class")
        if self.n_random < 1:
            raise ConfigError("n_random must be ≥ 1")


def cosine_similarity(features: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``features`` (n, d) to ``query`` (d,) → (n,)."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    norms = np.linalg.norm(f, axis=1) * np.linalg.norm(q)
    return (f @ q) / np.where(norms > 0, norms, 1.0)


def _without(n: int, removed: np.ndarray) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    return keep


def removal_masks(scores: np.ndarray, features: np.ndarray, target_feature: np.ndarray, labels: np.ndarray,
                  target_label: int, rng: np.random.Generator,
                  cfg: RemovalConfig = RemovalConfig()) -> tuple[list[str], np.ndarray]:
    """Names and keep-masks (R, n) bool of the removal sets for one target.

    ``scores`` (n,) are the target's attribution scores (higher = helps the target);
    ``features`` (n, ...) and ``target_feature`` define similarity; ``labels`` (n,)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(scores)
    if len(labels) != n or len(features) != n:
        raise ConfigError(f"scores ({n}), features ({len(features)}) and labels ({len(labels)}) must "
                          "have one entry per training example")
    by_score = np.argsort(-scores, kind="stable")  # most helpful first
    by_sim = np.argsort(-cosine_similarity(features, target_feature), kind="stable")
    names, masks = [], []
    for f in cfg.fractions:
        k = max(1, int(round(f * n)))
        for r in range(cfg.n_random):
            names.append(f"random-{f:g}-{r}")
            masks.append(_without(n, rng.choice(n, size=k, replace=False)))
        for name, order in (("top", by_score), ("bottom", by_score[::-1]),
                            ("similar", by_sim), ("dissimilar", by_sim[::-1])):
            names.append(f"{name}-{f:g}")
            masks.append(_without(n, order[:k]))
    same = np.flatnonzero(labels == target_label)
    if len(same) == 0:
        raise ConfigError(f"no training example has the target's label {target_label}")
    for f in cfg.class_fractions:
        names.append(f"class-{f:g}")
        masks.append(_without(n, rng.choice(same, size=max(1, int(round(f * len(same)))), replace=False)))
    return names, np.stack(masks)


def removal_margins(cfg: RetrainConfig, x_train: np.ndarray, y_train: np.ndarray, keep_masks: np.ndarray,
                    x_target: np.ndarray, y_target: int) -> np.ndarray:
    """The target's margin (R,) after training on each keep-mask (mean over ``cfg.n_seeds``)."""
    out = retrain_outputs(cfg, x_train, y_train, keep_masks, np.asarray(x_target)[None],
                          np.asarray([y_target]))  # (R, S, 1)
    return out[:, :, 0].mean(axis=1)


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination of the least-squares line of ``y`` on ``x``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or len(x) < 3:
        raise ConfigError(f"need two equal-length arrays of ≥ 3 points; got {x.shape} and {y.shape}")
    slope, intercept = np.polyfit(x, y, 1)
    ss_res = ((y - (slope * x + intercept)) ** 2).sum()
    ss_tot = ((y - y.mean()) ** 2).sum()
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")

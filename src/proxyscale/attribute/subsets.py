"""Random training subsets as boolean masks, the raw material of datamodels and LDS.

A subset of the ``n`` training examples is a row of a mask matrix (m, n) bool: row ``j`` is
``1_{S_j}``. α-subsets all have exactly ``⌊α·n⌋`` members, so models trained on them share
tensor shapes (see :mod:`proxyscale.train.vision`).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def subset_size(n: int, alpha: float) -> int:
    """``⌊α·n⌋``, checked to give a non-empty proper subset."""
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"alpha={alpha} must be in (0, 1]; 0.5 is the standard LDS setting")
    k = math.floor(alpha * n)
    if k < 1:
        raise ConfigError(f"alpha={alpha} of n={n} examples leaves an empty subset; raise alpha")
    return k


def sample_subsets(n: int, alpha: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` independent uniformly random subsets of size ``⌊α·n⌋`` as masks (m, n) bool."""
    if m < 1 or n < 1:
        raise ConfigError(f"need m ≥ 1 subsets of n ≥ 1 examples; got m={m}, n={n}")
    k = subset_size(n, alpha)
    chosen = np.argsort(rng.random((m, n)), axis=1)[:, :k]  # (m, k): a uniform k-subset per row
    masks = np.zeros((m, n), dtype=bool)
    np.put_along_axis(masks, chosen, True, axis=1)
    return masks


def check_masks(masks: np.ndarray, n: int | None = None) -> np.ndarray:
    """``masks`` as a 2-d bool array, with a clear error for anything else."""
    arr = np.asarray(masks)
    if arr.ndim != 2 or (n is not None and arr.shape[1] != n):
        want = f"(m, {n})" if n is not None else "(m, n)"
        raise ConfigError(f"subset masks must be a {want} array; got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ConfigError("subset masks must be boolean (or 0/1); got other values")
        arr = arr.astype(bool)
    return arr


def split_subsets(m: int, n_holdout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, holdout) that split ``m`` subsets for choosing a hyperparameter."""
    if not 0 < n_holdout < m:
        raise ConfigError(f"n_holdout={n_holdout} must be between 1 and m-1={m - 1}")
    order = rng.permutation(m)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])

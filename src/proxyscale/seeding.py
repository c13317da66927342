"""Seeds derived by hashing, never by offsets (house rule 4).

``derive_seed(root, "proj", model_id)`` gives independent streams for every named purpose, so
adding a model or a purpose never shifts the randomness of another.
"""
from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(root: int, *parts: object) -> int:
    """A 63-bit seed from a root seed and any number of labels (stable across runs and machines)."""
    h = hashlib.sha256(repr((int(root),) + tuple(str(p) for p in parts)).encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def np_rng(root: int, *parts: object) -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(root, *parts))


def epoch_order(items: np.ndarray, n: int, root: int, *parts: object) -> np.ndarray:
    """The first ``n`` entries of ``items`` visited in a fresh seeded order every epoch (epoch e
    drawn from ``np_rng(root, *parts, e)``): how every training loop over a fixed set orders it."""
    items = np.asarray(items)
    epochs = -(-int(n) // len(items))
    return np.concatenate([np_rng(root, *parts, e).permutation(items) for e in range(epochs)])[:n]


def torch_gen(root: int, *parts: object):  # -> torch.Generator (torch imported lazily)
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed`."""
    import torch

    g = torch.Generator()
    g.manual_seed(derive_seed(root, *parts))
    return g

"""Out-of-core TRAK features: one (n, k) float32 ``.npy`` memmap per model, resumable.

Layout of a model's directory::

    features.npy    (n, k) float32   projected gradients φ_i, row i = train example i
    q.npy           (n,)   float32   Q_i = 1 − p_i (out-to-loss weight)
    progress.json                    settings it was made with, and the rows already written

Rows are written batch by batch; after each batch the memmaps are flushed and only then is
``progress.json`` rewritten (atomically), so a killed featurisation loses at most the batch in
flight and the next call with the same settings resumes after the last recorded batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError, StoreError
from ..store import atomic_path, read_json, write_json

FORMAT_VERSION = 1
PROGRESS = "progress.json"


def _intervals(done: np.ndarray) -> list[list[int]]:
    """Merged [start, stop) row intervals where ``done`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], done.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _create_memmap(path: Path, shape: tuple[int, ...]) -> None:
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        arr.flush()
        del arr


class ModelFeatures:
    """Features and Q of one model, in memory (``directory=None``) or as memmaps on disk."""

    def __init__(self, directory: Path | None, n: int, k: int, meta: dict[str, Any]) -> None:
        self.directory, self.n, self.k, self.meta = directory, n, k, meta
        self.done = np.zeros(n, dtype=bool)
        if directory is None:
            self.phi = np.zeros((n, k), dtype=np.float32)
            self.q = np.zeros(n, dtype=np.float32)
            return
        directory.mkdir(parents=True, exist_ok=True)
        progress = directory / PROGRESS
        if progress.is_file():
            self._check(read_json(progress))
        else:
            _create_memmap(directory / "features.npy", (n, k))
            _create_memmap(directory / "q.npy", (n,))
            self._save()
        self.phi = np.load(directory / "features.npy", mmap_mode="r+", allow_pickle=False)
        self.q = np.load(directory / "q.npy", mmap_mode="r+", allow_pickle=False)

    def _check(self, rec: dict[str, Any]) -> None:
        if rec.get("format_version") != FORMAT_VERSION or rec.get("meta") != self.meta \
                or rec.get("n") != self.n or rec.get("k") != self.k:
            raise StoreError(f"{self.directory} holds features made with other settings or data "
                             f"(stored {rec.get('meta')}, n={rec.get('n')}; now {self.meta}, n={self.n}); "
                             "use another store_dir or delete that directory")
        for a, b in rec["done"]:
            self.done[a:b] = True

    def _save(self) -> None:
        assert self.directory is not None
        write_json(self.directory / PROGRESS, {"format_version": FORMAT_VERSION, "meta": self.meta, "n": self.n,
                                               "k": self.k, "done": _intervals(self.done),
                                               "complete": bool(self.done.all())})

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def has(self, r0: int, r1: int) -> bool:
        return bool(self.done[r0:r1].all())

    def write(self, r0: int, phi: np.ndarray, q: np.ndarray) -> None:
        """Store rows r0:r0+len(phi), make them durable, then record them as done."""
        r1 = r0 + phi.shape[0]
        if r1 > self.n:
            raise DataError(f"the data yielded more than the {self.n} examples announced; "
                            "pass a DataLoader whose dataset length matches what it yields")
        self.phi[r0:r1] = phi
        self.q[r0:r1] = q
        self.done[r0:r1] = True
        if self.directory is not None:
            self.phi.flush()  # type: ignore[union-attr]
            self.q.flush()  # type: ignore[union-attr]
            self._save()


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def dataset_size(data: Any) -> int:
    """Number of examples in tensors (a tuple of (N, ...) arrays) or a DataLoader."""
    if isinstance(data, (tuple, list)):
        if not data:
            raise DataError("empty data tuple; pass (inputs, labels) or (tokens, mask) arrays")
        sizes = {len(x) for x in data}
        if len(sizes) != 1:
            raise DataError(f"data arrays differ in length {sorted(sizes)}; they must share the first axis")
        return sizes.pop()
    dataset = getattr(data, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        raise DataError("pass data as a tuple of arrays (N, ...) or a DataLoader (with a sized .dataset)")
    return len(dataset)


def iter_batches(data: Any, batch_size: int) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Yield (first row, batch) in order. Tuples are sliced; a DataLoader is iterated (it must
    not shuffle, or resuming would mismatch rows)."""
    if isinstance(data, (tuple, list)):
        tensors = [_as_tensor(x) for x in data]
        n = len(tensors[0])
        for r0 in range(0, n, batch_size):
            yield r0, [t[r0:r0 + batch_size] for t in tensors]
        return
    r0 = 0
    for batch in data:
        parts: Sequence[Any] = batch if isinstance(batch, (tuple, list)) else (batch,)
        tensors = [_as_tensor(x) for x in parts]
        yield r0, tensors
        r0 += len(tensors[0])


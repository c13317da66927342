"""Where DSIR keeps its bucket streams between its two passes (see :mod:`proxyscale.select.dsir`)."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Union

import numpy as np


class Streams:
    """Pass 1's bucket streams, kept for pass 2: in RAM up to a budget, then ``.npy`` files in a
    scratch folder under ``work_dir`` (read back memory-mapped), else dropped (pass 2 re-hashes)."""

    def __init__(self, budget_bytes: int, work_dir: Optional[str]) -> None:
        self.budget, self.work_dir = budget_bytes, work_dir
        self.dir: Optional[str] = None
        self.items: list[Union[np.ndarray, str, None]] = []

    def put(self, stream: np.ndarray) -> None:
        if stream.nbytes <= self.budget:
            self.budget -= stream.nbytes
            self.items.append(stream)
        elif self.work_dir is not None:
            if self.dir is None:
                os.makedirs(self.work_dir, exist_ok=True)
                self.dir = tempfile.mkdtemp(prefix="dsir-streams-", dir=self.work_dir)
            self.items.append(os.path.join(self.dir, f"{len(self.items)}.npy"))
            np.save(self.items[-1], stream)
        else:
            self.items.append(None)

    def get(self, k: int) -> Optional[np.ndarray]:
        return np.load(self.items[k], mmap_mode="r") if isinstance(self.items[k], str) else self.items[k]

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

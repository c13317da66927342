"""A selection on disk: the chosen ids, a per-document score table and a manifest.

``<out>/chosen.txt`` (one id per line, best first), ``<out>/scores.parquet`` (every pool
document: id, score, rank or -1, selected, method-specific columns) and ``<out>/manifest.json``
(method, settings, n, seed, sha256 of the pool and target inputs, format version). The directory
is written beside its final place and renamed into it, so it is complete or absent.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.sources import Document
from ..errors import DataError
from ..store import write_json, write_table, write_text
from .base import Selection

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def hash_documents(docs: Iterable[Document]) -> str:
    """sha256 over every document's id and text, in stream order."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.id.encode("utf-8") + b"\0" + d.text.encode("utf-8") + b"\0\0")
    return h.hexdigest()


def hash_texts(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def score_table(sel: Selection):
    """One row per pool document: id, score, rank (-1 if not chosen), selected, extra columns."""
    import pandas as pd

    rank = np.full(len(sel.ids), -1, dtype=np.int64)
    rank[sel.chosen] = np.arange(len(sel.chosen))
    cols = {"id": list(sel.ids), "score": sel.scores.astype(np.float64), "rank": rank, "selected": rank >= 0}
    cols.update({k: np.asarray(v) for k, v in sel.extra.items()})
    return pd.DataFrame(cols)


def write_selection(sel: Selection, out: str | Path, record: dict[str, Any]) -> Path:
    """Write ``sel`` (and ``record``: n, seed, input hashes ...) to ``out`` all-or-nothing."""
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not a selection; choose an empty or new --out directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_text(tmp / "chosen.txt", "".join(f"{i}\n" for i in sel.chosen_ids))
        write_table(tmp / "scores.parquet", score_table(sel))
        write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "method": sel.method,
                                    "settings": sel.settings, "n_pool": len(sel.ids), **record})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

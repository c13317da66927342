"""A selection on disk: the chosen ids, a per-document score table and a manifest.

``<out>/chosen.txt`` (one id per line, best first), ``<out>/scores.parquet`` (every pool
document: id, score, rank or -1, selected, method-specific columns) and ``<out>/manifest.json``
(method, settings, n, seed, sha256 of the pool and target inputs, format version). The directory
is written under the output policy (:mod:`proxyscale.store.output`): staged beside its final
place and renamed into it, so it is complete or absent, and an existing directory is replaced
only when it is an earlier proxyscale output and ``overwrite`` is given.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.sources import Document
from ..store import write_json, write_table, write_text
from ..store.output import Inputs, output_dir
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


def write_selection(sel: Selection, out: str | Path, record: dict[str, Any], *, inputs: Inputs = (),
                    overwrite: bool = False) -> Path:
    """Write ``sel`` (and ``record``: n, seed, input hashes ...) to ``out`` all-or-nothing, under
    the output policy (``inputs``: the paths ``out`` may not be, lie in or contain)."""
    with output_dir(out, inputs=inputs, overwrite=overwrite) as tmp:
        write_text(tmp / "chosen.txt", "".join(f"{i}\n" for i in sel.chosen_ids))
        write_table(tmp / "scores.parquet", score_table(sel))
        write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "method": sel.method,
                                    "settings": sel.settings, "n_pool": len(sel.ids), **record})
    return Path(out)

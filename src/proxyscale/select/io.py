"""A selection on disk: the chosen ids, a per-document score table, a manifest, and (on request)
the chosen documents themselves.

``<out>/chosen.txt`` (one id per line, best first), ``<out>/scores.parquet`` (every pool
document: id, score, rank or -1, selected, method-specific columns), ``<out>/manifest.json``
(method, every setting, n, seed, sha256 of the pool and target inputs, versions, wall time per
phase, warnings) and, with ``documents``, ``<out>/selected.jsonl`` or ``<out>/selected.parquet``:
the chosen documents in pool order with columns ``id``, ``text``, ``score``, ``rank`` (readable
as a study source: ``kind: local``, ``path: <out>/selected.jsonl``). The directory is written
under the output policy (:mod:`proxyscale.store.output`): staged beside its final place and
renamed into it, so it is complete or absent, and an existing directory is replaced only when it
is an earlier proxyscale output and ``overwrite`` is given.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..data.sources import Document
from ..errors import ConfigError, DataError
from ..store import write_json, write_table, write_text
from ..store.output import Inputs, output_dir
from .base import Pool, Selection
from .progress import phase

FORMAT_VERSION = 2  # 2: every setting with its defaults, versions, phase times, warnings, documents
MANIFEST = "manifest.json"
DOCUMENT_FORMATS = ("jsonl", "parquet")


def check_format(fmt: Optional[str], flag: str = "--write") -> Optional[str]:
    """``fmt`` if it is a format the chosen documents can be written in (or None: not written)."""
    if fmt is not None and fmt not in DOCUMENT_FORMATS:
        raise ConfigError(f"{flag} {fmt!r}: unknown format; use {' or '.join(DOCUMENT_FORMATS)} (the chosen documents "
                          "are written inside the output directory, as selected.<format>)")
    return fmt


def hash_documents(docs: Iterable[Document]) -> str:
    """sha256 over every document's id and text, in stream order."""
    h = hashlib.sha256()
    for d in docs:
        update_hash(h, d)
    return h.hexdigest()


def update_hash(h: Any, d: Document) -> None:
    """Add one document to a :func:`hash_documents` digest."""
    h.update(d.id.encode("utf-8") + b"\0" + d.text.encode("utf-8") + b"\0\0")


def hash_texts(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def score_table(sel: Selection):
    """One row per pool document: id, score, rank (-1 if not chosen), selected, extra columns."""
    import pandas as pd

    cols = {"id": list(sel.ids), "score": sel.scores.astype(np.float64), "rank": ranks(sel),
            "selected": ranks(sel) >= 0}
    cols.update({k: np.asarray(v) for k, v in sel.extra.items()})
    return pd.DataFrame(cols)


def ranks(sel: Selection) -> np.ndarray:
    """(N,) int64: each pool document's rank in the selection, -1 if not chosen."""
    rank = np.full(len(sel.ids), -1, dtype=np.int64)
    rank[sel.chosen] = np.arange(len(sel.chosen))
    return rank


def write_selection(sel: Selection, out: str | Path, record: dict[str, Any], *, inputs: Inputs = (),
                    overwrite: bool = False, documents: Optional[tuple[str, Pool]] = None) -> Path:
    """Write ``sel`` (and ``record``: n, seed, input hashes ...) to ``out`` all-or-nothing, under
    the output policy (``inputs``: the paths ``out`` may not be, lie in or contain). ``documents``
    = (format, pool): also write the chosen documents, read again from the pool."""
    with output_dir(out, inputs=inputs, overwrite=overwrite) as tmp:
        write_text(tmp / "chosen.txt", "".join(f"{i}\n" for i in sel.chosen_ids))
        write_table(tmp / "scores.parquet", score_table(sel))
        files = ["chosen.txt", "scores.parquet"]
        if documents is not None:
            files.append(write_documents(sel, documents[1], tmp, documents[0]))
        write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "method": sel.method, "n_pool": len(sel.ids),
                                    **record, "files": [*files, MANIFEST]})
    return Path(out)


def write_documents(sel: Selection, pool: Pool, directory: Path, fmt: str) -> str:
    """Write the chosen documents of ``pool`` in pool order to ``directory/selected.<fmt>``;
    returns the file name."""
    rank, scores = ranks(sel), sel.scores
    where = {d: i for i, d in enumerate(sel.ids)}
    name = f"selected.{check_format(fmt)}"
    rows = _chosen_rows(pool, where, rank, scores, len(sel.chosen))
    if fmt == "jsonl":
        with open(directory / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        _write_parquet(directory / name, rows)
    return name


def _chosen_rows(pool: Pool, where: dict[str, int], rank: np.ndarray, scores: np.ndarray,
                 n: int) -> Iterable[dict[str, Any]]:
    found = 0
    with phase("writing", total=n) as bar:
        for d in pool():
            i = where.get(d.id)
            if i is not None and rank[i] >= 0:
                score = float(scores[i])
                yield {"id": d.id, "text": d.text, "score": score if math.isfinite(score) else None,
                       "rank": int(rank[i])}
                found += 1
                bar.update(1)
        if found != n:
            raise DataError(f"the pool yielded {found} of the {n} chosen documents when read again; it changed "
                            "while the selection ran — select again from a pool that stays put")


def _write_parquet(path: Path, rows: Iterable[dict[str, Any]], batch: int = 1024) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("score", pa.float64()), ("rank", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        buf: list[dict[str, Any]] = []
        for row in rows:
            buf.append(row)
            if len(buf) == batch:
                writer.write_table(pa.Table.from_pylist(buf, schema=schema))
                buf = []
        writer.write_table(pa.Table.from_pylist(buf, schema=schema))

"""Pools and targets from files or the hub: a text directory or file, JSONL, Parquet, or a
Hugging Face dataset (through :mod:`proxyscale.data.sources`), streamed."""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import from_dict
from ..data.compressed import is_glob
from ..data.sources import Document, SourceSpec, iter_documents, iter_hf_documents
from ..errors import DataError
from .base import Pool


def source_of(path: str, *, hub: bool = False, text_field: str = "text", id_field: Optional[str] = None,
              split: str = "train", name: Optional[str] = None, max_docs: Optional[int] = None,
              txt_unit: str = "file", streaming: bool = True) -> SourceSpec:
    """A :class:`SourceSpec` for a local path (a ``.txt`` directory or file, ``.jsonl``,
    ``.parquet``) or, with ``hub``, a Hugging Face dataset (``name``: its config, e.g. ``en``
    of ``allenai/c4``; ``streaming``: read records as they arrive, without the full download)."""
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
        raise DataError(f"--max-docs {max_docs}: give a positive number of documents, or leave it out for all")
    data: dict[str, Any] = {"kind": "hf" if hub else "local", "path": path, "text_field": text_field,
                            "id_field": id_field, "split": split, "name": name, "max_docs": max_docs,
                            "txt_unit": txt_unit, "streaming": streaming, "label": Path(path).name or "pool"}
    if not hub and not Path(path).exists() and not is_glob(path):
        raise DataError(f"{path}: no such file or directory; pass a text directory, a .jsonl or a .parquet file")
    return from_dict(SourceSpec, data, "pool")


def open_pool(spec: SourceSpec, revision: Optional[str] = None) -> Pool:
    """A re-iterable stream of the source's documents (a hub source at ``revision``, if given);
    ids must be unique."""
    def stream() -> Iterator[Document]:
        seen: set[str] = set()
        n = 0
        docs = iter_documents(spec) if spec.kind != "hf" else islice(iter_hf_documents(spec, revision), spec.max_docs)
        for d in docs:
            if d.id in seen:
                raise DataError(f"{spec.path}: document id '{d.id}' occurs twice; ids must be unique "
                                "(set --id-field to a unique column, or leave it unset)")
            seen.add(d.id)
            n += 1
            yield d
        if n == 0:
            raise DataError(f"{spec.path}: no documents; point at a non-empty text directory, JSONL or Parquet file")
    return stream


def read_texts(spec: SourceSpec, revision: Optional[str] = None) -> list[str]:
    """Every document's text (targets are small: read them whole)."""
    return [d.text for d in open_pool(spec, revision)()]

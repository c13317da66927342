"""Token shards: all documents of a source, tokenized, as two memory-mapped arrays.

A shard directory holds ``tokens.npy`` (every document's tokens back to back; uint16 when the
vocabulary has fewer than 65,536 ids, else uint32), ``offsets.npy`` (int64, n_docs + 1
boundaries: document i is ``tokens[offsets[i]:offsets[i+1]]``), ``shard.json`` (format
version, counts, dtype, vocab size) and, when ids are given, ``doc_ids.parquet`` (one id per
document, in order). No end-of-text tokens are stored; the training stream adds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import DataError
from ..store import read_json, write_json, write_npy, write_table

SHARD_FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def write_shard(token_lists: Iterable[Sequence[int]], out_dir: Path, *, vocab_size: Optional[int] = None,
                doc_ids: Optional[Sequence[str]] = None) -> dict:
    """Write documents' token lists as a shard in ``out_dir``; returns the shard.json record.

    ``vocab_size`` picks the dtype (inferred from the largest id when None). The metadata file
    is written last, so a directory without ``shard.json`` is an unfinished shard.
    """
    out_dir = Path(out_dir)
    (out_dir / "shard.json").unlink(missing_ok=True)
    arrays = [np.asarray(t, dtype=np.int64).reshape(-1) for t in token_lists]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if flat.size and flat.min() < 0:
        raise DataError(f"{out_dir}: negative token id {int(flat.min())}")
    vmax = int(flat.max()) + 1 if flat.size else 1
    vocab_size = vmax if vocab_size is None else vocab_size
    if vmax > vocab_size:
        raise DataError(f"{out_dir}: token id {vmax - 1} is outside the vocabulary of {vocab_size}")
    dtype = token_dtype(vocab_size)
    if doc_ids is not None:
        if len(doc_ids) != len(arrays):
            raise DataError(f"{out_dir}: {len(doc_ids)} ids for {len(arrays)} documents")
        import pyarrow as pa

        write_table(out_dir / "doc_ids.parquet", pa.table({"doc_id": pa.array(list(doc_ids), pa.string())}))
    write_npy(out_dir / "tokens.npy", flat.astype(dtype))
    write_npy(out_dir / "offsets.npy", offsets)
    meta = {"format_version": SHARD_FORMAT_VERSION, "n_docs": len(arrays), "n_tokens": int(offsets[-1]),
            "dtype": dtype.name, "vocab_size": int(vocab_size), "has_doc_ids": doc_ids is not None}
    write_json(out_dir / "shard.json", meta)
    return meta


def tokenize_to_shard(docs: Iterable, tokenizer, out_dir: Path, *, batch_docs: int = 512) -> dict:
    """Tokenize ``Document``s in batches with ``tokenizer`` and write them (with their ids) as a shard."""
    ids: list[str] = []
    tokens: list[np.ndarray] = []
    batch: list = []

    def flush() -> None:
        dtype = token_dtype(tokenizer.vocab_size)
        for d, t in zip(batch, tokenizer.encode_batch([d.text for d in batch])):
            ids.append(d.id)
            tokens.append(np.asarray(t, dtype=dtype))  # small dtype: memory is what bounds a shard
        batch.clear()

    for d in docs:
        batch.append(d)
        if len(batch) >= batch_docs:
            flush()
    flush()
    if not ids:
        raise DataError(f"{out_dir}: no documents to tokenize; check the source and the held-out fraction")
    return write_shard(tokens, out_dir, vocab_size=tokenizer.vocab_size, doc_ids=ids)


@dataclass(frozen=True)
class TokenShard:
    """A read-only, memory-mapped shard: ``n_docs``, ``n_tokens``, ``doc(i)``, ``lengths``."""

    path: Path
    tokens: np.ndarray  # (n_tokens,) uint16|uint32, memory-mapped
    offsets: np.ndarray  # (n_docs + 1,) int64
    meta: dict

    @classmethod
    def open(cls, path: Path) -> "TokenShard":
        p = Path(path)
        if not (p / "shard.json").is_file():
            raise DataError(f"{p}: not a finished token shard (no shard.json); re-run the step that writes it")
        meta = read_json(p / "shard.json")
        if meta.get("format_version") != SHARD_FORMAT_VERSION:
            raise DataError(f"{p}: shard format {meta.get('format_version')} is not {SHARD_FORMAT_VERSION}; rebuild it")
        tokens = np.load(p / "tokens.npy", mmap_mode="r", allow_pickle=False)
        offsets = np.load(p / "offsets.npy", allow_pickle=False)
        if offsets.size != meta["n_docs"] + 1 or int(offsets[-1]) != tokens.size:
            raise DataError(f"{p}: tokens.npy and offsets.npy disagree; rebuild the shard")
        return cls(p, tokens, offsets, meta)

    @property
    def n_docs(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def lengths(self) -> np.ndarray:
        """(n_docs,) int64 token count of each document."""
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` (a view into the memory map)."""
        if not -self.n_docs <= i < self.n_docs:
            raise IndexError(f"document {i} out of range for a shard of {self.n_docs}")
        i %= self.n_docs
        return self.tokens[self.offsets[i]: self.offsets[i + 1]]

    def doc_ids(self) -> list[str]:
        """The documents' ids (DataError if the shard was written without them)."""
        f = self.path / "doc_ids.parquet"
        if not f.is_file():
            raise DataError(f"{self.path}: shard was written without document ids")
        import pyarrow.parquet as pq

        return pq.read_table(f).column("doc_id").to_pylist()

"""Where training and test text comes from: the embedded corpus, local files, or the HF hub.

A source is described by a :class:`SourceSpec` (plain data, part of a study config) and read
with :func:`iter_documents`, which yields :class:`Document` records in a fixed order.

Local files:

- ``.txt``: with ``txt_unit="block"`` (default) every blank-line-separated block is one
  document (id ``<file>:<block number>``), which suits one big text file; ``txt_unit="file"``
  makes each file one document, which suits a directory of short texts.
- ``.jsonl``: one JSON object per line; ``text_field`` (default ``"text"``) holds the text,
  ``id_field`` (optional) the id, else ``<file>:<line number>``; ``title_field`` optional.
- ``.parquet``: the same fields as columns.
- ``.txt`` and ``.jsonl`` may be compressed: ``.txt.gz``, ``.jsonl.zst`` ... (:mod:`.compressed`).

A path with ``*``, ``?`` or ``[`` is a glob: every matching file, in sorted order (a sharded pool).

Text files are UTF-8, with or without a byte-order mark; a ``.txt`` file with a NUL byte is
binary and refused (by the steps, by ``select`` and by the plan-time checks alike).

A directory is read recursively in sorted path order; files of other types are ignored.

What a local source may read is a stated policy (:func:`local_files`): its path is resolved,
system directories (/etc, /proc, /sys, /dev, /boot, /run) are refused, only regular files are
read, and a directory source reads only files that resolve inside it.
"""
from __future__ import annotations

import json
import os
import re
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Optional

from ..errors import ConfigError, DataError
from ..store.paths import SYSTEM_DIRS
from ..store.paths import system_dir as _system_dir
from .compressed import data_format, is_glob, open_binary
from .hub import hf_records

SourceKind = Literal["embedded", "local", "hf"]
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet", ".txt.gz", ".jsonl.gz", ".txt.zst", ".jsonl.zst")
KINDS = ".txt, .jsonl, .parquet files (.txt and .jsonl may end in .gz or .zst)"
# How the user changes a source setting: a command's flag (e.g. text_field → --text-field) while
# the command reads, else the key of the source spec.
_FLAGS: ContextVar[Optional[Mapping[str, str]]] = ContextVar("source_setting_flags", default=None)


@contextmanager
def named_by_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, errors about source settings name the command's flags (``flags``:
    setting → flag, e.g. ``{"text_field": "--text-field"}``) instead of the spec's keys."""
    token = _FLAGS.set(dict(flags))
    try:
        yield
    finally:
        _FLAGS.reset(token)


def how_to_set(key: str) -> str:
    """The end of an error line: how the user sets ``key`` (a flag, or the source spec's key)."""
    flag = (_FLAGS.get() or {}).get(key)
    return f"pass {flag}" if flag else f"set {key} in the source spec"


@dataclass(frozen=True)
class Document:
    """One document: a stable id (unique within its source), its text, an optional title."""

    id: str
    text: str
    title: Optional[str] = None


@dataclass(frozen=True)
class SourceSpec:
    """A source of documents.

    ``kind="embedded"`` needs ``domain``; ``"local"`` needs ``path`` (a file or a directory);
    ``"hf"`` needs ``path`` (a hub dataset name, or a builder such as ``"json"`` together with
    ``data_files``) and reads ``split`` with ``datasets.load_dataset``. ``max_docs`` caps any
    kind. ``label`` names the source for the held-out split (default: derived from the spec).
    """

    kind: SourceKind
    domain: str = ""
    path: str = ""
    name: Optional[str] = None
    split: str = "train"
    data_files: Optional[str] = None
    text_field: str = "text"
    id_field: Optional[str] = None
    title_field: Optional[str] = None
    txt_unit: Literal["block", "file"] = "block"
    streaming: bool = True
    max_docs: Optional[int] = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind == "embedded" and not self.domain:
            raise ConfigError("source of kind 'embedded' needs a 'domain' (e.g. domain: bible)")
        if self.kind in ("local", "hf") and not self.path:
            raise ConfigError(f"source of kind '{self.kind}' needs a 'path'")
        if self.max_docs is not None and self.max_docs <= 0:
            raise ConfigError(f"max_docs must be positive, got {self.max_docs}")

    @property
    def key(self) -> str:
        """The source's name in held-out hashing and reports (stable across machines)."""
        if self.label:
            return self.label
        if self.kind == "embedded":
            return f"embedded/{self.domain}"
        if self.kind == "hf":
            return f"hf/{self.path}/{self.name or ''}/{self.split}"
        return f"local/{Path(self.path).name}"


def iter_documents(spec: SourceSpec, corpus_dir: Optional[Path] = None) -> Iterator[Document]:
    """Yield the documents of ``spec`` in a fixed order (DataError if there are none)."""
    if spec.kind == "embedded":
        if corpus_dir is None:
            raise DataError(f"source embedded/{spec.domain} needs the corpus directory; "
                            "pass corpus_dir (build it with `proxyscale corpus build DIR`)")
        it = _embedded(Path(corpus_dir), spec.domain)
    elif spec.kind == "local":
        it = _local(spec)
    else:
        it = iter_hf_documents(spec)
    n = 0
    for doc in it:
        if spec.max_docs is not None and n >= spec.max_docs:
            return
        n += 1
        yield doc
    if n == 0:
        raise DataError(f"source {spec.key} ({spec.path or spec.domain}) has no documents; "
                        "point it at non-empty data")


def iter_hf_documents(spec: SourceSpec, revision: Optional[str] = None) -> Iterator[Document]:
    """Documents of a ``kind="hf"`` source (text in ``text_field``), at ``revision`` if given."""
    flags = _FLAGS.get() or {}
    fix = ("Offline? Point path='json' or 'parquet' and data_files at local copies" if not flags else
           "Check the dataset name, " + ", ".join(flags[k] for k in ("name", "split", "revision") if k in flags)
           + "; offline, pass a local copy of the dataset's files as the path")
    records = hf_records(spec.path, spec.name, spec.split, data_files=spec.data_files, streaming=spec.streaming,
                         revision=revision, fix=fix)
    for k, rec in enumerate(records):
        text = rec.get(spec.text_field)
        if not isinstance(text, str):
            raise DataError(f"{spec.path}: record {k} has no string field '{spec.text_field}' "
                            f"(has {list(rec)}); {how_to_set('text_field')}")
        doc_id = str(rec[spec.id_field]) if spec.id_field and rec.get(spec.id_field) is not None else str(k)
        title = rec.get(spec.title_field) if spec.title_field else None
        yield Document(doc_id, text, str(title) if title is not None else None)


def _embedded(corpus_dir: Path, domain: str) -> Iterator[Document]:
    from .corpus import domain_file

    path = domain_file(corpus_dir, domain)
    yield from _jsonl(path, "text", "id", "title")


def _local(spec: SourceSpec) -> Iterator[Document]:
    for f, prefix in local_files(spec):
        yield from iter_file(f, prefix, spec)


def iter_file(f: Path, prefix: str, spec: SourceSpec) -> Iterator[Document]:
    """The documents of one file of a local source (ids prefixed by ``prefix``), read with
    ``spec``'s fields; a shard of a sharded pool is read this way."""
    fmt = data_format(f)
    if fmt == ".txt":
        yield from _txt(f, prefix, spec.txt_unit)
    elif fmt == ".jsonl":
        yield from _jsonl(f, spec.text_field, spec.id_field, spec.title_field, prefix)
    else:
        yield from _parquet(f, spec.text_field, spec.id_field, spec.title_field, prefix)


def local_files(spec: SourceSpec) -> list[tuple[Path, str]]:
    """The files a ``local`` source reads, with their id prefixes, under the read policy:

    - the path is resolved (symlinks followed) and must exist;
    - its resolved location must not lie under a system directory (``SYSTEM_DIRS``: /etc,
      /proc, /sys, /dev, /boot, /run): system files are never data;
    - only regular files are read (no devices, FIFOs or sockets);
    - in a directory, every file — symlinks included — must resolve inside that directory
      (symlinked subdirectories are not descended into), so a source reads what its path names.

    A breach is a :class:`DataError` naming the path; the same rule holds at plan time
    (:func:`proxyscale.data.checks.check_source`) and when a step reads the source."""
    root = Path(spec.path)
    if is_glob(spec.path) and not root.exists():
        return _glob_files(spec.path)
    if not root.exists():
        link = f" (a symlink to {os.readlink(root)}, which does not exist)" if root.is_symlink() else ""
        raise DataError(f"{root}: local source path does not exist{link}; check 'path' in the source spec")
    real = root.resolve()
    system = _system_dir(real)
    if system is not None:
        raise DataError(f"{root}: resolves to {real}, under the system directory {system}; a source may not read "
                        f"{', '.join(SYSTEM_DIRS)} — copy the text you mean into a data directory")
    if real.is_dir():
        files = []
        for p in sorted(root.rglob("*")):
            if data_format(p) is None or not p.is_file():
                continue
            if not p.resolve().is_relative_to(real):
                raise DataError(f"{p}: a symlink to {p.resolve()}, outside the source directory {real}; "
                                "a directory source reads only files inside it — copy the file in")
            files.append((p, p.relative_to(root).as_posix()))
        if not files:
            raise DataError(f"{root}: no {KINDS} in this directory")
        return files
    if not stat.S_ISREG(real.stat().st_mode):
        raise DataError(f"{root}: not a regular file (a device, FIFO or socket); point the source at text files")
    if data_format(root) is None:
        kind = "".join(root.suffixes[-2:]) if root.suffix in (".gz", ".zst") else root.suffix
        raise DataError(f"{root}: unsupported file type '{kind}'; use {KINDS}")
    return [(root, root.name)]


def _glob_files(pattern: str) -> list[tuple[Path, str]]:
    """The files a glob source reads (sorted; each under the single-file rules), ids prefixed by
    their path relative to the pattern's fixed leading folders."""
    from glob import glob

    head = Path(pattern)
    while is_glob(str(head)) and head != head.parent:
        head = head.parent
    matches = [Path(p) for p in sorted(glob(pattern, recursive=True))]
    files = [p for p in matches if data_format(p) is not None and p.is_file()]
    if not files:
        raise DataError(f"{pattern}: no {KINDS} match this pattern; check the pattern "
                        "(quote it so the shell does not expand it)")
    out = []
    for p in files:
        out.extend((f, p.relative_to(head).as_posix()) for f, _ in local_files(SourceSpec("local", path=str(p))))
    return out


def check_text_bytes(path: Path, raw: bytes) -> None:
    """Refuse text with a NUL byte: such a file is binary (one rule for every reader of .txt)."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path}: holds a NUL byte at byte {nul}, so it is binary, not text; "
                        "point the source at text files")


def _read_utf8(path: Path) -> str:
    """A .txt file's text: UTF-8, with or without a byte-order mark, and no NUL bytes."""
    with open_binary(path) as f:
        raw = f.read()
    check_text_bytes(path, raw)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start}); convert it, e.g. "
                        f"`iconv -f latin1 -t utf-8 {path.name}`") from None


def _txt(path: Path, prefix: str, unit: str) -> Iterator[Document]:
    text = _read_utf8(path)
    if unit == "file":
        if text.strip():
            yield Document(prefix, text.strip("\n"))
        return
    for k, block in enumerate(b for b in re.split(r"\n(?:[ \t]*\n)+", text) if b.strip()):
        yield Document(f"{prefix}:{k}", block.strip("\n"))


def _jsonl(path: Path, text_field: str, id_field: Optional[str], title_field: Optional[str],
           prefix: Optional[str] = None) -> Iterator[Document]:
    prefix = prefix if prefix is not None else path.name
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            rec = jsonl_record(path, lineno, raw)
            if rec is not None:
                yield _record(rec, text_field, id_field, title_field, f"{prefix}:{lineno}", f"{path}: line {lineno}")


def jsonl_record(path: Path, lineno: int, raw: bytes) -> object:
    """One JSON line's value (None for a blank line), or a one-line DataError naming the line.
    The first line may start with a UTF-8 byte-order mark."""
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: line {lineno} is not valid UTF-8; re-encode the file as UTF-8") from None
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {lineno} is not JSON ({e.msg}); fix or remove it") from None


def _record(rec: object, text_field: str, id_field: Optional[str], title_field: Optional[str],
            default_id: str, where: str) -> Document:
    if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
        keys = list(rec) if isinstance(rec, dict) else type(rec).__name__
        raise DataError(f"{where}: no string field '{text_field}' (has {keys}); {how_to_set('text_field')}")
    doc_id = str(rec[id_field]) if id_field and rec.get(id_field) is not None else default_id
    title = rec.get(title_field) if title_field else None
    return Document(doc_id, rec[text_field], str(title) if title is not None else None)


def _parquet(path: Path, text_field: str, id_field: Optional[str], title_field: Optional[str],
             prefix: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet ({e}); check the file") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{path}: no column '{text_field}' (has {names}); {how_to_set('text_field')}")
    cols = [c for c in (text_field, id_field, title_field) if c and c in names]
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=4096):
        for rec in batch.to_pylist():
            yield _record(rec, text_field, id_field, title_field, f"{prefix}:{row}", f"{path}: row {row}")
            row += 1

"""Source checks that run before any step: a bad source is refused while planning, not after
the tokenizer has been trained.

:func:`check_source` applies the read policy of :func:`proxyscale.data.sources.local_files`
and reads the head of every local file the way the steps will read it: ``.txt`` must be UTF-8
text (no NUL bytes), every ``.jsonl`` line a JSON object with a string ``text_field``, a
``.parquet`` file must open and hold a ``text_field`` column; and the source must yield at
least one document. Each file is checked up to :data:`CHECK_BYTES` and each source up to
:data:`SOURCE_CHECK_BYTES` in all, so planning stays quick on large corpora; a defect beyond
that is still reported, on one line, by the step that reads it. Embedded sources are checked
against the corpus recipes (a known domain, and one the ``corpus`` settings will build); hub
sources are read only by their steps (no network at plan time).
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Mapping, Optional

from ..config import suggest
from ..errors import DataError
from .compressed import data_format, open_binary
from .sources import SourceSpec, _record, check_text_bytes, how_to_set, jsonl_record, local_files

CHECK_BYTES = 8 << 20  # per file
SOURCE_CHECK_BYTES = 64 << 20  # per source


def check_source(spec: SourceSpec, corpus: Optional[Mapping[str, Any]] = None, where: str = "source") -> None:
    """Refuse a source that its steps could not read: a DataError ``<where>: <what is wrong and
    what to do>``. ``corpus``: the study's corpus settings (``domains``, ``use_apt``)."""
    try:
        if spec.kind == "embedded":
            _check_domain(spec.domain, corpus or {})
        elif spec.kind == "local":
            _check_local(spec)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def _check_domain(domain: str, corpus: Mapping[str, Any]) -> None:
    from .corpus import ALL_DOMAINS, APT_DOMAINS

    if domain not in ALL_DOMAINS:
        raise DataError(f"unknown corpus domain '{domain}'{suggest(domain, ALL_DOMAINS)}; "
                        f"known: {', '.join(ALL_DOMAINS)}")
    domains = corpus.get("domains")
    if domains is not None and domain not in domains:
        raise DataError(f"domain '{domain}' is not in corpus.domains {list(domains)}; add it there")
    if domain in APT_DOMAINS and corpus.get("use_apt") is False:
        raise DataError(f"domain '{domain}' is built from Debian packages but corpus.use_apt is false; "
                        "allow apt or use a Python domain (pycode, pydocstrings, pyref)")


def _check_local(spec: SourceSpec) -> None:
    budget, n_docs, complete = SOURCE_CHECK_BYTES, 0, True
    for path, _prefix in local_files(spec):
        if budget <= 0:
            complete = False
            break
        if data_format(path) == ".parquet":
            n_docs += _check_parquet(path, spec.text_field)
            continue
        head, whole = _head(path, min(CHECK_BYTES, budget))
        budget -= len(head)
        complete &= whole
        if data_format(path) == ".txt":
            n_docs += _check_txt(path, head, whole)
        else:
            n_docs += _check_jsonl(path, head, whole, spec)
        if spec.max_docs is not None and n_docs >= spec.max_docs:
            return
    if n_docs == 0 and complete:
        raise DataError(f"{spec.path} has no documents (its files are empty or blank); "
                        "point it at non-empty data")


def _head(path: Path, limit: int) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of ``path``, and whether that is the whole file."""
    try:
        with open_binary(path) as f:  # decompressed: a damaged .gz or .zst head is refused here
            head = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    return head[:limit], len(head) <= limit


def _check_txt(path: Path, head: bytes, whole: bool) -> int:
    check_text_bytes(path, head)
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start}); convert it, e.g. "
                        f"`iconv -f latin1 -t utf-8 {path.name}`") from None
    return 1 if text.strip() else 0


def _check_jsonl(path: Path, head: bytes, whole: bool, spec: SourceSpec) -> int:
    lines = head.split(b"\n")
    if not whole:
        lines = lines[:-1]  # the last line may be cut by the head
    n = 0
    for lineno, raw in enumerate(lines, 1):
        rec = jsonl_record(path, lineno, raw)
        if rec is not None:
            _record(rec, spec.text_field, spec.id_field, spec.title_field, "", f"{path}: line {lineno}")
            n += 1
    return n


def _check_parquet(path: Path, text_field: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0]}); check the file") from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise DataError(f"{path}: no column '{text_field}' (has {schema.names}); {how_to_set('text_field')}")
    ftype = schema.field(text_field).type
    if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype)):
        raise DataError(f"{path}: column '{text_field}' holds {ftype}, not text; set text_field to a string column")
    return pf.metadata.num_rows

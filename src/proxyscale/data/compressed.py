"""Local data files as their readers see them: the data format under an optional compression
(``.jsonl.gz``, ``.txt.zst`` ...), opened as a stream of decompressed bytes, and globs of such
files (a sharded pool: ``pool/*.jsonl.zst``).

A damaged compressed file is one :class:`DataError` naming the file, raised by whichever read
meets the damage, never a library traceback.
"""
from __future__ import annotations

import gzip
import io
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

from ..errors import DataError

FORMATS = (".txt", ".jsonl", ".parquet")
COMPRESSIONS = (".gz", ".zst")  # Parquet compresses inside the file: these wrap only .txt and .jsonl
GLOB_CHARS = frozenset("*?[")


def data_format(path: Path) -> Optional[str]:
    """The data format of ``path`` (``.txt``, ``.jsonl``, ``.parquet``) under an optional ``.gz``
    or ``.zst``, or None for a file no source reads."""
    suffixes = path.suffixes[-2:]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        return suffixes[0] if len(suffixes) == 2 and suffixes[0] in (".txt", ".jsonl") else None
    return path.suffix if path.suffix in FORMATS else None


def is_glob(path: str) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?`` or ``[`` in it) rather than a path."""
    return any(c in GLOB_CHARS for c in path)


def _zstd(raw: IO[bytes]) -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        raise DataError("reading .zst files needs the zstandard package; pip install zstandard") from None
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))  # type: ignore[arg-type]


def _damage_types() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [gzip.BadGzipFile, EOFError, OSError]
    try:
        import zstandard

        kinds.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(kinds)


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """``path`` opened for reading, decompressed if it ends in ``.gz`` or ``.zst``; damage met
    while the block reads it is one DataError naming the file."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    f: IO[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else _zstd(raw) if path.suffix == ".zst" else raw
    try:
        yield f
    except _damage_types() as e:
        if path.suffix not in COMPRESSIONS:
            raise
        what = "gzip" if path.suffix == ".gz" else "zstd"
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: damaged or not {what} data ({why}); re-create or re-download this file") from None
    finally:
        f.close()
        raw.close()

"""What ``_step.json`` records about a finished step's files, and how a record is checked on read.

A step's record maps each output file (relative path) to its size and sha256. A record is data
written to disk, so it is checked like any other input before anything is opened by it
(:func:`record_problems`, :func:`problems`):

- the record is a JSON object with a ``files`` mapping (a record without one is damaged);
- each key is a relative POSIX path without ``.``/``..`` parts that stays inside the step
  directory once resolved (no absolute path, no escaping symlinked directory);
- each value is ``{"bytes": int >= 0, "sha256": 64 hex digits}``;
- each recorded file is a regular file (``lstat``: not a symlink, device, fifo or directory).

Anything else makes the step damaged, with a one-line reason, and the offending path is never
opened. Sizes are then checked cheaply whenever a run starts or ``status`` looks; hashes when a
worker reads a step's outputs (once per file version in a process) and by ``proxyscale verify``.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

PROGRESS_FILE = "_progress.json"  # how far a running step is (written by the step, read by the driver)
RUNNING_FILE = "_running.json"  # which submission started the step's function (read when a worker dies)
CONTROL_FILES = frozenset({"_step.json", "_failed.json", "_terminated", PROGRESS_FILE, RUNNING_FILE})
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def sha256_file(path: Path) -> str:
    """sha256 of a regular file; refuses (OSError) a symlink or anything that is not a regular file."""
    # O_NOFOLLOW and the fstat close the gap between the lstat check and this open
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        h = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def output_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except the store's control files, sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.parent == root and name in CONTROL_FILES:
                continue
            if ".tmp-" in name or p.is_symlink():
                continue
            out.append(p)
    return sorted(out)


def manifest(root: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of a step directory's output files."""
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in output_files(root)}


def record_problems(record: Any) -> list[str]:
    """What is wrong with the shape of a step record (empty: its ``files`` can be checked)."""
    if not isinstance(record, dict):
        return [f"_step.json holds a JSON {type(record).__name__}, not an object"]
    files = record.get("files")
    if files is None:
        return ["_step.json records no files"]
    if not isinstance(files, dict):
        return [f"_step.json records its files as a JSON {type(files).__name__}, not a mapping"]
    return []


def entry_problem(root: Path, rel: Any, want: Any) -> str | None:
    """Why one recorded ``rel: want`` entry cannot be checked (None: it can), without opening it."""
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        return f"recorded file {rel!r} is not a relative POSIX path"
    if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
        return f"recorded file {rel!r} is not a plain relative path inside the step (absolute, '.' or '..')"
    try:  # the folders on the way (the file itself is lstat-ed: a symlink there is named as one)
        escapes = not (root / rel).parent.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        escapes = True
    if escapes:
        return f"recorded file {rel!r} lies outside the step directory once its folders are resolved"
    if not isinstance(want, dict):
        return f"recorded file {rel!r} has no {{bytes, sha256}} entry"
    size, digest = want.get("bytes"), want.get("sha256")
    if type(size) is not int or size < 0:
        return f"recorded file {rel!r} has no valid size (bytes: an integer >= 0)"
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return f"recorded file {rel!r} has no valid sha256 (64 hex digits)"
    return None


def problems(root: Path, files: Any, full: bool = True) -> list[str]:
    """What is wrong with ``root`` against its recorded manifest ``files`` (empty: intact).
    ``full=False`` checks presence and sizes only. A malformed entry is reported, never opened."""
    if not isinstance(files, dict):
        return record_problems({"files": files}) or ["_step.json records no files"]
    found = []
    for rel, want in sorted(files.items(), key=lambda kv: str(kv[0])):
        bad = entry_problem(root, rel, want)
        if bad is not None:
            found.append(bad)
            continue
        p = root / rel
        try:
            st = p.lstat()
        except OSError:
            found.append(f"{rel} is missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            found.append(f"{rel} is {what}")
        elif st.st_size != want["bytes"]:
            found.append(f"{rel} has {st.st_size} bytes, {want['bytes']} were written")
        elif full and _hash_cached(p, st) != want["sha256"]:
            found.append(f"{rel} changed since it was written (sha256 differs)")
    return found


def _hash_cached(p: Path, st: os.stat_result) -> str:
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        try:
            _verified[key] = sha256_file(p)
        except OSError:
            return ""  # replaced or unreadable since the lstat: reported as changed
    return _verified[key]

"""Checksums of a finished step's files: what ``_step.json`` records and what is checked on read.

A step's manifest maps each output file (relative path) to its size and sha256. Sizes are checked
cheaply whenever a run starts or ``status`` looks; hashes when a worker reads a step's outputs
(once per file version in a process) and by ``proxyscale verify``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

PROGRESS_FILE = "_progress.json"  # how far a running step is (written by the step, read by the driver)
RUNNING_FILE = "_running.json"  # which submission started the step's function (read when a worker dies)
CONTROL_FILES = frozenset({"_step.json", "_failed.json", "_terminated", PROGRESS_FILE, RUNNING_FILE})
_CHUNK = 1 << 20
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
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


def problems(root: Path, files: dict[str, dict[str, Any]], full: bool = True) -> list[str]:
    """What is wrong with ``root`` against its recorded manifest (empty: intact). ``full=False``
    checks presence and sizes only."""
    found = []
    for rel, want in sorted(files.items()):
        p = root / rel
        try:
            st = p.stat()
        except OSError:
            found.append(f"{rel} is missing")
            continue
        if st.st_size != want["bytes"]:
            found.append(f"{rel} has {st.st_size} bytes, {want['bytes']} were written")
        elif full and _hash_cached(p, st) != want["sha256"]:
            found.append(f"{rel} changed since it was written (sha256 differs)")
    return found


def _hash_cached(p: Path, st: os.stat_result) -> str:
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(p)
    return _verified[key]

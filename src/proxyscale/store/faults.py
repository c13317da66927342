"""The store's disk failing under a run: full (ENOSPC), over quota, read-only, or not a directory.

Each becomes one :class:`StoreError` line naming the store and what to do. Whether a store is
writable is found out by writing (a probe file, removed at once): ``os.access`` answers yes to
root on a read-only mount or a ``chmod``-ed directory.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import StoreError

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
NEARLY_FULL = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (None: unknown)."""
    for p in (path, *path.parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (what a step had written when its disk filled)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _nearly_full(root: Path) -> bool:
    """Short writes (numpy, Arrow) raise an OSError without errno: a disk with under 1 MiB left
    is taken as the cause."""
    free = free_bytes(root)
    return free is not None and free < NEARLY_FULL


def not_a_directory(root: Path) -> StoreError:
    return StoreError(f"--store {root} is a file, not a directory; pass a directory for the run store "
                      "(a new one is created there)")


def read_only(root: Path, e: OSError) -> StoreError:
    return StoreError(f"the store {root} is read-only ({e.strerror or e}): `proxyscale status` and `verify` work "
                      "on it as it is; to run or report, pass --store a writable copy (e.g. cp -r it elsewhere)")


def disk_full(root: Path, e: OSError, written: int | None = None) -> StoreError:
    free = free_bytes(root)
    parts = ([f"{free:,} bytes free"] if free is not None else []) + \
        ([f"the step had written {written:,} bytes"] if written else [])
    known = f" ({'; '.join(parts)})" if parts else ""
    return StoreError(f"no space left on the disk of the store {root} ({e.strerror or e}){known}; free some "
                      "space or pass --store on a larger disk, then re-run")


def as_store_error(e: OSError, root: Path, written: int | None = None) -> StoreError | None:
    """The one-line StoreError for a disk that is full or read-only (None: another OSError)."""
    if e.errno in FULL or (e.errno is None and _nearly_full(root)):
        return disk_full(root, e, written)
    if e.errno == errno.EROFS:
        return read_only(root, e)
    if e.errno in (errno.ENOTDIR, errno.EEXIST) and root.exists() and not root.is_dir():
        return not_a_directory(root)
    return None


@contextmanager
def store_errors(root: Path) -> Iterator[None]:
    """Turn a full, read-only or file-shaped store met while writing into one StoreError line."""
    try:
        yield
    except OSError as e:
        err = as_store_error(e, root)
        if err is None:
            raise
        raise err from None


def check_directory(root: Path) -> None:
    """Refuse a store path that exists but is not a directory."""
    if root.exists() and not root.is_dir():
        raise not_a_directory(root)


def require_writable(root: Path) -> None:
    """Create the store directory if needed and prove it writable by writing a probe file."""
    check_directory(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        err = as_store_error(e, root)
        if err is None and e.errno in READ_ONLY:
            err = read_only(root, e)
        if err is None:
            raise StoreError(f"cannot write to the store {root} ({e.strerror or e}); pass another --store") from None
        raise err from None

"""One policy for everything proxyscale writes outside the run store at a path the user names
(``select --out``, ``attribute --out``, ``corpus build --out``, the Hugging Face export).

- **Where**: the path is resolved (symlinks and ``..``) and may not lie in a system directory
  (:data:`proxyscale.store.paths.SYSTEM_DIRS`, the rule sources follow too). It may not be,
  lie inside, or contain an input of the command (``select``: ``--pool`` and ``--target``;
  ``attribute``: the store, the spec and the data root). Any other path the user typed is
  the user's choice, ``..`` included.
- **How**: the output is written into a new staging directory (or temporary file) beside the
  target and renamed into place, so it is complete or absent; the staging is removed on every
  failure, and an ``OSError`` (a full or read-only filesystem) becomes one :class:`OutputError`
  line naming the path.
- **What may be replaced**: proxyscale recognises its own earlier output by a marker listing
  every file it wrote with its sha256: ``.proxyscale-output.json`` inside an output directory,
  ``<name>.proxyscale-output.json`` beside a single output file. A new or empty directory may
  be used. An existing output is replaced only with ``overwrite`` (``--overwrite``) and only
  while it holds nothing but the marker's files, unchanged (files it lists that are gone are
  fine: nothing is lost); otherwise the first unknown or changed file is named and nothing is
  touched. A directory output is replaced as a whole by a rename, so a shell sitting inside it
  sees the new files after ``cd .``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import OutputError
from .io import atomic_path, write_json
from .paths import SYSTEM_DIRS, system_dir

MARKER = ".proxyscale-output.json"  # inside an output directory; "<file>" + MARKER beside a file
Inputs = Sequence[tuple[str, "str | Path"]]  # (what the user calls it, e.g. "--pool", path)
_OS_WORDS = {errno.ENOSPC: "no space left on device", errno.EROFS: "the filesystem is read-only",
             errno.EACCES: "permission denied", errno.EPERM: "permission denied",
             errno.EDQUOT: "disk quota exceeded"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output(target: str | Path, *, inputs: Inputs = (), overwrite: bool = False, flag: str = "--out",
                 single_file: bool = False) -> Path:
    """The resolved output path, or an :class:`OutputError` saying why it may not be written
    (system directory, an input, something proxyscale did not write, or an earlier output
    without ``overwrite``). Commands call it before any work, and the writers again at the end."""
    real = Path(target).resolve()
    system = system_dir(real)
    if system is not None:
        raise OutputError(f"{flag} {target}: resolves to {real}, under the system directory {system}; outputs may "
                          f"not go to {', '.join(SYSTEM_DIRS)} — choose a path in your own directories")
    for name, p in inputs:
        _refuse_clash(real, target, name, Path(p), flag)
    why = _file_problem(real, overwrite) if single_file else _dir_problem(real, overwrite)
    if why:
        raise OutputError(f"{flag} {target}: {why}")
    return real


def _refuse_clash(real: Path, target: str | Path, name: str, path: Path, flag: str) -> None:
    rp = path.resolve()
    how = ("is" if real == rp else "lies inside" if real.is_relative_to(rp) else
           "contains" if rp.is_relative_to(real) else None)
    if how is not None:
        raise OutputError(f"{flag} {target} {how} the input {name} ({path}); an output may not be, lie inside or "
                          "contain an input — choose another path")


def _read_marker(path: Path) -> Optional[dict]:
    """The marker's file table, or None when it is missing or not proxyscale's."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("written_by") == "proxyscale" and isinstance(data.get("files"), dict)
    return data["files"] if ok else None


def _dir_problem(real: Path, overwrite: bool) -> Optional[str]:
    if not os.path.lexists(real):
        return None
    if not real.is_dir():
        return "exists and is not a directory; choose a new or empty directory"
    entries = sorted(p.name for p in real.iterdir())
    if not entries:
        return None
    files = _read_marker(real / MARKER)
    if files is None:
        return (f"already holds files proxyscale did not write (e.g. {entries[0]}); choose a new or "
                "empty directory")
    if not overwrite:
        return "holds an earlier proxyscale output; pass --overwrite to replace it, or choose another path"
    for rel in _tree(real):
        if rel == MARKER:
            continue
        if rel not in files or files[rel].get("sha256") != sha256_file(real / rel):
            return (f"cannot replace it: {rel} was not written by proxyscale or has changed since; "
                    "move it away or choose another path")
    return None


def _tree(root: Path) -> list[str]:
    """Every non-directory entry under ``root`` (symlinks included, not followed), relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        out += [(here / n).relative_to(root).as_posix() for n in filenames]
        out += [(here / n).relative_to(root).as_posix() for n in dirnames if (here / n).is_symlink()]
    return sorted(out)


def _sidecar(real: Path) -> Path:
    return real.with_name(real.name + MARKER)


def _file_problem(real: Path, overwrite: bool) -> Optional[str]:
    side = _sidecar(real)
    if os.path.lexists(side) and _read_marker(side) is None:
        return f"{side} exists and was not written by proxyscale; move it away or choose another path"
    if not os.path.lexists(real):
        return None
    if real.is_dir() or real.is_symlink():
        return "exists and is a directory (or a link); choose a file path"
    files = _read_marker(side)
    if files is None:
        return "exists and was not written by proxyscale; choose another path"
    if not overwrite:
        return "holds an earlier proxyscale output; pass --overwrite to replace it, or choose another path"
    if files.get(real.name, {}).get("sha256") != sha256_file(real):
        return "cannot replace it: it has changed since proxyscale wrote it; move it away or choose another path"
    return None


def _marker_data(files: dict[str, Path]) -> dict:
    return {"written_by": "proxyscale", "format_version": 1,
            "files": {rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in sorted(files.items())}}


def _os_error(e: OSError, real: Path, flag: str, need_bytes: Optional[int]) -> OutputError:
    what = _OS_WORDS.get(e.errno or 0, e.strerror or str(e))
    extra = ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(real)
        extra = (f" ({need_bytes:,} bytes needed, " if need_bytes else " (") + (
            f"{free:,} bytes free)" if free is not None else "free space unknown)")
    return OutputError(f"cannot write {flag} {real}: {what}{extra}; nothing was written — "
                       f"free some space or choose another {flag}")


def _free_bytes(real: Path) -> Optional[int]:
    p = real
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return those created (deepest last)."""
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _drop(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


@contextmanager
def output_dir(target: str | Path, *, inputs: Inputs = (), overwrite: bool = False, flag: str = "--out",
               need_bytes: Optional[int] = None) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; when the block ends, record the
    marker and rename the staging onto ``target`` (replacing an earlier output of proxyscale's,
    with ``overwrite``). On any failure the staging is removed and ``target`` is untouched."""
    real = check_output(target, inputs=inputs, overwrite=overwrite, flag=flag)
    created: list[Path] = []
    staging: Optional[Path] = None
    done = False
    try:
        created = _make_parents(real.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{real.name}.staging-", dir=real.parent))
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        write_json(staging / MARKER, _marker_data({rel: staging / rel for rel in _tree(staging) if rel != MARKER}))
        check_output(target, inputs=inputs, overwrite=overwrite, flag=flag)  # nothing changed meanwhile
        _swap_in(staging, real)
        done = True
    except OSError as e:
        raise _os_error(e, real, flag, need_bytes) from None
    finally:
        if staging is not None and not done:
            shutil.rmtree(staging, ignore_errors=True)
        if not done:
            _drop(created)


def _swap_in(staging: Path, real: Path) -> None:
    """Rename ``staging`` onto ``real`` (absent, empty, or a checked earlier output)."""
    if not real.exists() or not any(real.iterdir()):
        os.replace(staging, real)  # rename(2) replaces an empty directory
        return
    old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-", dir=real.parent))
    os.replace(real, old)  # onto the empty placeholder
    try:
        os.replace(staging, real)
    except BaseException:
        os.replace(old, real)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def output_file(target: str | Path, *, inputs: Inputs = (), overwrite: bool = False, flag: str = "--out",
                need_bytes: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends, write the sidecar marker
    ``<target>.proxyscale-output.json`` and rename the file onto ``target``. On failure the
    temporary file is removed and ``target`` and its sidecar are as they were."""
    real = check_output(target, inputs=inputs, overwrite=overwrite, flag=flag, single_file=True)
    side = _sidecar(real)
    created: list[Path] = []
    old_side: Optional[bytes] = None
    wrote_side = False
    try:
        created = _make_parents(real.parent)
        old_side = side.read_bytes() if side.is_file() else None
        fd, name = tempfile.mkstemp(prefix=f".{real.name}.tmp-", dir=real.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            check_output(target, inputs=inputs, overwrite=overwrite, flag=flag, single_file=True)
            write_json(side, _marker_data({real.name: tmp}))
            wrote_side = True
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be shareable
            os.replace(tmp, real)
        finally:
            tmp.unlink(missing_ok=True)
    except BaseException as e:
        if wrote_side:
            _restore(side, old_side)
        _drop(created)
        if isinstance(e, OSError):
            raise _os_error(e, real, flag, need_bytes) from None
        raise


def _restore(side: Path, old: Optional[bytes]) -> None:
    try:
        if old is None:
            side.unlink(missing_ok=True)
        else:
            with atomic_path(side) as tmp:
                tmp.write_bytes(old)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

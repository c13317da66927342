"""Where everything lives in a run store. The only code that builds store paths.

```
<root>/steps/<kind>/<name>-<hash>/            finished step: its files and ``_step.json``
<root>/steps/<kind>/.partial/<name>-<hash>/   step in progress or failed (kept for resume)
<root>/steps/<kind>/.locks/<name>-<hash>      the step's claim (an flock held while it runs)
<root>/steps/<kind>/.corrupt/<name>-<hash>-*/ a finished step whose files no longer match
<root>/<study>/                                per-study outputs (report, plan)
<root>/.calibration/<kind>-<hash>.json         measured training choices shared by the store's processes
<root>/store.json                              the store's format version
```
A step runs inside its partial directory and is renamed into place when it finishes, so a
finished directory is never half-written. ``_step.json`` records each output file's size and
sha256; a step whose files no longer match is moved to ``.corrupt`` and runs again. A step is
claimed by an exclusive ``flock`` on its lock file, held by the process that runs it: two
drivers on one store never run the same step, and a killed process's claim ends with it (also
on NFS, where Linux maps ``flock`` to POSIX locks); the lock file names its holder (pid, host);
``_failed.json`` in the partial directory says why a step failed. Every way out of running a
step (finished, failed, or a write that failed on a full disk) releases its claim.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Any, Literal

from ..errors import StoreError
from .checks import PROGRESS_FILE, manifest, problems, record_problems
from .io import FORMAT_VERSION, read_json, write_json

StepState = Literal["done", "running", "failed", "pending"]
STEP_FILE = "_step.json"
FAILED_FILE = "_failed.json"
STORE_FILE = "store.json"
CALIBRATION_ENV = "PROXYSCALE_CALIBRATION_DIR"  # a worker points train/calibrate.py at its store's .calibration/


class Store:
    """A run store rooted at a directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._resolved_root = self.root.resolve()  # once: every path the store builds is checked against it

    def check_format(self, create: bool = False) -> None:
        """Refuse a store written by another store format (its step hashes mean other things, so
        nothing in it could be reused); with ``create``, mark a new or empty store as ours."""
        marker = self.root / STORE_FILE
        if marker.is_file():
            try:
                found = dict(read_json(marker)).get("format_version")
            except (OSError, ValueError, TypeError) as e:
                raise StoreError(f"{marker} is unreadable ({type(e).__name__}); pass another --store, or restore "
                                 f"it as {{\"format_version\": {FORMAT_VERSION}}} if this store is yours") from None
        elif (self.root / "steps").is_dir() and any((self.root / "steps").iterdir()):
            found = 1  # stores before format 2 had no marker
        else:
            found = None
        if found is not None and found != FORMAT_VERSION:
            raise StoreError(f"store {self.root} was written in store format {found}; this proxyscale uses format "
                             f"{FORMAT_VERSION} and cannot reuse its results. Pass another --store, or delete "
                             f"{self.root / 'steps'} to start over")
        if found is None and create:
            write_json(marker, {"format_version": FORMAT_VERSION})

    def _inside(self, path: Path) -> Path:
        """``path`` if it stays inside the store once resolved (no ``..``, no escaping link)."""
        root = self._resolved_root
        if not path.resolve().is_relative_to(root):
            raise StoreError(f"{path} would lie outside the store {root}; rename the study, step or test set "
                             "(letters, digits, '-', '_', '.')")
        return path

    def final_dir(self, key: str) -> Path:
        return self._inside(self.root / "steps" / key)

    def partial_dir(self, key: str) -> Path:
        kind, leaf = key.split("/", 1)
        return self._inside(self.root / "steps" / kind / ".partial" / leaf)

    def calibration_dir(self) -> Path:
        """Where measured training choices (``precision: auto``, batching) are shared."""
        return self._inside(self.root / ".calibration")

    def study_dir(self, study: str) -> Path:
        if not study or study in (".", "..") or "/" in study or "\\" in study:
            raise StoreError(f"study name '{study}' cannot name a folder in the store; use letters, digits, '-', '_'")
        return self._inside(self.root / study)

    def lock_path(self, key: str) -> Path:
        kind, leaf = key.split("/", 1)
        return self._inside(self.root / "steps" / kind / ".locks" / leaf)

    def is_done(self, key: str) -> bool:
        return (self.final_dir(key) / STEP_FILE).is_file()

    def finished_keys(self) -> list[str]:
        """Keys of every finished step in the store."""
        steps = self.root / "steps"
        if not steps.is_dir():
            return []
        return sorted(f"{d.parent.name}/{d.name}" for d in steps.glob("*/*")
                      if not d.name.startswith(".") and (d / STEP_FILE).is_file())

    def record(self, key: str) -> dict[str, Any]:
        return read_json(self.final_dir(key) / STEP_FILE)

    def state(self, key: str) -> StepState:
        """done / running (a live process holds its claim) / failed / pending."""
        if self.is_done(key):
            return "done"
        if self.holder(key) is not None:
            return "running"
        if (self.partial_dir(key) / FAILED_FILE).is_file():
            return "failed"
        return "pending"

    def holder(self, key: str) -> dict[str, Any] | None:
        """Who holds the step's claim ({pid, host, since}), or None when nobody does."""
        lock = self.lock_path(key)
        try:
            f = open(lock)  # read-only is enough to probe a flock (a store may be read-only to us)
        except OSError:
            return None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return read_holder(f.read())
                except ValueError:
                    return {}
            fcntl.flock(f, fcntl.LOCK_UN)
        return None

    def failure(self, key: str) -> dict[str, Any] | None:
        p = self.partial_dir(key) / FAILED_FILE
        return read_json(p) if p.is_file() else None

    def claim(self, key: str) -> Claim | None:
        """Claim a step for this process (None: another process holds it, or it is done)."""
        lock = self.lock_path(key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if self.is_done(key):  # finished while we waited for the lock
                os.close(fd)
                return None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
            part = self.partial_dir(key)
            part.mkdir(parents=True, exist_ok=True)
            (part / FAILED_FILE).unlink(missing_ok=True)
        except BaseException:  # a full disk: a worker that lives on must not keep the lock
            os.close(fd)
            raise
        return Claim(key, part, fd)

    def fail(self, claim: Claim, reason: str, detail: str = "") -> None:
        """Record why the step failed (best effort: a full disk cannot take the record, the
        caller still has the reason) and release the claim."""
        try:
            write_json(claim.dir / FAILED_FILE, {"reason": reason, "detail": detail})
        except OSError:
            pass
        finally:
            claim.release()

    def finish(self, claim: Claim, record: dict[str, Any]) -> Path:
        """Record the step's files (sizes and sha256) and move its partial dir into place. The
        claim is released however this ends; on an error the step stays unfinished."""
        part = claim.dir
        try:
            (part / PROGRESS_FILE).unlink(missing_ok=True)
            write_json(part / STEP_FILE, {**record, "files": manifest(part)})
            final = self.final_dir(claim.key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # finished by a process that did not hold the claim; keep theirs
                shutil.rmtree(part, ignore_errors=True)
            else:
                os.replace(part, final)
        finally:
            claim.release()
        return final

    def problems(self, key: str, full: bool = True) -> list[str]:
        """What is wrong with a finished step (empty: intact): its record is schema-checked
        (:mod:`.checks`) before any file it names is looked at, then its files against their sums."""
        final = self.final_dir(key)
        try:
            if not stat.S_ISREG((final / STEP_FILE).lstat().st_mode):
                return [f"{STEP_FILE} is not a regular file"]
            record = read_json(final / STEP_FILE)
        except (OSError, ValueError) as e:
            return [f"{STEP_FILE} is unreadable ({type(e).__name__})"]
        return record_problems(record) or problems(final, record["files"], full)

    def check(self, key: str, full: bool = True) -> None:
        """Raise a one-line StoreError when a finished step's files do not match their sums."""
        found = self.problems(key, full)
        if found:
            raise CorruptStep(key, found)

    def quarantine(self, key: str) -> dict[str, Any]:
        """Move a finished step aside (to ``.corrupt``) so it runs again; returns its old record."""
        final = self.final_dir(key)
        try:
            old = read_json(final / STEP_FILE)
        except (OSError, ValueError):
            old = {}
        if not isinstance(old, dict):
            old = {}
        kind, leaf = key.split("/", 1)
        dest = self._inside(self.root / "steps" / kind / ".corrupt" / f"{leaf}-{time.time_ns()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, dest)
        return old


class Claim:
    """A held step claim: the partial directory to write in and the locked file descriptor."""

    def __init__(self, key: str, part: Path, fd: int) -> None:
        self.key, self.dir, self._fd = key, part, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


class CorruptStep(StoreError):
    """A finished step's files no longer match the sums recorded when it finished."""

    def __init__(self, key: str, found: list[str]) -> None:
        self.key, self.found = key, found
        more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
        super().__init__(f"step {key} is corrupt: {'; '.join(found[:2])}{more}. "
                         "`proxyscale run` re-runs it (and what depends on it, if it changes)")


def read_holder(text: str) -> dict[str, Any]:
    pid, host, since = text.split()
    return {"pid": int(pid), "host": host, "since": float(since)}


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` of this host still runs. A killed process that its parent has not
    reaped yet (a zombie) answers signal 0 but holds nothing, so on Linux its /proc state is read too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc/self/stat").exists()  # gone meanwhile (Linux), or no /proc: trust signal 0
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])

"""Where everything lives in a run store. The only code that builds store paths.

```
<root>/steps/<kind>/<name>-<hash>/            finished step (its existence means "done")
<root>/steps/<kind>/.partial/<name>-<hash>/   step in progress or failed (kept for resume)
<root>/<study>/                                per-study outputs (report, plan)
<root>/store.json                              the store's format version
```
A step runs inside its partial directory and is renamed into place when it finishes, so a
finished directory is never half-written. A partial directory holds ``_lock.json`` (who runs it)
and, if it failed, ``_failed.json`` (why).
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any, Literal

from ..errors import StoreError
from .io import FORMAT_VERSION, read_json, write_json

StepState = Literal["done", "running", "failed", "pending"]
STEP_FILE = "_step.json"
LOCK_FILE = "_lock.json"
FAILED_FILE = "_failed.json"
STORE_FILE = "store.json"


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
            found = read_json(marker).get("format_version")
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

    def study_dir(self, study: str) -> Path:
        if not study or study in (".", "..") or "/" in study or "\\" in study:
            raise StoreError(f"study name '{study}' cannot name a folder in the store; use letters, digits, '-', '_'")
        return self._inside(self.root / study)

    def is_done(self, key: str) -> bool:
        return (self.final_dir(key) / STEP_FILE).is_file()

    def state(self, key: str) -> StepState:
        """done / running (a live process holds it) / failed / pending."""
        if self.is_done(key):
            return "done"
        part = self.partial_dir(key)
        if (part / FAILED_FILE).is_file():
            return "failed"
        if lock_alive(part / LOCK_FILE):
            return "running"
        return "pending"

    def failure(self, key: str) -> dict[str, Any] | None:
        p = self.partial_dir(key) / FAILED_FILE
        return read_json(p) if p.is_file() else None

    def begin(self, key: str) -> Path:
        """Claim a step: create (or take over) its partial dir and write our lock."""
        part = self.partial_dir(key)
        part.mkdir(parents=True, exist_ok=True)
        (part / FAILED_FILE).unlink(missing_ok=True)
        write_json(part / LOCK_FILE, {"pid": os.getpid(), "host": socket.gethostname()})
        return part

    def fail(self, key: str, reason: str, detail: str = "") -> None:
        part = self.partial_dir(key)
        part.mkdir(parents=True, exist_ok=True)
        write_json(part / FAILED_FILE, {"reason": reason, "detail": detail})
        (part / LOCK_FILE).unlink(missing_ok=True)

    def finish(self, key: str, record: dict[str, Any]) -> Path:
        """Write the step record and move the partial dir into place (atomic rename)."""
        part = self.partial_dir(key)
        (part / LOCK_FILE).unlink(missing_ok=True)
        write_json(part / STEP_FILE, record)
        final = self.final_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # another worker finished it first; keep theirs
            shutil.rmtree(part, ignore_errors=True)
        else:
            os.replace(part, final)
        return final


def lock_alive(lock: Path) -> bool:
    """True if ``lock`` names a process that is still alive on this host."""
    if not lock.is_file():
        return False
    try:
        info = read_json(lock)
    except (OSError, ValueError):
        return False
    if info.get("host") != socket.gethostname():
        return True  # cannot check another host's processes: assume alive
    try:
        return pid_alive(int(info["pid"]))
    except (ValueError, KeyError):
        return False


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

"""Steps that break their own worker process: killed, a full disk, a leaked claim (importable by
Ray workers through PYTHONPATH)."""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from _fake_steps import add_step


def die_then_add(ctx) -> None:
    """SIGKILL this process on the first run (marker file absent), or on every run with ``always``;
    otherwise do what ``add_step`` does. Every start is logged as ``<name>:start <pid>``."""
    cfg = ctx.config
    with open(cfg["log"], "a") as f:
        f.write(f"{ctx.name}:start {os.getpid()}\n")
    marker = Path(cfg["marker"])
    if cfg.get("always") or not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    add_step(ctx)


_leaked: list = []  # claims a step keeps open on purpose (a worker that leaks a lock)


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk(ctx) -> None:
    """From now on every store write of this worker process fails with ENOSPC (the store's disk
    is full): the record files (``_step.json``, ``_failed.json``) and the claim's lock file.
    ``when: step`` then fails the step itself; ``when: finish`` returns (its output written), so
    recording it fails."""
    from proxyscale.store import io, write_json

    write_json(ctx.out / "value.json", {"value": ctx.config["value"]})
    io.write_bytes = _disk_full
    os.pwrite = _disk_full
    if ctx.config["when"] == "step":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.out / "more.bin"))


def leak_claim(ctx) -> None:
    """Claim another step (``victim``, a store key) and keep its lock open after returning."""
    from proxyscale.store import Store, write_json

    _leaked.append(Store(ctx.config["store"]).claim(ctx.config["victim"]))
    write_json(ctx.out / "value.json", {"value": 1})


def stacked(ctxs) -> None:
    """A batch function that runs its members "at once": every member is logged as started
    (``<name>:stacked <pid>``), then a member configured to die kills the process (as
    :func:`die_then_add` decides) before any member is written; otherwise each is added."""
    for ctx in ctxs:
        with open(ctx.config["log"], "a") as f:
            f.write(f"{ctx.name}:stacked {os.getpid()}\n")
    for ctx in ctxs:
        cfg = ctx.config
        if cfg.get("marker") and (cfg.get("always") or not Path(cfg["marker"]).exists()):
            Path(cfg["marker"]).touch()
            os.kill(os.getpid(), signal.SIGKILL)
    for ctx in ctxs:
        add_step(ctx)

"""A step that kills its own worker process (importable by Ray workers through PYTHONPATH)."""
from __future__ import annotations

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

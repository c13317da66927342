"""Step functions for executor tests (importable by spawned workers through sys.path)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from proxyscale.store import read_json, write_json


def add_step(ctx) -> None:
    cfg = ctx.config
    with open(cfg["log"], "a") as f:  # records every execution, to count re-runs
        f.write(f"{ctx.name} {os.getpid()}\n")
    time.sleep(cfg.get("sleep", 0.0))
    _maybe_die(cfg)
    if cfg.get("fail"):
        raise ValueError(f"planned failure in {ctx.name}")
    bias = int(Path(cfg["bias_file"]).read_text()) if cfg.get("bias_file") else 0
    total = bias + cfg["value"] + sum(read_json(p / "value.json")["value"] for p in ctx.inputs.values())
    write_json(ctx.out / "value.json", {"value": total})


def _maybe_die(cfg) -> None:
    """``die: once`` kills this worker the first time (a marker file remembers), ``always`` every time."""
    how = cfg.get("die")
    if how == "always" or (how == "once" and not os.path.exists(cfg["marker"])):
        if how == "once":
            Path(cfg["marker"]).write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)


def slow_batch(ctxs) -> None:
    """A batch function: the whole batch sleeps once (its config's ``batch_sleep``), then each
    member is added, as a stacked step trains every member in one shared wall time."""
    time.sleep(ctxs[0].config["batch_sleep"])
    for ctx in ctxs:
        add_step(ctx)

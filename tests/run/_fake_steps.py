"""Step functions for executor tests (importable by spawned workers through sys.path)."""
from __future__ import annotations

import os
import time

from proxyscale.store import read_json, write_json


def add_step(ctx) -> None:
    cfg = ctx.config
    with open(cfg["log"], "a") as f:  # records every execution, to count re-runs
        f.write(f"{ctx.name} {os.getpid()}\n")
    time.sleep(cfg.get("sleep", 0.0))
    if cfg.get("fail"):
        raise ValueError(f"planned failure in {ctx.name}")
    total = cfg["value"] + sum(read_json(p / "value.json")["value"] for p in ctx.inputs.values())
    write_json(ctx.out / "value.json", {"value": total})

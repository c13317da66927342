"""Runs steps inside a worker process (any backend). ``python -m proxyscale.run.worker FILE``
runs the payload in FILE and writes the results next to it (the Slurm backend uses this)."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import ProxyscaleError
from ..store import Store
from .step import StepContext, resolve

__all__ = ["StepContext", "execute", "main", "set_threads"]


def _context(p: dict[str, Any], store: Store, out: Path, threads: int) -> StepContext:
    ctype = resolve(p["config_type"]) if p.get("config_type") else None
    inputs = {role: store.final_dir(dep) for role, dep in p["inputs"].items()}
    return StepContext(p["key"], p["kind"], p["name"], p["config"], inputs, out, threads, ctype)


def set_threads(threads: int) -> None:
    """Pin BLAS/torch threads so workers sharing the cores do not oversubscribe them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _error_reason(e: BaseException) -> str:
    return str(e) if isinstance(e, ProxyscaleError) else f"{type(e).__name__}: {e}"


def execute(payloads: list[dict[str, Any]], store_root: str, threads: int = 1) -> list[dict[str, Any]]:
    """Run steps (a batch of the same kind when several); returns one result dict per payload."""
    set_threads(threads)
    store = Store(store_root)
    results: dict[str, dict[str, Any]] = {}
    ctxs: list[StepContext] = []
    for p in payloads:
        key = p["key"]
        if store.is_done(key):
            results[key] = {"key": key, "state": "done", "skipped": True}
            continue
        if store.state(key) == "running":
            results[key] = {"key": key, "state": "busy"}
            continue
        ctxs.append(_context(p, store, store.begin(key), threads))
    fns = {p["key"]: p["fn"] for p in payloads}
    batch_fn = payloads[0].get("batch_fn")
    if len(ctxs) > 1 and batch_fn:
        try:
            t0 = time.time()
            resolve(batch_fn)(ctxs)
            for c in ctxs:
                results[c.key] = _finish(store, c, time.time() - t0)
            ctxs = []
        except Exception:  # noqa: BLE001 - fall back to one at a time so one bad model fails alone
            traceback.print_exc()
    for c in ctxs:
        results[c.key] = _run_one(store, c, fns[c.key])
    return [results[p["key"]] for p in payloads]


def _run_one(store: Store, c: StepContext, fn: str) -> dict[str, Any]:
    t0 = time.time()
    try:
        if not fn:
            raise ProxyscaleError(f"step {c.key} has no function; add it to a plan (Plan.add binds its kind)")
        resolve(fn)(c)
    except Exception as e:  # noqa: BLE001 - every failure is recorded, never swallowed
        reason = _error_reason(e)
        store.fail(c.key, reason, traceback.format_exc())
        return {"key": c.key, "state": "failed", "reason": reason}
    return _finish(store, c, time.time() - t0)


def _finish(store: Store, c: StepContext, wall: float) -> dict[str, Any]:
    store.finish(c.key, {"kind": c.kind, "name": c.name, "config": c.config,
                         "inputs": {k: str(v.relative_to(store.root)) for k, v in c.inputs.items()},
                         "wall_s": wall, "format_version": 1})
    return {"key": c.key, "state": "done", "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0])
    job = json.loads(path.read_text())
    res = execute(job["payloads"], job["store"], int(job.get("threads", 1)))
    path.with_suffix(".result.json").write_text(json.dumps(res))
    return 0 if all(r["state"] in ("done", "busy") for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())

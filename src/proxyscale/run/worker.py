"""Runs steps inside a worker process (any backend). ``python -m proxyscale.run.worker FILE``
runs the payload in FILE and writes the results next to it (the Slurm backend uses this)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import ProcessDied, ProxyscaleError
from ..store import Claim, CorruptStep, Store, write_json, write_text
from ..store.checks import RUNNING_FILE
from ..store.faults import as_store_error, tree_bytes
from ..store.layout import CALIBRATION_ENV
from .step import StepContext, resolve

__all__ = ["StepContext", "execute", "main", "mark_when_terminated", "set_threads"]

TERMINATED = "_terminated"  # written into a running step's partial dir when its worker is told to stop
_running: set[Path] = set()


def mark_when_terminated() -> None:
    """On SIGTERM (a pool stopping its other workers after one died), mark the steps this worker
    was running, so the driver can tell them from the step whose worker died, then exit."""
    def on_term(_sig: int, _frame: Any) -> None:
        for part in list(_running):
            try:
                (part / TERMINATED).touch()
            except OSError:
                pass
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)


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


def _error_reason(e: BaseException, store: Store | None = None, part: Path | None = None) -> str:
    """One line: a ProxyscaleError's message; a full or read-only store named with what to do."""
    if isinstance(e, OSError) and store is not None:
        err = as_store_error(e, store.root, tree_bytes(part) if part is not None else None)
        if err is not None:
            return str(err)
    return str(e) if isinstance(e, ProxyscaleError) else f"{type(e).__name__}: {e}"


def execute(payloads: list[dict[str, Any]], store_root: str, threads: int = 1) -> list[dict[str, Any]]:
    """Run steps (a batch of the same kind when several); returns one result dict per payload.

    Each step is claimed first (a step another process holds comes back ``busy``), and the files
    of its inputs are checked against their sums (a corrupt input comes back ``corrupt``, naming
    it, so the driver can re-run it)."""
    set_threads(threads)
    store = Store(store_root)
    before = os.environ.get(CALIBRATION_ENV)
    os.environ[CALIBRATION_ENV] = str(store.calibration_dir())  # one measured precision per shape and store
    try:
        return _execute(payloads, store, threads)
    finally:  # a process that runs steps of several stores (tests, in-process runs) must not mix them
        if before is None:
            os.environ.pop(CALIBRATION_ENV, None)
        else:
            os.environ[CALIBRATION_ENV] = before


def _mark_running(work: list[tuple[StepContext, Claim, dict[str, Any]]]) -> None:
    """Say, in each step's partial dir, which submission (the driver's ``run`` token) started its
    function and how many steps started with it: if the worker dies, the driver charges only the
    steps that were running (see ``executor._Run._verdict``)."""
    for _c, claim, p in work:
        write_json(claim.dir / RUNNING_FILE, {"run": p.get("run"), "together": len(work)})


def _execute(payloads: list[dict[str, Any]], store: Store, threads: int) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    work: list[tuple[StepContext, Claim, dict[str, Any]]] = []
    for p in payloads:
        key = p["key"]
        bad = _corrupt_input(store, p)
        if bad is not None:
            results[key] = bad
            continue
        try:
            claim = store.claim(key)
        except OSError as e:  # the lock or partial directory cannot be written (a full disk)
            results[key] = {"key": key, "state": "failed", "reason": _error_reason(e, store)}
            continue
        if claim is None:
            results[key] = {"key": key, "state": "done", "skipped": True} if store.is_done(key) \
                else {"key": key, "state": "busy"}
            continue
        (claim.dir / TERMINATED).unlink(missing_ok=True)
        _running.add(claim.dir)
        work.append((_context(p, store, claim.dir, threads), claim, dict(p)))
    try:
        if len(work) > 1 and payloads[0].get("batch_fn"):
            _mark_running(work)  # a stacked batch: every member runs at once
            work = _run_batch(store, work, resolve(payloads[0]["batch_fn"]), results)
        for c, claim, p in work:
            results[c.key] = _run_one(store, c, claim, p)
    finally:
        for c, claim, _p in work:
            claim.release()
            _running.discard(c.out)
    return [results[p["key"]] for p in payloads]


def _corrupt_input(store: Store, p: dict[str, Any]) -> dict[str, Any] | None:
    for dep in p["inputs"].values():
        try:
            store.check(dep)
        except CorruptStep as e:
            return {"key": p["key"], "state": "corrupt", "input": dep, "reason": str(e)}
    return None


def _run_batch(store: Store, work: list, batch_fn: Any, results: dict[str, dict[str, Any]]) -> list:
    """Run a batch together; on failure return it for one-at-a-time runs (so one bad model fails
    alone). The batch's error is kept with each step in case they fail again."""
    t0 = time.time()
    try:
        batch_fn([c for c, _, _ in work])
    except Exception as e:  # noqa: BLE001 - retried one at a time below, the cause is recorded there
        for c, _claim, p in work:
            p["batch_error"] = _error_reason(e, store, c.out)
        return work
    wall = time.time() - t0
    for c, claim, p in work:
        results[c.key] = _finish(store, c, claim, p, wall, group=len(work))
    return []


def _run_one(store: Store, c: StepContext, claim: Claim, p: dict[str, Any]) -> dict[str, Any]:
    _mark_running([(c, claim, p)])
    t0 = time.time()
    try:
        if not p.get("fn"):
            raise ProxyscaleError(f"step {c.key} has no function; add it to a plan (Plan.add binds its kind)")
        resolve(p["fn"])(c)
    except ProcessDied as e:  # a rank it started was killed: as if this process died (the driver retries)
        return {"key": c.key, "state": "crashed", "reason": str(e), "detail": traceback.format_exc()}
    except Exception as e:  # noqa: BLE001 - every failure is recorded, never swallowed
        return _failed(store, c, claim, e)
    return _finish(store, c, claim, p, time.time() - t0, group=1)


def _failed(store: Store, c: StepContext, claim: Claim, e: BaseException) -> dict[str, Any]:
    reason = _error_reason(e, store, c.out)
    store.fail(claim, reason, traceback.format_exc())  # releases the claim, even when the disk is full
    return {"key": c.key, "state": "failed", "reason": reason}


def _finish(store: Store, c: StepContext, claim: Claim, p: dict[str, Any], wall: float,
            group: int) -> dict[str, Any]:
    try:
        return _record(store, c, claim, p, wall, group)
    except OSError as e:  # the record or the rename failed (a full disk): the step stays unfinished
        return _failed(store, c, claim, e)


def _record(store: Store, c: StepContext, claim: Claim, p: dict[str, Any], wall: float,
            group: int) -> dict[str, Any]:
    (claim.dir / RUNNING_FILE).unlink(missing_ok=True)
    final = store.finish(claim, {
        "kind": c.kind, "name": c.name, "config": c.config,
        "inputs": {k: str(v.relative_to(store.root)) for k, v in c.inputs.items()},
        # wall_s is this step's share of its batch's time, so a store's records add up to the run's
        # time (within the workers' overlap); batch_wall_s is the whole batch's
        "wall_s": wall / group, "batch_wall_s": wall, "group_size": group, "threads": c.threads,
        "attempt": p.get("attempt", 1),
        **({"batch_error": p["batch_error"]} if "batch_error" in p else {}), "format_version": 1})
    files = store.record(c.key).get("files", {}) if final.exists() else {}
    return {"key": c.key, "state": "done", "wall_s": wall / group, "files": files}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0])
    job = json.loads(path.read_text())
    res = execute(job["payloads"], job["store"], int(job.get("threads", 1)))
    write_text(path.with_suffix(".result.json"), json.dumps(res))  # atomic: the driver may be polling
    return 0 if all(r["state"] in ("done", "busy") for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())

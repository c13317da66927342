"""Runs steps inside a worker process (any backend). ``python -m proxyscale.run.worker FILE``
runs the payload in FILE and writes the results next to it (the Slurm backend uses this)."""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ProxyscaleError
from ..store import Store

# kind -> "module:function"; functions take one StepContext. Batch functions take a list.
STEP_FUNCTIONS: dict[str, str] = {
    "corpus": "proxyscale.run.steps_data:corpus_step",
    "tokenizer": "proxyscale.run.steps_data:tokenizer_step",
    "shard": "proxyscale.run.steps_data:shard_step",
    "testset": "proxyscale.run.steps_data:testset_step",
    "train": "proxyscale.run.steps_lm:train_step",
    "eval": "proxyscale.run.steps_lm:eval_step",
    "ngram": "proxyscale.run.steps_lm:ngram_step",
    "analyze": "proxyscale.run.steps_lm:analyze_step",
    **{k: f"proxyscale.run.steps_attr:{k}_step" for k in (
        "attr_train", "attr_trak", "attr_subsets", "attr_retrain", "attr_cf_sets", "attr_cf_train", "attr_analyze")},
    **{k: f"proxyscale.run.attribution_lm:{k}_step" for k in (
        "attr_lm_docs", "attr_lm_train", "attr_lm_trak", "attr_lm_retrain")},
}
BATCH_FUNCTIONS: dict[str, str] = {"train": "proxyscale.run.steps_lm:train_batch"}


@dataclass
class StepContext:
    """What a step function gets: its config, its inputs' finished directories, and where to write."""

    key: str
    kind: str
    name: str
    config: dict[str, Any]
    inputs: dict[str, Path]
    out: Path
    threads: int = 1
    fn: str | None = None


def _resolve(ref: str) -> Callable:
    mod, fn = ref.split(":")
    return getattr(importlib.import_module(mod), fn)


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
        out = store.begin(key)
        inputs = {role: store.final_dir(dep) for role, dep in p["inputs"].items()}
        ctxs.append(StepContext(key, p["kind"], p["name"], p["config"], inputs, out, threads, p.get("fn")))
    if len(ctxs) > 1 and ctxs[0].kind in BATCH_FUNCTIONS and ctxs[0].fn is None:
        try:
            t0 = time.time()
            _resolve(BATCH_FUNCTIONS[ctxs[0].kind])(ctxs)
            for c in ctxs:
                results[c.key] = _finish(store, c, time.time() - t0)
            ctxs = []
        except Exception:  # noqa: BLE001 - fall back to one at a time so one bad model fails alone
            traceback.print_exc()
    for c in ctxs:
        results[c.key] = _run_one(store, c)
    return [results[p["key"]] for p in payloads]


def _run_one(store: Store, c: StepContext) -> dict[str, Any]:
    t0 = time.time()
    try:
        _resolve(c.fn or STEP_FUNCTIONS[c.kind])(c)
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

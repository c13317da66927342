"""Runs a plan: ready steps go to a backend (same-shape small models batched together),
finished steps are skipped, failures are recorded and stop only what depends on them."""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from ..errors import ConfigError, StoreError
from ..store import Store
from .backends import Backend
from .plan import Plan, Step


@dataclass(frozen=True)
class ExecutorSpec:
    """Where and how a study's steps run (the ``executor`` section of every study spec)."""

    backend: Literal["local", "ray", "slurm"] = "local"
    workers: int = 0  # 0 = one per core
    max_batch: int = 8  # how many same-shape small models one worker trains at once
    batch_below_params: int = 500_000
    ray_address: Optional[str] = None
    slurm_args: tuple[str, ...] = ()
    retries: int = 2  # ray: how often a batch whose worker process died runs again

    def __post_init__(self) -> None:
        if self.workers < 0 or self.max_batch < 1 or self.batch_below_params < 0 or self.retries < 0:
            raise ConfigError("executor: workers ≥ 0 (0: one per core), max_batch ≥ 1, batch_below_params ≥ 0 "
                              "and retries ≥ 0")


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    def raise_for_failures(self) -> None:
        if self.failed:
            lines = "; ".join(f"{k}: {r}" for k, r in list(self.failed.items())[:3])
            more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
            raise StoreError(f"{len(self.failed)} step(s) failed{more}: {lines}. "
                             "Fix the cause and re-run: finished steps are kept; `proxyscale status` lists them")


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _batches(ready: list[Step], max_batch: int, kind_rank: dict[str, int]) -> list[list[Step]]:
    groups: dict[str, list[Step]] = {}
    out: list[list[Step]] = []
    for s in ready:
        if s.batch_key is None:
            out.append([s])
        else:
            groups.setdefault(s.batch_key, []).append(s)
    for g in groups.values():
        out += [g[i:i + max_batch] for i in range(0, len(g), max_batch)]
    # upstream kinds first (data preparation unblocks the most work), then the longest batches
    return sorted(out, key=lambda b: (kind_rank[b[0].kind], -sum(s.cost for s in b)))


class _Progress:
    """A tqdm bar weighted by step cost (so its ETA reflects training FLOPs, not step counts)."""

    def __init__(self, plan: Plan, todo: set[str], enabled: bool) -> None:
        self.bar = None
        if enabled and todo:
            from tqdm import tqdm

            total = sum(plan[k].cost for k in todo)
            self.bar = tqdm(total=total, unit="", unit_scale=True, desc=f"{len(todo)} steps",
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def update(self, step: Step, state: str, n_done: int, n_todo: int) -> None:
        if self.bar is not None:
            self.bar.update(step.cost)
            self.bar.set_postfix_str(f"{n_done}/{n_todo} {step.kind}/{step.name} {state}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_plan(plan: Plan, store: Store, backend: Backend, *, max_batch: int = 8, threads: int | None = None,
             progress: bool = True, on_result: Callable[[dict[str, Any]], None] | None = None) -> RunSummary:
    """Execute every unfinished step of ``plan`` in dependency order."""
    summary = RunSummary()
    todo = {s.key for s in plan if not store.is_done(s.key)}
    summary.skipped = [s.key for s in plan if s.key not in todo]
    threads = threads or max(1, default_workers() // backend.slots)
    bar = _Progress(plan, todo, progress)
    in_flight: dict[Future, list[Step]] = {}
    bad: set[str] = set()
    kind_rank: dict[str, int] = {}
    for s in plan:
        kind_rank.setdefault(s.kind, len(kind_rank))
    try:
        while todo or in_flight:
            busy = {s.key for b in in_flight.values() for s in b}
            ready = [plan[k] for k in todo if k not in busy
                     and all(store.is_done(d) for d in plan[k].inputs.values())]
            ready.sort(key=lambda s: list(plan).index(s))
            for batch in _batches(ready, max_batch, kind_rank):
                if len(in_flight) >= backend.slots:
                    break
                fut = backend.submit([s.to_payload() for s in batch], str(store.root), threads)
                in_flight[fut] = batch
            if not in_flight:
                break  # nothing runnable: the rest is blocked behind failures
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in finished:
                batch = in_flight.pop(fut)
                for step, res in zip(batch, _results_of(fut, batch)):
                    _record(step, res, summary, todo, bad)
                    bar.update(step, res["state"], len(summary.done), len(summary.done) + len(todo))
                    if on_result:
                        on_result(res)
            blocked = plan.downstream(bad) & todo
            for k in blocked:
                todo.discard(k)
                summary.blocked.append(k)
    except BaseException:
        backend.shutdown(cancel=True)
        raise
    finally:
        bar.close()
    return summary


def _record(step: Step, res: dict[str, Any], summary: RunSummary, todo: set[str], bad: set[str]) -> None:
    """Book one step's result: done, busy (another process holds it) or failed."""
    todo.discard(step.key)
    if res["state"] == "done":
        summary.done.append(step.key)
    elif res["state"] == "busy":
        summary.blocked.append(step.key)
        bad.add(step.key)
    else:
        summary.failed[step.key] = res.get("reason", "unknown error")
        bad.add(step.key)


def _results_of(fut: Future, batch: list[Step]) -> list[dict[str, Any]]:
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - a crashed worker fails its batch, not the study
        return [{"key": s.key, "state": "failed", "reason": f"worker crashed: {type(e).__name__}: {e}"} for s in batch]

"""Runs a plan: ready steps go to a backend (same-shape small models batched together),
finished steps are skipped, failures are recorded and stop only what depends on them."""
from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from ..errors import ConfigError, Interrupted, StoreError
from ..store import Store, read_json
from ..store.checks import RUNNING_FILE
from .backends import Backend
from .plan import Plan, Step
from .progress import Progress
from .worker import TERMINATED


@dataclass(frozen=True)
class ExecutorSpec:
    """Where and how a study's steps run (the ``executor`` section of every study spec)."""

    backend: Literal["local", "ray", "slurm"] = "local"
    workers: int = 0  # 0 = one per core
    max_batch: int = 8  # how many same-shape small models one worker trains at once
    batch_below_params: int = 500_000
    ray_address: Optional[str] = None
    slurm_args: tuple[str, ...] = ()
    retries: int = 2  # how often a step whose process died (its worker, or a rank it started) runs again

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
    retried: dict[str, int] = field(default_factory=dict)  # step -> attempts after its worker died
    repaired: dict[str, str] = field(default_factory=dict)  # corrupt finished step -> what was wrong
    waited: list[str] = field(default_factory=list)  # steps another process held for a while

    def say_what_was_mended(self) -> None:
        """One stderr line each for damaged steps that were re-run and steps retried after a worker died."""
        for key, why in self.repaired.items():
            print(f"re-ran {key}: {why}", file=sys.stderr)
        for key, n in self.retried.items():
            print(f"retried {key} {n} time(s): its worker died", file=sys.stderr)

    def raise_for_failures(self) -> None:
        if self.failed:
            lines = "; ".join(f"{k}: {r}" for k, r in list(self.failed.items())[:3])
            more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
            raise StoreError(f"{len(self.failed)} step(s) failed{more}: {lines}. "
                             "Fix the cause and re-run: finished steps are kept; `proxyscale status` lists them")


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota if any."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_workers() -> int:
    return available_cores()


# Steps below this many FLOPs run on one thread: more threads cost more in hand-offs than they
# save on such small matrices, and one thread each lets several small steps share the cores.
# Since a step's thread count is fixed (its bits depend on it), a step above this runs alone on
# every core: at 1e11 the demo's reference models (2.5e11 FLOPs, d_model 32) trained one at a
# time on 2 threads, 12-22 s each (docs/LOG.md, 2026-12-03), where stacks of 8 at 1 thread, two
# side by side, took 77-82 s (about 10 s a model per worker; docs/LOG.md, 2026-12-02); hence 1e12.
SMALL_STEP_FLOPS = 1e12


def step_threads(cost: float, cores: int) -> int:
    """Threads for a step of ``cost`` FLOPs: one under ``SMALL_STEP_FLOPS``, else every core.
    Decided by the step alone, never by what runs beside it: the thread count changes how torch
    splits its reductions, hence a step's bits. The executor admits batches only while their
    threads fit the cores, so a step that wants every core waits until they are free."""
    return 1 if cost < SMALL_STEP_FLOPS else max(1, cores)


def threads_for(batch: list[Step], cores: int) -> int:
    """Threads for a batch: what its costliest step gets alone, where a member of a stack the
    plan made counts as its whole stack (``stack_size`` models trained as one, whatever part of
    the stack a resumed batch still holds, so a member's threads never depend on that), and at
    least one per data-parallel rank (a step of ``ranks`` R starts R processes, which share its
    threads)."""
    return max(step_threads(max(s.cost * _stack_size(s) for s in batch), cores),
               max(getattr(s, "ranks", 1) for s in batch))


def _stack_size(step: Step) -> int:
    c = step.config
    return int(c.get("stack_size", 1)) if c.get("stacking") in ("stacked", "auto") else 1


def stack_sizes(n: int, max_batch: int, slots: int) -> list[int]:
    """Sizes of the stacks a group of ``n`` same-shape models is trained in: at most
    ``max_batch`` each, sized for ``slots`` workers (the plan calls it with the machine's cores).

    With one slot, the fewest stacks (the most stacking). With several, the number of stacks
    whose makespan (rounds of ``slots`` stacks × the largest stack) is smallest, fewest on a tie,
    and sizes as even as possible. For example, 20 models with ``max_batch`` 8 on 2 cores are
    4 stacks of 5 (two rounds of 5) rather than 8, 8 and 4 (a round of 8, then one of 4 beside
    an idle worker). A function of its arguments only, never of what happens to be ready: a
    stacked model's bits may depend on its stack (see ``studies/fragments/lm_ladder.py``).
    """
    fewest = -(-n // max_batch)
    if slots > 1:
        fewest = min(range(fewest, n + 1), key=lambda k: (-(-k // slots) * -(-n // k), k))
    size, extra = divmod(n, fewest)
    return [size + (j < extra) for j in range(fewest)]


def _split(group: list[Step], max_batch: int) -> list[list[Step]]:
    """A group of steps with one batch key (a stack the plan made) as one batch; ``max_batch``
    is an upper bound only (a group above it, which the LM ladder never makes, is cut into the
    fewest even batches). Never re-split by free workers: that would change the stack."""
    out, i = [], 0
    for k in stack_sizes(len(group), max_batch, 1):
        out.append(group[i:i + k])
        i += k
    return out


def _batches(ready: list[Step], max_batch: int, kind_rank: dict[str, int],
             solo: frozenset[str] | set[str] = frozenset()) -> list[list[Step]]:
    """Ready steps as batches: same-shape ones together (see :func:`_split`), the rest and the
    steps in ``solo`` (members of a stacked batch whose worker died) one per batch."""
    groups: dict[str, list[Step]] = {}
    out: list[list[Step]] = []
    for s in ready:
        if s.batch_key is None or s.key in solo:
            out.append([s])
        else:
            groups.setdefault(s.batch_key, []).append(s)
    for g in groups.values():
        out += _split(g, max_batch)
    # upstream kinds first (data preparation unblocks the most work), then the longest batches
    return sorted(out, key=lambda b: (kind_rank[b[0].kind], -sum(s.cost for s in b)))


def run_plan(plan: Plan, store: Store, backend: Backend, *, max_batch: int = 8, threads: int | None = None,
             progress: bool = True, on_result: Callable[[dict[str, Any]], None] | None = None,
             retries: int = 2, poll_s: float = 1.0) -> RunSummary:
    """Execute every unfinished step of ``plan`` in dependency order.

    Finished steps whose files changed since they finished are moved aside and run again (their
    finished dependents too, when the re-run's files differ). A batch whose worker dies is run
    again up to ``retries`` times. Steps another process is running are waited for."""
    return _Run(plan, store, backend, max_batch, threads, progress, on_result, retries, poll_s).go()


class _Run:
    def __init__(self, plan: Plan, store: Store, backend: Backend, max_batch: int, threads: int | None,
                 progress: bool, on_result: Callable | None, retries: int, poll_s: float) -> None:
        self.plan, self.store, self.backend = plan, store, backend
        self.max_batch, self.fixed_threads, self.on_result = max_batch, threads, on_result
        self.retries, self.poll_s, self.cores = retries, poll_s, available_cores()
        self.summary = RunSummary()
        self.old_files: dict[str, dict] = {}  # quarantined step -> the files it had
        self.attempts: dict[str, int] = {}
        self.stopped: dict[str, int] = {}  # step -> free re-runs after a worker died (it was not running)
        self.runs: dict[str, str] = {}  # step -> the token of its latest submission (the worker marks it)
        self.solo: set[str] = set()  # members of a stacked batch whose worker died: run one at a time
        self.bad: set[str] = set()
        self.todo = {s.key for s in plan if not store.is_done(s.key)}
        self._check_done((s.key for s in plan if s.key not in self.todo), full=True)
        self.summary.skipped = [s.key for s in plan if s.key not in self.todo]
        self.order = {s.key: i for i, s in enumerate(plan)}
        self.kind_rank: dict[str, int] = {}
        for s in plan:
            self.kind_rank.setdefault(s.kind, len(self.kind_rank))
        self.bar = Progress(plan, self.todo, progress)
        self.in_flight: dict[Future, list[Step]] = {}

    def _check_done(self, keys: Iterable[str], full: bool) -> None:
        """Move finished steps whose files no longer match aside, into the work to do (sha256 of
        every file with ``full``: about 2 s per GB here, see benchmarks/bench_checksums.py)."""
        for k in keys:
            found = self.store.problems(k, full=full)
            if found:
                self.old_files[k] = self.store.quarantine(k).get("files", {})
                self.summary.repaired[k] = "; ".join(found)
                self.todo.add(k)

    def go(self) -> RunSummary:
        try:
            while self.todo or self.in_flight:
                held = self._submit_ready()
                if not self.in_flight and not held:
                    self._block_downstream()
                    break  # nothing runnable: the rest is blocked behind failures
                finished, _ = wait(list(self.in_flight), timeout=self.poll_s, return_when=FIRST_COMPLETED)
                self.bar.tick([s for b in self.in_flight.values() for s in b], self.store)
                for fut in finished:
                    batch = self.in_flight.pop(fut)
                    for step, res in zip(batch, _results_of(fut, batch)):
                        self._book(step, res)
                self._block_downstream()
        except BaseException as e:
            self.backend.shutdown(cancel=True)  # stops the workers now (Ctrl-C, SIGTERM, a bug here)
            if isinstance(e, Interrupted):
                e.finished, e.total = sum(self.store.is_done(s.key) for s in self.plan), len(self.plan)
            raise
        finally:
            self.bar.close()
        return self.summary

    def _block_downstream(self) -> None:
        for k in sorted(self.plan.downstream(self.bad) & self.todo, key=self.order.__getitem__):
            self.todo.discard(k)
            self.summary.blocked.append(k)

    def _submit_ready(self) -> set[str]:
        """Submit what is ready; return the ready steps another process holds (to wait for)."""
        busy = {s.key for b in self.in_flight.values() for s in b}
        # what reads a step being re-run waits for it: the re-run may change its inputs
        rechecked = self.plan.downstream(set(self.old_files)) if self.old_files else set()
        ready, held = [], set()
        for k in sorted(self.todo - busy - rechecked, key=self.order.__getitem__):
            if not all(self.store.is_done(d) for d in self.plan[k].inputs.values()):
                continue
            who = self.store.holder(k)
            if who is None:
                ready.append(self.plan[k])
            elif not self._held_by_us(k, who):
                held.add(k)
        self._note_held(held)
        batches = _batches(self._whole_stacks(ready), self.max_batch, self.kind_rank, self.solo)
        used = sum(self._threads(b) for b in self.in_flight.values())
        for batch in batches:
            threads = self._threads(batch)
            # in order, no overtaking: a batch that wants every core runs as soon as they are free
            if len(self.in_flight) >= self.backend.slots or (self.in_flight and used + threads > self.cores):
                break
            used += threads
            run = uuid.uuid4().hex
            payloads = [{**s.to_payload(), "attempt": self.attempts.get(s.key, 0) + 1, "run": run} for s in batch]
            self.runs.update((s.key, run) for s in batch)
            self.in_flight[self.backend.submit(payloads, str(self.store.root), threads)] = batch
        return held

    def _held_by_us(self, key: str, who: dict[str, Any]) -> bool:
        """A step not in flight whose claim this driver or one of its own workers holds was left
        locked by a worker whose batch has returned: fail it rather than wait on ourselves."""
        pids = {os.getpid(), *getattr(self.backend, "worker_pids", lambda: ())()}
        if who.get("host") != socket.gethostname() or who.get("pid") not in pids:
            return False
        self.todo.discard(key)
        self.summary.failed[key] = (f"its claim is still held by this run's own worker (pid {who['pid']}) after "
                                    "that worker returned; re-run the command (its workers end with it)")
        self.bad.add(key)
        return True

    def _whole_stacks(self, ready: list[Step]) -> list[Step]:
        """``ready`` less the members of a stack (one batch key) whose other unfinished members
        will be ready later: a stack runs whole, as the plan made it. Not waited for: a member
        that needs a ready member's output (it leaves the work to do if an input failed), and
        anything when nothing else runs (so waiting can never stall the run)."""
        groups: dict[str, set[str]] = {}
        for s in ready:
            if s.batch_key is not None:
                groups.setdefault(s.batch_key, set()).add(s.key)
        after = {bk: self.plan.downstream(keys) for bk, keys in groups.items()}
        ready_keys = {s.key for s in ready}
        waiting = {bk for k in self.todo - ready_keys if (bk := self.plan[k].batch_key) in groups
                   and k not in after[bk]}
        whole = [s for s in ready if s.batch_key not in waiting]
        return whole if whole or self.in_flight else ready

    def _threads(self, batch: list[Step]) -> int:
        return self.fixed_threads or threads_for(batch, self.cores)

    def _note_held(self, held: set[str]) -> None:
        new = sorted(held - set(self.summary.waited))
        if new:
            self.summary.waited += new
            who = self.store.holder(new[0]) or {}
            self.bar.note(f"waiting for {len(new)} step(s) another process runs (e.g. {new[0]}, "
                          f"pid {who.get('pid', '?')} on {who.get('host', '?')})")

    def _book(self, step: Step, res: dict[str, Any]) -> None:
        """Book one step's result: done, busy (another process holds it: wait), corrupt input
        (re-run the input first), crashed (retry, bounded) or failed."""
        key, state = step.key, res["state"]
        if state == "crashed":
            state = self._verdict(key)
            if state == "done":  # it finished before its batch's worker died
                res = {"key": key, "state": "done", "files": self.store.record(key).get("files"), "skipped": True}
        if state == "done":
            self.todo.discard(key)
            self.summary.done.append(key)
            self._recheck_dependents(key, res.get("files"))
        elif state == "again":
            pass  # it was not running when its worker died: run again, free
        elif state in ("corrupt", "crashed") and self.attempts.get(key, 0) < self.retries:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if state == "corrupt":
                self._check_done([res["input"]], full=True)
            else:
                self.summary.retried[key] = self.attempts[key]
        elif state != "busy":
            self.todo.discard(key)
            tries = f" (after {self.attempts[key] + 1} attempts)" if self.attempts.get(key) else ""
            self.summary.failed[key] = res.get("reason", "unknown error") + tries
            self.bad.add(key)
            if state == "crashed":  # so `proxyscale status` shows it failed, with the reason
                claim = self.store.claim(key)
                if claim is not None:
                    self.store.fail(claim, self.summary.failed[key], res.get("detail", ""))
        if state in ("done", "failed", "crashed"):
            self.bar.update(step, state, len(self.summary.done), len(self.summary.done) + len(self.todo))
        if self.on_result:
            self.on_result(res)

    def _verdict(self, key: str) -> str:
        """What happened to a step whose batch's worker died: ``done`` (it had finished),
        ``crashed`` (it was running: charged to it) or ``again`` (run again free: it had not
        started, its worker was stopped by the pool because another died, or it ran stacked with
        others, which then run one at a time so that only the culprit is charged). At most 5 free
        re-runs per step."""
        part = self.store.partial_dir(key)
        deadline = time.time() + 30  # the pool fails the futures first, then stops the workers
        while self.store.holder(key) is not None and time.time() < deadline:
            time.sleep(0.05)
        if self.store.is_done(key):
            return "done"
        try:
            mark = read_json(part / RUNNING_FILE)
        except (OSError, ValueError):
            mark = {}
        ran = mark.get("run") == self.runs.get(key) and not (part / TERMINATED).is_file()
        if ran and mark.get("together", 1) > 1 and key not in self.solo:
            self.solo.add(key)
            ran = False
        if ran or self.stopped.get(key, 0) >= 5:
            return "crashed"
        (part / TERMINATED).unlink(missing_ok=True)
        self.stopped[key] = self.stopped.get(key, 0) + 1
        return "again"

    def _recheck_dependents(self, key: str, files: dict | None) -> None:
        """A re-run of a corrupt step that wrote other files than before invalidates what read it."""
        old = self.old_files.pop(key, None)
        if old is None or files is None or old == files:
            return
        for k in sorted(self.plan.downstream({key}) - {key}, key=self.order.__getitem__):
            if self.store.is_done(k):
                self.old_files[k] = self.store.quarantine(k).get("files", {})
                self.summary.repaired[k] = f"its input {key} was re-run with other results"
                self.todo.add(k)
                self.bar.grow(self.plan[k].cost)


def _results_of(fut: Future, batch: list[Step]) -> list[dict[str, Any]]:
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - a dead worker fails its batch, which is retried
        reason = f"the worker running it died ({type(e).__name__}: {e})".replace("\n", " ")
        return [{"key": s.key, "state": "crashed", "reason": reason} for s in batch]

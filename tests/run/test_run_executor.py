"""The executor: dependency order, no-op re-runs, failures, kill-and-resume, the local backends
(the Ray and Slurm backends: test_ray_backend.py, test_slurm_backend.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from proxyscale.errors import StoreError
from proxyscale.run.backends import make_backend
from proxyscale.run.executor import run_plan
from proxyscale.run.plan import Plan, Step
from proxyscale.store import Store, read_json

FN = "_fake_steps:add_step"


def diamond(log: Path, sleep: float = 0.0, fail: str | None = None) -> Plan:
    """a -> (b, c) -> d, plus an independent e."""
    plan = Plan()
    mk = lambda n, v, **inp: plan.add(Step("t", n, {"value": v, "log": str(log), "sleep": sleep,  # noqa: E731
                                                   "fail": n == fail}, inp, fn=FN))
    a = mk("a", 1)
    b = mk("b", 10, x=a)
    c = mk("c", 100, x=a)
    mk("d", 1000, x=b, y=c)
    mk("e", 5)
    return plan


def runs(log: Path) -> list[str]:
    return [ln.split()[0] for ln in log.read_text().splitlines()] if log.exists() else []


def value(store: Store, plan: Plan, name: str) -> int:
    step = next(s for s in plan if s.name == name)
    return read_json(store.final_dir(step.key) / "value.json")["value"]


def test_dependency_order_and_noop_rerun(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = diamond(log)
    s = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert sorted(s.done) == sorted(st.key for st in plan) and not s.failed
    assert value(store, plan, "d") == 1000 + (10 + 1) + (100 + 1)
    s2 = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert s2.done == [] and len(s2.skipped) == 5
    assert sorted(runs(log)) == ["a", "b", "c", "d", "e"]  # nothing ran twice


def test_changing_one_field_reruns_only_dependents(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    run_plan(diamond(log), store, make_backend("inline", 1), progress=False)
    plan2 = Plan()
    a = plan2.add(Step("t", "a", {"value": 1, "log": str(log), "sleep": 0.0, "fail": False}, fn=FN))
    b = plan2.add(Step("t", "b", {"value": 11, "log": str(log), "sleep": 0.0, "fail": False}, {"x": a}, fn=FN))
    c = plan2.add(Step("t", "c", {"value": 100, "log": str(log), "sleep": 0.0, "fail": False}, {"x": a}, fn=FN))
    plan2.add(Step("t", "d", {"value": 1000, "log": str(log), "sleep": 0.0, "fail": False}, {"x": b, "y": c}, fn=FN))
    s = run_plan(plan2, store, make_backend("inline", 1), progress=False)
    assert sorted(Path(k).name.split("-")[0] for k in s.done) == ["b", "d"]


def test_failure_is_recorded_and_blocks_only_dependents(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = diamond(log, fail="b")
    s = run_plan(plan, store, make_backend("inline", 1), progress=False)
    names = lambda keys: sorted(k.split("/")[1].split("-")[0] for k in keys)  # noqa: E731
    assert names(s.failed) == ["b"] and names(s.blocked) == ["d"] and names(s.done) == ["a", "c", "e"]
    b = next(st for st in plan if st.name == "b")
    assert store.state(b.key) == "failed"
    assert "planned failure" in store.failure(b.key)["reason"]
    assert not store.final_dir(b.key).exists()  # no half-written result
    with pytest.raises(StoreError, match="1 step"):
        s.raise_for_failures()


def test_local_process_pool_runs_in_parallel(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = diamond(log)
    backend = make_backend("local", 2)
    try:
        s = run_plan(plan, store, backend, progress=False)
    finally:
        backend.shutdown()
    assert len(s.done) == 5 and value(store, plan, "d") == 1112
    pids = {ln.split()[1] for ln in log.read_text().splitlines()}
    assert str(os.getpid()) not in pids  # ran in worker processes


RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_run_executor import diamond
    from proxyscale.run.backends import make_backend
    from proxyscale.run.executor import run_plan
    from proxyscale.store import Store
    from pathlib import Path
    be = make_backend("inline", 1)
    run_plan(diamond(Path({log!r}), sleep={sleep}), Store({store!r}), be, progress=False)
""")


def test_kill_midway_then_resume_finishes_without_redoing(tmp_path):
    log, root = tmp_path / "log", tmp_path / "store"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent), log=str(log), store=str(root), sleep=0.6))
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while len(runs(log)) < 3 and time.time() < deadline:  # a and one more finished, a third running
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(root)
    plan = diamond(log, sleep=0.6)
    done_before = {s.name for s in plan if store.is_done(s.key)}
    assert 1 <= len(done_before) < 5
    for s in plan:  # finished dirs are complete; unfinished ones have no final dir
        assert store.is_done(s.key) == store.final_dir(s.key).exists()
    summary = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert all(store.is_done(s.key) for s in plan) and not summary.failed
    executed = runs(log)
    for name in done_before:
        assert executed.count(name) == 1, f"{name} was redone"
    assert value(store, plan, "d") == 1112


def test_stack_sizes_spread_a_group_over_the_cores():
    from proxyscale.run.executor import stack_sizes

    assert stack_sizes(20, 8, 1) == [7, 7, 6]  # one core: fewest stacks
    assert stack_sizes(20, 8, 2) == [5, 5, 5, 5]  # two rounds of 5, not 8 + 8 then 4 beside an idle core
    assert stack_sizes(16, 8, 2) == [8, 8]
    assert stack_sizes(3, 8, 2) == [2, 1]
    assert stack_sizes(1, 8, 4) == [1]
    assert stack_sizes(9, 4, 3) == [3, 3, 3]
    assert all(max(stack_sizes(n, m, w)) <= m and sum(stack_sizes(n, m, w)) == n
               for n in range(1, 30) for m in (1, 3, 8) for w in (1, 2, 3))


def test_a_stack_gets_the_threads_of_its_whole_cost():
    """A member of a plan-made stack counts as its whole stack (stack_size × its cost), whatever
    part of the stack a resumed batch still holds; other steps count alone."""
    from proxyscale.run.executor import SMALL_STEP_FLOPS, threads_for

    one = SMALL_STEP_FLOPS / 4  # a run under the threshold: one thread alone
    member = {"stacking": "stacked", "stack_size": 8, "stack_index": 0}
    assert threads_for([Step(kind="train", name="a", config={}, cost=one)], 2) == 1
    assert threads_for([Step(kind="train", name="a", config=member, cost=one)], 2) == 2
    assert threads_for([Step(kind="train", name="a", config={**member, "stack_size": 3}, cost=one)], 2) == 1
    assert threads_for([Step(kind="train", name="a", config={**member, "stacking": "single"}, cost=one)], 2) == 1
    # a resumed batch holding one unfinished member of the stack of 8 keeps the stack's threads
    assert threads_for([Step(kind="train", name="b", config={**member, "stack_index": 5}, cost=one)], 2) == 2


def test_stacks_that_earn_every_core_are_planned_one_at_a_time(monkeypatch):
    """Stacks sized for 2 slots (20 models → 4 of 5) whose cost earns both threads run one after
    another, so the plan makes the fewest stacks instead (7, 7, 6); cheap ones stay 5 × 4."""
    import proxyscale.studies.fragments.measured as measured
    from proxyscale.run.executor import SMALL_STEP_FLOPS

    monkeypatch.setattr(measured, "available_cores", lambda: 2)
    members = [f"m{i}" for i in range(20)]

    def sizes(flops: float) -> list[int]:
        place = measured.plan_stacks(members, 8, flops)
        return [sum(1 for p in place.values() if p[0] == j) for j in range(1 + max(p[0] for p in place.values()))]

    assert sizes(SMALL_STEP_FLOPS / 100) == [5, 5, 5, 5]  # 5 × 1e10: one thread each, two side by side
    assert sizes(SMALL_STEP_FLOPS / 4) == [7, 7, 6]  # 5 × 2.5e11 ≥ 1e12: both threads per stack
    assert measured.plan_stacks(["only"], 8, SMALL_STEP_FLOPS) == {}


def test_a_group_is_one_batch_whatever_the_free_workers():
    """The plan fixes the stacks (one batch key each): the executor never re-splits one for
    idle workers; max_batch only caps a group above it (the fewest even batches)."""
    from proxyscale.run.executor import _batches

    def steps(prefix: str, n: int, key: str | None) -> list[Step]:
        return [Step(kind="k", name=f"{prefix}{i}", config={"i": i}, batch_key=key) for i in range(n)]

    def sizes(ready: list[Step], max_batch: int = 8) -> list[int]:
        out = _batches(ready, max_batch, {"k": 0})
        assert sorted(s.name for b in out for s in b) == sorted(s.name for s in ready)
        return sorted((len(b) for b in out), reverse=True)

    assert sizes(steps("r", 5, "r0")) == [5]
    assert sizes(steps("r", 5, "r0") + steps("s", 5, "r1") + steps("a", 1, None)) == [5, 5, 1]
    assert sizes(steps("r", 20, "rung")) == [7, 7, 6]  # over max_batch: capped, not spread over workers
    assert sizes(steps("r", 3, "rung"), max_batch=2) == [2, 1]


class _CountingBackend:
    """Runs batches on ``slots`` threads and records, at each submit, the threads of the
    batches still running beside it."""

    def __init__(self, slots: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.slots, self.pool, self.running, self.seen = slots, ThreadPoolExecutor(slots), [], []

    def submit(self, payloads, store_root, threads):
        from proxyscale.run.worker import execute

        self.running = [(f, t) for f, t in self.running if not f.done()]
        self.seen.append((threads, sum(t for _, t in self.running), payloads[0]["name"]))
        fut = self.pool.submit(lambda: (time.sleep(0.05), execute(payloads, store_root, 1))[1])
        self.running.append((fut, threads))
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        self.pool.shutdown(cancel_futures=cancel)


def test_admission_keeps_the_threads_of_running_batches_within_the_cores(tmp_path, monkeypatch):
    """4 cores, 4 workers: small steps (1 thread each) run four at once, a big step (every core)
    runs only when nothing else does, and the threads running never exceed the cores."""
    from proxyscale.run import executor
    from proxyscale.run.executor import SMALL_STEP_FLOPS

    monkeypatch.setattr(executor, "available_cores", lambda: 4)
    log, store, plan = tmp_path / "log", Store(tmp_path / "store"), Plan()
    for i in range(8):
        big = i in (2, 5)
        plan.add(Step("t", f"{'big' if big else 'small'}{i}", {"value": i, "log": str(log)}, fn=FN,
                      cost=SMALL_STEP_FLOPS * (10 if big else 0.1)))
    be = _CountingBackend(4)
    s = run_plan(plan, store, be, progress=False, poll_s=0.01)
    assert len(s.done) == 8 and not s.failed
    assert all(threads + beside <= 4 for threads, beside, _ in be.seen), be.seen
    assert sorted((name, threads, beside) for threads, beside, name in be.seen if name.startswith("big")) == \
        [("big2", 4, 0), ("big5", 4, 0)]
    assert max(1 + beside for threads, beside, _ in be.seen if threads == 1) == 4  # small ones share the cores


def test_a_batch_records_each_members_share_of_its_wall_time(tmp_path):
    """Three steps trained as one batch in ~0.6 s: each record's ``wall_s`` is a third of the
    batch's ``batch_wall_s``, so the records add up to the time the batch took, not three times it."""
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = Plan()
    for name, v in (("p", 1), ("q", 2), ("r", 3)):
        plan.add(Step("t", name, {"value": v, "log": str(log), "batch_sleep": 0.6}, batch_key="g", fn=FN,
                      batch_fn="_fake_steps:slow_batch"))
    s = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert sorted(s.done) == sorted(st.key for st in plan) and not s.failed
    recs = [store.record(st.key) for st in plan]
    assert [r["group_size"] for r in recs] == [3, 3, 3]
    batch = recs[0]["batch_wall_s"]
    assert all(r["batch_wall_s"] == batch for r in recs) and 0.6 <= batch < 5.0
    assert all(r["wall_s"] == batch / 3 for r in recs)
    assert sum(r["wall_s"] for r in recs) == pytest.approx(batch, rel=1e-12)

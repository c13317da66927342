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



def test_same_shape_groups_are_split_for_the_workers():
    from proxyscale.run.executor import _split

    def sizes(n: int, max_batch: int, slots: int) -> list[int]:
        group = [Step(kind="k", name=f"s{i}", config={"i": i}) for i in range(n)]
        out = _split(group, max_batch, slots)
        assert [s for b in out for s in b] == group  # every step once, order kept
        return [len(b) for b in out]

    assert sizes(20, 8, 1) == [7, 7, 6]  # one worker: fewest batches
    assert sizes(20, 8, 2) == [5, 5, 5, 5]  # two rounds of 5, not 8 + 8 then 4 beside an idle worker
    assert sizes(16, 8, 2) == [8, 8]
    assert sizes(3, 8, 2) == [2, 1]
    assert sizes(1, 8, 4) == [1]
    assert sizes(9, 4, 3) == [3, 3, 3]
    assert all(max(sizes(n, m, w)) <= m for n in range(1, 30) for m in (1, 3, 8) for w in (1, 2, 3))


def test_groups_are_split_only_for_workers_other_ready_work_leaves_free():
    from proxyscale.run.executor import _batches

    def steps(prefix: str, n: int, key: str | None) -> list[Step]:
        return [Step(kind="k", name=f"{prefix}{i}", config={"i": i}, batch_key=key) for i in range(n)]

    def sizes(ready: list[Step], slots: int) -> list[int]:
        return sorted((len(b) for b in _batches(ready, 8, {"k": 0}, slots)), reverse=True)

    assert sizes(steps("r", 20, "rung"), 2) == [5, 5, 5, 5]  # a rung alone is spread over the workers
    # the other worker has work already: p and q stay one batch
    assert sizes(steps("a", 1, None) + steps("p", 2, "pq"), 2) == [2, 1]
    assert sizes(steps("r", 20, "r1") + steps("s", 20, "r2"), 2) == [7, 7, 7, 7, 6, 6]  # enough batches: fewest each
    assert sizes(steps("r", 16, "rung"), 4) == [4, 4, 4, 4]


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

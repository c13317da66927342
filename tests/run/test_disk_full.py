"""A full disk under a run (fault injection: a step makes every later store write of its worker
fail with ENOSPC; tests/store/test_store_faults.py fills a real tmpfs where mounting is allowed).
The run must end, say why in one line naming the store, release every claim and mark nothing done."""
from __future__ import annotations

import faulthandler
import os

import pytest

from proxyscale.run.backends import make_backend
from proxyscale.run.executor import run_plan
from proxyscale.run.plan import Plan, Step
from proxyscale.store import Store

LOG_FN = "_fake_steps:add_step"


@pytest.fixture(autouse=True)
def bounded():
    """A run that waits forever on a leaked lock fails the test instead of hanging the suite."""
    faulthandler.dump_traceback_later(90, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _run_keeping_workers(plan: Plan, store: Store, check) -> object:
    """Run on one local worker, then call ``check`` while the worker still lives (a lock it leaked
    would still be held) before the pool is shut down."""
    backend = make_backend("local", 1)
    try:
        summary = run_plan(plan, store, backend, progress=False, poll_s=0.1)
        check()
        return summary
    finally:
        backend.shutdown()


@pytest.mark.parametrize("when", ["step", "finish"])
def test_a_full_disk_fails_the_steps_in_one_line_and_releases_their_claims(tmp_path, when):
    store = Store(tmp_path / "store")
    plan = Plan()
    full = plan.add(Step("t", "full", {"value": 1, "when": when}, {}, fn="_fault_steps:fill_disk"))
    after = plan.add(Step("t", "after", {"value": 2, "log": str(tmp_path / "log")}, {}, fn=LOG_FN))

    def locks_are_free() -> None:
        for key in (full, after):
            assert store.holder(key) is None
            claim = store.claim(key)  # this process can claim it: nobody holds the lock
            assert claim is not None
            claim.release()

    s = _run_keeping_workers(plan, store, locks_are_free)
    assert set(s.failed) == {full, after} and not s.done
    for key in (full, after):
        reason = s.failed[key]
        assert reason.startswith(f"no space left on the disk of the store {store.root} (No space left on device)")
        assert "bytes free" in reason and "\n" not in reason
        assert not store.is_done(key) and not store.final_dir(key).exists()
    assert not (tmp_path / "log").exists()  # the second step never started: its claim failed first
    if when == "finish":  # its output was written; the record of it was not
        assert (store.partial_dir(full) / "value.json").is_file()
        assert not (store.partial_dir(full) / "_step.json").exists()


def test_a_lock_leaked_by_our_own_worker_is_not_waited_for(tmp_path, capfd):
    """A step claims the next step's lock and keeps it (a leak): the driver sees its own worker
    holding it after that worker's batch returned, and fails the step instead of waiting."""
    store = Store(tmp_path / "store")
    victim_step = Step("t", "victim", {"value": 1, "log": str(tmp_path / "log")}, {}, fn=LOG_FN)
    victim = Plan().add(victim_step)  # its key, for the step that leaks its lock
    plan = Plan()
    leaker = plan.add(Step("t", "leak", {"store": str(store.root), "victim": victim}, {},
                           fn="_fault_steps:leak_claim"))
    assert plan.add(victim_step) == victim  # after the leak: one worker runs the steps in plan order
    s = _run_keeping_workers(plan, store, lambda: None)
    assert s.done == [leaker] and list(s.failed) == [victim]
    assert s.failed[victim].startswith("its claim is still held by this run's own worker (pid ")
    assert "another process" not in capfd.readouterr().err
    assert not (tmp_path / "log").exists() and not store.is_done(victim)
    assert os.getpid() != int(s.failed[victim].split("pid ")[1].split(")")[0])  # the worker's, not ours

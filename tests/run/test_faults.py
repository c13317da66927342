"""Fault drills on the local backend: a killed worker, two drivers on one store, damaged files.
Each checks that no step is lost (every step finishes) or duplicated (runs to the end twice)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from proxyscale.run.backends import make_backend
from proxyscale.run.executor import run_plan
from proxyscale.run.plan import Plan, Step
from proxyscale.store import Store, read_json

FN = "_fake_steps:add_step"
HERE = Path(__file__).parent


def chain(log: Path, tmp: Path, *, die: dict[str, str] | None = None, sleep: float = 0.0,
          bias_file: Path | None = None) -> Plan:
    """a -> b -> d, a -> c -> d, and e alone; ``die`` maps a step name to once/always."""
    plan, die = Plan(), die or {}

    def mk(name: str, v: int, **inp: str) -> str:
        cfg = {"value": v, "log": str(log), "sleep": sleep, "die": die.get(name),
               "marker": str(tmp / f"{name}.died"), "bias_file": str(bias_file) if bias_file else None}
        return plan.add(Step("t", name, cfg, inp, fn=FN))

    a = mk("a", 1)
    b, c = mk("b", 10, x=a), mk("c", 100, x=a)
    mk("d", 1000, x=b, y=c)
    mk("e", 5)
    return plan


def value(store: Store, plan: Plan, name: str) -> int:
    return read_json(store.final_dir(next(s.key for s in plan if s.name == name)) / "value.json")["value"]


def started(log: Path) -> Counter:
    return Counter(ln.split()[0] for ln in log.read_text().splitlines()) if log.exists() else Counter()


def run_local(plan: Plan, store: Store, workers: int = 2, **kw):
    backend = make_backend("local", workers)
    try:
        return run_plan(plan, store, backend, progress=False, **kw)
    finally:
        backend.shutdown()


def test_a_killed_worker_is_retried_and_nothing_is_lost(tmp_path, capfd):
    """b's worker dies while c runs beside it: the pool stops c's worker too; only b is charged."""
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = chain(log, tmp_path, die={"b": "once"}, sleep=0.3)
    s = run_local(plan, store)
    assert not s.failed and sorted(s.done) == sorted(st.key for st in plan)
    b = next(st.key for st in plan if st.name == "b")
    assert s.retried == {b: 1} and store.record(b)["attempt"] == 2  # bounded, recorded, only the culprit
    assert value(store, plan, "d") == 1112
    assert started(log)["b"] == 2  # killed once, then finished: one result
    assert all(len(list(store.final_dir(st.key).parent.glob(f"{st.name}-*"))) == 1 for st in plan)
    assert "Traceback" not in capfd.readouterr().err


def test_a_worker_that_always_dies_fails_its_step_after_the_bounded_retries(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = chain(log, tmp_path, die={"c": "always"})
    s = run_local(plan, store, retries=2)
    c = next(st.key for st in plan if st.name == "c")
    d = next(st.key for st in plan if st.name == "d")
    assert list(s.failed) == [c] and "died" in s.failed[c] and "after 3 attempts" in s.failed[c]
    assert "\n" not in s.failed[c]
    assert s.blocked == [d] and started(log)["c"] == 3 and set(s.retried) == {c}
    assert {st.name for st in plan if store.is_done(st.key)} == {"a", "b", "e"}


DRIVER = textwrap.dedent("""
    import sys, json
    sys.path.insert(0, {here!r})
    from pathlib import Path
    from test_faults import chain, run_local
    from proxyscale.store import Store
    if __name__ == "__main__":  # spawned workers import this file too
        s = run_local(chain(Path({log!r}), Path({tmp!r}), sleep=0.7), Store({store!r}), workers=1, poll_s=0.2)
        print(json.dumps({{"done": len(s.done), "failed": s.failed, "waited": len(s.waited)}}))
""")


def test_two_drivers_on_one_store_share_the_work_without_duplicates(tmp_path):
    log, root = tmp_path / "log", tmp_path / "store"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(HERE), log=str(log), tmp=str(tmp_path), store=str(root)))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert all(r["failed"] == {} for r in results), results
    assert sum(r["waited"] for r in results) >= 1  # one driver waited for a step the other held
    assert started(log) == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})  # each ran exactly once
    plan = chain(log, tmp_path, sleep=0.7)
    assert all(Store(root).is_done(st.key) for st in plan) and value(Store(root), plan, "d") == 1112


def test_a_damaged_finished_step_is_rerun_and_its_dependents_only_if_it_changed(tmp_path):
    log, store, bias = tmp_path / "log", Store(tmp_path / "store"), tmp_path / "bias"
    bias.write_text("0")
    plan = chain(log, tmp_path, bias_file=bias)
    run_plan(plan, store, make_backend("inline", 1), progress=False)
    b = next(st.key for st in plan if st.name == "b")
    f = store.final_dir(b) / "value.json"
    f.write_text(f.read_text().replace("11", "12"))  # same size: only the sum can tell
    s = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert list(s.repaired) == [b] and "sha256" in s.repaired[b] and s.done == [b]
    assert value(store, plan, "b") == 11 and value(store, plan, "d") == 1112  # same result: d kept
    assert started(log)["d"] == 1

    bias.write_text("7")  # the re-run will now give another result...
    a = next(st.key for st in plan if st.name == "a")
    (store.final_dir(a) / "value.json").write_text("{}")  # ...and the damaged step is the root
    s = run_plan(plan, store, make_backend("inline", 1), progress=False)
    assert set(s.repaired) == {a, b, next(st.key for st in plan if st.name == "c"),
                               next(st.key for st in plan if st.name == "d")}
    assert value(store, plan, "a") == 8 and value(store, plan, "d") == 7 + 1000 + (7 + 10 + 8) + (7 + 100 + 8)
    assert started(log)["e"] == 1  # not downstream of a: untouched


def test_a_step_reading_an_input_damaged_during_the_run_reruns_that_input(tmp_path):
    from proxyscale.run.worker import execute

    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = chain(log, tmp_path)
    a, b = (next(st for st in plan if st.name == n) for n in "ab")
    execute([a.to_payload()], str(store.root))
    (store.final_dir(a.key) / "value.json").write_text('{"value": 9}\n')  # size changes, too
    res = execute([b.to_payload()], str(store.root))
    assert res[0]["state"] == "corrupt" and res[0]["input"] == a.key and not store.is_done(b.key)


def test_threads_follow_the_step_not_what_runs_beside_it():
    from proxyscale.run.executor import SMALL_STEP_FLOPS, threads_for

    big = [Step("t", "big", {}, cost=SMALL_STEP_FLOPS * 10)]
    small = [Step("t", "small", {}, cost=SMALL_STEP_FLOPS / 10)]
    assert threads_for(big, cores=8) == 8  # every core, whatever runs beside it (the executor waits for them)
    assert threads_for(big, cores=2) == 2
    assert threads_for(small * 40, cores=8) == 1  # small steps: one thread each, however many are stacked
    ranked = [Step("t", "ranked", {}, cost=SMALL_STEP_FLOPS / 10, ranks=2)]
    assert threads_for(ranked, cores=8) == 2  # a thread for each data-parallel rank it starts
    assert threads_for([Step("t", "r", {}, cost=SMALL_STEP_FLOPS * 10, ranks=2)], cores=8) == 8  # 4 each


KILLER, STACKED = "_fault_steps:die_then_add", "_fault_steps:stacked"


def trio(log: Path, tmp: Path, *, always: bool = False, stacked: bool = False) -> Plan:
    """Three same-shape steps p, q, s that share one worker's batch (in that order); q kills its
    worker (once, or ``always``). One after another: p has finished and s has not started when q
    dies. Stacked (a batch function): all three are running."""
    plan = Plan()
    cfg = {"log": str(log), "sleep": 0.0}
    batch_fn = STACKED if stacked else None
    plan.add(Step("t", "p", {**cfg, "value": 1}, batch_key="pqs", fn=FN, batch_fn=batch_fn))
    plan.add(Step("t", "q", {**cfg, "value": 20, "marker": str(tmp / "q.died"), "always": always},
                  batch_key="pqs", fn=KILLER, batch_fn=batch_fn))
    plan.add(Step("t", "s", {**cfg, "value": 300}, batch_key="pqs", fn=FN, batch_fn=batch_fn))
    return plan


def _keys(plan: Plan) -> dict[str, str]:
    return {st.name: st.key for st in plan}


def test_a_batch_killed_by_one_step_charges_that_step_only(tmp_path):
    """retries 0: q failed; p (finished before q died) is done, not failed; s (not started) runs
    again free. The summary agrees with the store."""
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = trio(log, tmp_path)
    key = _keys(plan)
    s = run_local(plan, store, workers=1, retries=0)
    assert list(s.failed) == [key["q"]] and "died" in s.failed[key["q"]] and s.retried == {}
    assert sorted(s.done) == sorted([key["p"], key["s"]])
    assert {n for n in key if store.is_done(key[n])} == {"p", "s"}  # summary == store
    assert store.state(key["q"]) == "failed" and "died" in store.failure(key["q"])["reason"]
    assert started(log) == Counter({"p": 1, "q:start": 1, "s": 1})  # p not redone, s ran once
    assert value(store, plan, "p") == 1 and value(store, plan, "s") == 300


def test_a_retried_batch_counts_only_the_step_that_died(tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = trio(log, tmp_path)
    key = _keys(plan)
    s = run_local(plan, store, workers=1, retries=1)
    assert not s.failed and s.retried == {key["q"]: 1}
    assert sorted(s.done) == sorted(key.values()) and all(store.is_done(k) for k in key.values())
    assert started(log) == Counter({"p": 1, "q:start": 2, "q": 1, "s": 1})
    assert store.record(key["q"])["attempt"] == 2 and store.record(key["p"])["attempt"] == 1


def test_a_stacked_batch_whose_worker_died_runs_again_one_at_a_time(tmp_path):
    """All members were running: none is charged for the stacked death; they run again alone, so
    the culprit dies alone (charged) and the others finish."""
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = trio(log, tmp_path, always=True, stacked=True)
    key = _keys(plan)
    s = run_local(plan, store, workers=1, retries=0)
    assert list(s.failed) == [key["q"]] and s.retried == {}
    assert sorted(s.done) == sorted([key["p"], key["s"]])
    assert started(log) == Counter({"p:stacked": 1, "q:stacked": 1, "s:stacked": 1, "p": 1, "q:start": 1, "s": 1})
    assert store.record(key["p"])["group_size"] == 1  # finished alone

    log2, store2 = tmp_path / "log2", Store(tmp_path / "store2")  # a one-off death: nobody is charged
    plan = trio(log2, tmp_path / "once", stacked=True)
    (tmp_path / "once").mkdir()
    s = run_local(plan, store2, workers=1, retries=0)
    assert not s.failed and s.retried == {} and len(s.done) == 3

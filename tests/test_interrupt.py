"""Ctrl-C and SIGTERM through the real CLI: `proxyscale run` stops within seconds, stops its
workers, prints one ``interrupted: ...`` line and exits 130 (SIGINT) or 143 (SIGTERM); a re-run
resumes, with the steps finished before kept as they were."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bad_inputs import SRC, make_workspace, tiny_spec
from proxyscale.store import Store

if not Path("/proc/self/stat").is_file():
    pytest.skip("reads processes from /proc (Linux)", allow_module_level=True)


def _workspace(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The tiny spec with training long enough (a few seconds) to be interrupted; 2 workers."""
    ws = make_workspace(tmp_path)
    spec = tiny_spec(ws / "data")
    spec["ladder"]["tokens_per_param"] = 30
    spec["executor"]["workers"] = 2
    path = ws / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(SRC), "HOME": str(ws / "home"), "TMPDIR": str(ws / "tmp")}
    return path, ws / "S", env


def _start(spec: Path, store: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "proxyscale.cli", "run", str(spec), "--store", str(store), "-j", "2", "--no-progress"]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(what, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _training(store: Path, since: float) -> bool:
    """A train step's function has started since ``since`` (the worker marks it so)."""
    return any(p.stat().st_mtime >= since for p in (store / "steps" / "train" / ".partial").glob("*/_running.json"))


def _handler_installed(pid: int) -> bool:
    """The CLI's SIGTERM handler is in place (SIGINT has Python's own from the start)."""
    try:
        caught = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("SigCgt"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every live process: pid -> (state, parent pid, session id), from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            out[int(d.name)] = (fields[0], int(fields[1]), int(fields[3]))
    return out


def _descendants(pid: int) -> set[int]:
    procs, found, todo = _processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, (_s, ppid, _sid) in procs.items() if ppid == parent}
        todo += list(kids - found)
        found |= kids
    return found


def _alive(pids: set[int], sid: int) -> set[int]:
    """Which of ``pids``, or of the processes of session ``sid``, still run (zombies are gone)."""
    return {p for p, (state, _ppid, s) in _processes().items() if state != "Z" and (p in pids or s == sid)}


def _interrupt(proc: subprocess.Popen, sig: int, group: bool) -> tuple[int, str, float]:
    """Send ``sig`` (to the process group, as a terminal does, or to the driver only); returns
    the exit code, stderr and the seconds it took to exit. Every process it had is gone."""
    children = _descendants(proc.pid)
    assert children  # the pool's workers
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while _alive(children, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(children, proc.pid), "a worker outlived the run"
    return proc.returncode, err, took


def _finished(store: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(store)): p.stat().st_mtime_ns for p in (store / "steps").glob("*/*/_step.json")}


def test_ctrl_c_and_sigterm_during_training_stop_cleanly_and_the_rerun_resumes(tmp_path):
    spec, store, env = _workspace(tmp_path)
    since = time.time()
    proc = _start(spec, store, env)
    _wait_for(lambda: _training(store, since), proc)
    rc, err, took = _interrupt(proc, signal.SIGINT, group=True)
    done = _finished(store)
    assert rc == 130 and took < 10, (rc, took, err)
    assert err.splitlines() == [f"interrupted: {len(done)} of 15 steps finished; re-run the same command to resume"]
    assert 4 <= len(done) < 15  # the data steps had finished, not the training
    locks = [f"{p.parent.parent.name}/{p.name}" for p in store.glob("steps/*/.locks/*")]
    assert locks and all(Store(store).holder(k) is None for k in locks)  # every claim was let go

    _stop_the_driver(spec, store, env, signal.SIGTERM, 143)  # as `kill` sends it
    assert all(_finished(store)[k] == t for k, t in done.items())
    _finish_and_compare(spec, store, env, done)


def _stop_the_driver(spec: Path, store: Path, env: dict[str, str], sig: int, rc_want: int) -> None:
    """Start the run, and once a model trains send ``sig`` to the driver alone: it exits with
    ``rc_want`` within 10 s, printing one line."""
    since = time.time()
    proc = _start(spec, store, env)
    _wait_for(lambda: _training(store, since), proc)
    rc, err, took = _interrupt(proc, sig, group=False)
    assert rc == rc_want and took < 10, (rc, took, err)
    assert err.startswith("interrupted: ") and len(err.splitlines()) == 1


def _finish_and_compare(spec: Path, store: Path, env: dict[str, str], done: dict[str, int]) -> None:
    """A re-run finishes every step and leaves the ones finished before as they were."""
    proc = subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", str(spec), "--store", str(store),
                           "-j", "2", "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = _finished(store)
    assert len(after) == 15 and all(after[k] == t for k, t in done.items())  # finished steps were skipped
    assert not list((store / "steps").glob("*/.partial/*"))  # nothing left half-done


def test_ctrl_c_while_the_run_is_still_being_prepared(tmp_path):
    spec, store, env = _workspace(tmp_path)
    proc = _start(spec, store, env)
    _wait_for(lambda: _handler_installed(proc.pid), proc, timeout=60)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted before any step ran; finished steps are kept; "
                                "re-run the same command to resume"]
    assert not store.exists() or not _finished(store)


@pytest.mark.slow  # the stop above, with SIGINT to the driver alone (the fast test sends it to the group)
def test_sigint_to_the_driver_alone_stops_cleanly(tmp_path):
    spec, store, env = _workspace(tmp_path)
    _stop_the_driver(spec, store, env, signal.SIGINT, 130)
    _finish_and_compare(spec, store, env, _finished(store))

"""The Slurm backend with a stand-in ``sbatch`` first on PATH: it records the argument list it gets
and runs the job script as Slurm would (the script's arguments passed on, output to --output).
Shows that paths reach the worker unchanged, never through a shell string."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_run_executor import diamond, value

from proxyscale.errors import ConfigError
from proxyscale.run.backends import make_backend
from proxyscale.run.backends.slurm import JOB_SCRIPT
from proxyscale.run.executor import run_plan
from proxyscale.store import Store

# Reads sbatch options (``--opt=value``, or a short ``-x value``) up to the script, logs its argv as
# one JSON line, runs ``sh SCRIPT ARGS...`` with stdout/stderr to --output, prints a job id.
FAKE_SBATCH = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SBATCH_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SBATCH_FAIL"):
    sys.exit("sbatch: error: Batch job submission failed: Invalid partition name specified")
i, out = 0, None
while args[i].startswith("-"):
    if args[i].startswith("--output="):
        out = args[i][len("--output="):].replace("%%", "%")
    i += 2 if len(args[i]) == 2 else 1
print(4242, flush=True)
with open(out, "w") as log:
    rc = subprocess.run(["/bin/sh", args[i], *args[i + 1:]], stdout=log, stderr=log).returncode
sys.exit(rc)
"""

NASTY = "st ore; $(touch PWNED) `touch PWNED` 'q' \"dq\" 100%"
OPTIONS = ("--partition=debug", "--comment=a b; $(touch PWNED)", "-t", "5")


@pytest.fixture
def sbatch(tmp_path, monkeypatch):
    """Puts the stand-in first on PATH; returns the file its argument lists are logged to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "sbatch"
    exe.write_text(FAKE_SBATCH.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "sbatch.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    monkeypatch.setenv("FAKE_SBATCH_LOG", str(log))
    monkeypatch.chdir(tmp_path)
    return log


def test_paths_reach_the_worker_unchanged(tmp_path, sbatch):
    root = tmp_path / NASTY
    store, jobs = Store(root / "store"), root / "jobs"
    plan = diamond(tmp_path / "log")
    backend = make_backend("slurm", 2, job_dir=jobs, slurm_args=OPTIONS)
    try:
        s = run_plan(plan, store, backend, progress=False)
    finally:
        backend.shutdown()
    assert len(s.done) == 5 and not s.failed and value(store, plan, "d") == 1112
    assert not list(tmp_path.rglob("PWNED"))  # nothing was run by a shell parsing the paths
    calls = [json.loads(ln) for ln in sbatch.read_text().splitlines()]
    assert len(calls) == 5
    for argv in calls:
        at = argv.index(str(jobs / "run-job.sh"))
        opts, command = argv[:at], argv[at + 1:]
        assert opts[-len(OPTIONS):] == list(OPTIONS)  # the user's options, each one unchanged
        assert command[:3] == [sys.executable, "-m", "proxyscale.run.worker"] and len(command) == 4
        job = Path(command[3])
        assert job.parent == jobs and job.with_suffix(".result.json").is_file()
        assert json.loads(job.read_text())["store"] == str(root / "store")
        out = next(o for o in opts if o.startswith("--output="))
        assert out == "--output=" + str(job.with_suffix(".log")).replace("%", "%%")
    assert (jobs / "run-job.sh").read_text() == JOB_SCRIPT  # a fixed script: no path inside


def test_a_refused_submission_fails_its_steps_in_one_line(tmp_path, sbatch, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_FAIL", "1")
    store = Store(tmp_path / "store")
    plan = diamond(tmp_path / "log")
    backend = make_backend("slurm", 2, job_dir=tmp_path / "jobs")
    try:
        s = run_plan(plan, store, backend, progress=False)
    finally:
        backend.shutdown()
    names = sorted(k.split("/")[1].split("-")[0] for k in s.failed)
    assert names == ["a", "e"] and len(s.blocked) == 3 and not s.done
    a = next(st for st in plan if st.name == "a")
    reason = s.failed[a.key]
    assert "wrote no result (sbatch exit 1: sbatch: error: Batch job submission failed" in reason
    assert "\n" not in reason
    assert store.state(a.key) == "failed" and store.failure(a.key)["reason"] == reason


def test_no_sbatch_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="needs `sbatch` on PATH"):
        make_backend("slurm", 1, job_dir=tmp_path / "jobs")


def test_slurm_args_must_be_a_list(tmp_path, sbatch):
    with pytest.raises(ConfigError, match="one per item"):
        make_backend("slurm", 1, job_dir=tmp_path / "jobs", slurm_args="--partition=debug -t 5")


def test_cancel_scancels_the_jobs_and_returns_at_once(tmp_path, sbatch):
    """Ctrl-C while a job runs: the driver's shutdown(cancel=True) calls scancel with the job id
    sbatch printed, stops `sbatch --wait` and returns; nothing is recorded in the store."""
    import signal
    import time

    scancel = Path(os.environ["PATH"].split(os.pathsep)[0]) / "scancel"
    scancel.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scancel.log'}\n")
    scancel.chmod(0o755)
    store, log = Store(tmp_path / "store"), tmp_path / "log"
    a = next(iter(diamond(log, sleep=60)))
    backend = make_backend("slurm", 1, job_dir=tmp_path / "jobs")
    fut = backend.submit([a.to_payload()], str(store.root), 1)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:  # the step is running in the "job"
        time.sleep(0.05)
    t0 = time.monotonic()
    try:
        backend.shutdown(cancel=True)
        assert fut.result(timeout=10) == [{"key": a.key, "state": "failed", "reason": "cancelled"}]
        assert time.monotonic() - t0 < 10
        assert (tmp_path / "scancel.log").read_text().split() == ["4242"]
        assert store.state(a.key) == "running" and store.failure(a.key) is None  # the job's own claim
    finally:
        os.kill(int(log.read_text().split()[1]), signal.SIGKILL)  # the stand-in "job" scancel did not stop


def test_a_data_parallel_step_asks_for_its_gpus_on_one_node(tmp_path, sbatch):
    """A train step of a rung with ``ranks: 2`` on CUDA (Step.gpus = 2): one job, one node, one
    task holding both GPUs; its worker starts torchrun there (run/ddp.py)."""
    from proxyscale.run.backends.slurm import SlurmBackend, job_gpus

    backend = SlurmBackend(2, job_dir=tmp_path / "jobs", extra_args=("--partition=gpu",))
    try:
        argv = backend.command(tmp_path / "jobs" / "job-1.json", 8, job_gpus([{"gpus": 2, "ranks": 2}, {"gpus": 0}]))
        plain = backend.command(tmp_path / "jobs" / "job-2.json", 1, job_gpus([{"gpus": 0}, {}]))
    finally:
        backend.shutdown()
    at = argv.index(str(tmp_path / "jobs" / "run-job.sh"))
    assert argv[:at] == ["sbatch", "--wait", "--parsable", "--cpus-per-task=8", "--job-name=proxyscale",
                         "--gpus-per-node=2", "--nodes=1", "--ntasks=1",
                         f"--output={tmp_path / 'jobs' / 'job-1.log'}", "--partition=gpu"]
    assert argv[at + 1:at + 4] == [sys.executable, "-m", "proxyscale.run.worker"]
    assert not any(a.startswith("--gpus") for a in plain)

"""Slurm backend: each batch of steps is one ``sbatch --wait`` job running
``python -m proxyscale.run.worker JOB.json``. The store must be on a file system the nodes share.

No shell command line is ever built from a path: sbatch gets an argument list, and the job script
is a fixed two-line file (``exec "$@"``) to which sbatch hands the worker's command as the
script's own arguments, each one unchanged (spaces, quotes or ``;`` in the store path included).
Options from ``executor.slurm_args`` are passed through as they are, one argument each.

Why not submitit: it pickles the job function and arguments and unpickles the job's result file,
and nothing here is unpickled; a JSON job file and a JSON result file need no more than sbatch.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...store import write_json, write_text
from .common import fail_batch

JOB_SCRIPT = '#!/bin/sh\n# proxyscale: run the command given as arguments (no shell parsing of paths)\nexec "$@"\n'


def slurm_filename(path: Path) -> str:
    """``path`` as a Slurm ``--output`` value: ``%`` starts a Slurm pattern, so it is doubled."""
    return str(path).replace("%", "%%")


class SlurmBackend:
    def __init__(self, workers: int, job_dir: str | Path, extra_args: tuple[str, ...] = ()) -> None:
        if shutil.which("sbatch") is None:
            raise ConfigError("the slurm backend needs `sbatch` on PATH; run on a Slurm login node, "
                              "or use executor.backend: local")
        if isinstance(extra_args, str) or not all(isinstance(a, str) for a in extra_args):
            raise ConfigError(f"executor.slurm_args must be a list of sbatch options, one per item; got {extra_args!r}")
        self.slots = max(1, workers or 16)
        self.job_dir = Path(job_dir)
        self.extra_args = tuple(extra_args)
        self._pool = ThreadPoolExecutor(max_workers=self.slots)
        self._lock = threading.Lock()
        self._running: dict[subprocess.Popen, str] = {}  # sbatch --wait -> its job id ("" until printed)
        self._cancelled = False

    def command(self, job: Path, threads: int, gpus: int = 0) -> list[str]:
        """The sbatch argument list for one job file (what :meth:`submit` runs). ``gpus``: GPUs
        on the job's one node; a data-parallel step's worker starts torchrun there, one rank per
        GPU (``run/ddp.py``), so the job is one task holding them all."""
        script = self.job_dir / "run-job.sh"
        if not script.is_file() or script.read_text() != JOB_SCRIPT:
            write_text(script, JOB_SCRIPT)
        return ["sbatch", "--wait", "--parsable", f"--cpus-per-task={threads}", "--job-name=proxyscale",
                *([f"--gpus-per-node={gpus}", "--nodes=1", "--ntasks=1"] if gpus else []),
                f"--output={slurm_filename(job.with_suffix('.log'))}", *self.extra_args,
                str(script), sys.executable, "-m", "proxyscale.run.worker", str(job)]

    def _run(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> list[dict[str, Any]]:
        job = self.job_dir / f"job-{uuid.uuid4().hex[:12]}.json"
        write_json(job, {"payloads": payloads, "store": store_root, "threads": threads})
        with self._lock:
            if self._cancelled:
                return _cancelled(payloads)
            proc = subprocess.Popen(self.command(job, threads, job_gpus(payloads)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            self._running[proc] = ""
        first = proc.stdout.readline() if proc.stdout is not None else ""  # --parsable: the id, at submission
        with self._lock:
            self._running[proc] = first.strip().split(";")[0]
        _out, stderr = proc.communicate()
        with self._lock:
            self._running.pop(proc, None)
            if self._cancelled:  # the run is stopping: record nothing
                return _cancelled(payloads)
        result = job.with_suffix(".result.json")
        if not result.is_file():
            err = (stderr.strip().splitlines() or [""])[-1][:300]
            reason = (f"the slurm job wrote no result (sbatch exit {proc.returncode}{': ' + err if err else ''}); "
                      f"see {job.with_suffix('.log')}")
            return fail_batch(payloads, store_root, reason)
        return json.loads(result.read_text())

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        return self._pool.submit(self._run, payloads, store_root, threads)

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for the jobs, or with ``cancel`` (Ctrl-C) ``scancel`` the submitted ones and stop
        their ``sbatch --wait``, so that the driver exits at once; a job Slurm has not yet
        stopped keeps its claims, and the next run waits for it."""
        if cancel:
            with self._lock:
                self._cancelled = True
                running = dict(self._running)
            jobs = [j for j in running.values() if j]
            if jobs and shutil.which("scancel"):
                try:
                    subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
                except (OSError, subprocess.SubprocessError):
                    pass  # best effort: the run is stopping either way
            for proc in running:
                proc.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def job_gpus(payloads: list[dict[str, Any]]) -> int:
    """Whole GPUs a batch's job asks for: the most any of its steps needs (0: none)."""
    return math.ceil(max((float(p.get("gpus") or 0) for p in payloads), default=0.0))


def _cancelled(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"key": p["key"], "state": "failed", "reason": "cancelled"} for p in payloads]

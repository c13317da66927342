"""Slurm backend: each batch of steps is one ``sbatch --wait`` job running
``python -m proxyscale.run.worker JOB.json``. The store must be on a shared file system."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...errors import ConfigError, StoreError


class SlurmBackend:
    def __init__(self, workers: int, job_dir: str | Path, extra_args: tuple[str, ...] = ()) -> None:
        if shutil.which("sbatch") is None:
            raise ConfigError("the slurm backend needs `sbatch` on PATH; run on a Slurm login node")
        self.slots = max(1, workers or 16)
        self.job_dir = Path(job_dir)
        self.extra_args = extra_args
        self._pool = ThreadPoolExecutor(max_workers=self.slots)

    def _run(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> list[dict[str, Any]]:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        job = self.job_dir / f"job-{uuid.uuid4().hex[:12]}.json"
        job.write_text(json.dumps({"payloads": payloads, "store": store_root, "threads": threads}))
        cmd = ["sbatch", "--wait", "--parsable", f"--cpus-per-task={threads}",
               f"--output={job.with_suffix('.log')}", *self.extra_args,
               f"--wrap={sys.executable} -m proxyscale.run.worker {job}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = job.with_suffix(".result.json")
        if not result.is_file():
            raise StoreError(f"slurm job for {payloads[0]['key']} wrote no result (sbatch exit "
                             f"{proc.returncode}: {proc.stderr.strip()[:300]}); see {job.with_suffix('.log')}")
        return json.loads(result.read_text())

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        return self._pool.submit(self._run, payloads, store_root, threads)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)

"""What ``proxyscale run`` would submit for a plan, per step kind, as ``plan`` prints it.

The Slurm lines are the argument lists :meth:`proxyscale.run.backends.slurm.SlurmBackend.command`
builds (one ``sbatch --wait`` job per batch of steps, the job file named by a random id at
submission, shown here as ``job-<id>``); the Ray lines the resources
:class:`~proxyscale.run.backends.ray.RayBackend` asks for (``num_cpus``: the batch's threads,
capped by the cluster's largest node; ``num_gpus``: the step's ``gpus``).
"""
from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from .executor import step_threads
from .plan import Plan, Step


def slurm_command(job_dir: Path, threads: int | str, extra_args: Sequence[str] = (),
                  job: str = "job-<id>") -> list[str]:
    """The sbatch argument list the Slurm backend runs for one job file (see the module docstring)."""
    job_file = job_dir / f"{job}.json"
    return ["sbatch", "--wait", "--parsable", f"--cpus-per-task={threads}", "--job-name=proxyscale",
            f"--output={str(job_file.with_suffix('.log')).replace('%', '%%')}", *extra_args,
            str(job_dir / "run-job.sh"), sys.executable, "-m", "proxyscale.run.worker", str(job_file)]


def _firsts(steps: Sequence[Step]) -> dict[str, Step]:
    """The costliest step of each kind (what its kind's submission looks like at most)."""
    out: dict[str, Step] = {}
    for s in steps:
        if s.kind not in out or s.cost > out[s.kind].cost:
            out[s.kind] = s
    return out


def submission_text(plan: Plan, steps: Sequence[Step], backend: str, *, job_dir: Path, cores: int,
                    slurm_args: Sequence[str] = ()) -> str:
    """One line per step kind: the Slurm job or Ray task ``run`` would submit for its costliest
    step (threads as this machine's ``cores`` give them), or where local steps run."""
    counts = Counter(s.kind for s in steps)
    if backend == "local":
        return f"submission (local): {len(steps)} steps in worker processes on this machine"
    if backend == "slurm":
        head = [f"submission (slurm): one job per batch of steps (threads for {cores} cores), each",
                f"  {shlex.join(slurm_command(job_dir, '<threads>', slurm_args))}"]
    else:
        head = [f"submission (ray): one task per batch of steps (threads for {cores} cores)"]
    lines = [*head, "  per step kind (its costliest step):"]
    for kind, s in _firsts(steps).items():
        ranks = int(s.config.get("ranks", 1))
        note = f", {ranks} ranks per model" if ranks > 1 else ""
        what = f"--cpus-per-task={step_threads(s.cost, cores)}" if backend == "slurm" else \
            f"num_cpus={step_threads(s.cost, cores)} num_gpus={s.gpus:g}"
        lines.append(f"    {kind} ×{counts[kind]}: {what}{note}")
    return "\n".join(lines)

"""Run one step's function as R data-parallel processes under ``torchrun`` on this machine.

:func:`launch_ranks` is called by a step function inside its worker (any backend: the local pool,
a Slurm job, a Ray task): it starts ``python -m torch.distributed.run --nproc-per-node R -m
proxyscale.run.ddp`` with the step's context in an environment variable (no file is written) and
waits. Each rank rebuilds the context and calls the function named in it, which joins the
process group (``train.distributed.process_group``) and trains. Rank 0 alone reports progress
into the step's partial directory; every store write of a training run is rank 0's.

torchrun, and each rank, die with their parent (``PR_SET_PDEATHSIG``), so a worker stopped by the
driver, or killed, leaves no process behind. A rank that fails makes torchrun stop the others
(``--max-restarts 0``), and the step ends with one line naming the rank:

* a rank killed by a signal (out of memory, killed; torchrun reports a negative exit code), or
  torchrun itself killed, raises :class:`~proxyscale.errors.ProcessDied`: the worker books the
  step ``crashed``, as if its own process had died, and the driver retries it up to
  ``executor.retries`` times (each run resumes from the last checkpoint), then fails it with
  "(after N attempts)". This is the worker's doing, so it is the same on every backend;
* a rank that raises (any exception, a ProxyscaleError included) raises StoreError: a failed
  step, as any step that raises, not retried (a re-run resumes it from its last checkpoint).

The ranks' gloo/NCCL traffic stays on the loopback interface; torchrun's rendezvous store (torch's
TCPStore, on a random port for the job's lifetime) listens on every interface, which torch
offers no setting to narrow.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ProcessDied, ProxyscaleError, StoreError
from ..store.layout import pid_alive
from .step import StepContext, ref, resolve

JOB_ENV = "PROXYSCALE_DDP_JOB"  # the step context, as JSON, for the ranks
TORCHRUN_FLAG = "--torchrun"  # `python -m proxyscale.run.ddp --torchrun ARGS`: torchrun ARGS
_ERROR_PREFIX = "proxyscale-rank-error: "
_TEMP_PREFIX = "proxyscale-ranks-"
_TEMP_MARKER = ".proxyscale-ranks"  # written into each launch's temp folder: only those are ever removed


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_gpus(ranks: int, device: str) -> bool:
    """Whether the ranks run on CUDA (one GPU each); a ConfigError when fewer GPUs are visible."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < ranks:
        raise ConfigError(f"{ranks} data-parallel ranks need {ranks} GPUs but {torch.cuda.device_count()} are "
                          "visible (CUDA_VISIBLE_DEVICES); lower the rung's ranks or run where more GPUs are free")
    return cuda


def torchrun_command(ranks: int, port: int) -> list[str]:
    """The command starting ``ranks`` processes of :func:`main`: torchrun (``torch.distributed.run``
    of this interpreter's torch), entered through :func:`main` so that it dies with its parent."""
    return [sys.executable, "-m", "proxyscale.run.ddp", TORCHRUN_FLAG, "--nnodes=1", "--node-rank=0",
            f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1", f"--master-port={port}",
            "--max-restarts=0", "--monitor-interval=0.2", "-m", "proxyscale.run.ddp"]


def rank_env(ctx: StepContext, fn: str, ranks: int) -> dict[str, str]:
    """The environment of torchrun: the job, each rank's thread share, loopback networking."""
    job = {"fn": fn, "key": ctx.key, "kind": ctx.kind, "name": ctx.name, "config": ctx.config,
           "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out),
           "threads": max(1, ctx.threads // ranks),
           "config_type": ref(ctx.config_type) if ctx.config_type is not None else None}
    threads = str(job["threads"])
    return {**os.environ, JOB_ENV: json.dumps(job), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}


def launch_ranks(ctx: StepContext, fn: Any, ranks: int, device: str = "auto") -> None:
    """Run ``fn(ctx)`` in ``ranks`` processes under torchrun and wait. If any rank fails: a
    one-line :class:`ProcessDied` when a rank (or torchrun) was killed by a signal, else a
    one-line StoreError; the full output is kept as the error's cause, in the step's traceback."""
    check_gpus(ranks, device)
    env = rank_env(ctx, ref(fn), ranks)
    _remove_stale_temp()
    with tempfile.TemporaryDirectory(prefix=f"{_TEMP_PREFIX}{os.getpid()}-") as tmp:
        env["TMPDIR"] = tmp  # torchrun keeps per-run folders in the temp dir: removed with it
        (Path(tmp) / _TEMP_MARKER).touch()
        proc = subprocess.run(torchrun_command(ranks, _free_port()), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        died = proc.returncode < 0 or bool(killed_ranks(rank_failures(output)))
        raise (ProcessDied if died else StoreError)(failure_line(output, ranks, proc.returncode)) \
            from RuntimeError(_tail(output))


def _remove_stale_temp() -> None:
    """Remove the temp folders of launches whose process was killed (its pid is in the name):
    only real folders holding the marker a launch writes, never a look-alike someone else made."""
    for d in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*-*"):
        pid = d.name[len(_TEMP_PREFIX):].split("-", 1)[0]
        ours = not d.is_symlink() and (d / _TEMP_MARKER).is_file()
        if ours and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def rank_failures(output: str) -> list[tuple[int, int]]:
    """``(rank, exit code)`` of each failed rank in torchrun's summary, root cause first (a
    negative code: killed by that signal)."""
    report = output[output.find("Root Cause"):] + "\n" + output[output.find("Failures:"):output.find("Root Cause")]
    pairs = re.findall(r"^\s*rank\s*:\s*(\d+).*?^\s*exitcode\s*:\s*(-?\d+)", report, re.M | re.S)
    return [(int(r), int(c)) for r, c in pairs] if "Root Cause" in output else []


def killed_ranks(failures: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The failures that are ranks killed by a signal: the root cause if so, and any other rank
    killed by another signal than the SIGTERM with which torchrun stops the rest after a failure
    (a rank killed at the same moment as a peer fails on its absence may not be the root cause)."""
    return [(r, c) for i, (r, c) in enumerate(failures) if c < 0 and (i == 0 or c != -signal.SIGTERM)]


def _signal_name(code: int) -> str:
    return signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"


def failure_line(output: str, ranks: int, code: int) -> str:
    """One line saying which rank failed and why, from torchrun's output: a rank killed by a
    signal first (the others then fail on its absence), else the error line of the rank torchrun
    saw fail first (:func:`main` prints it), else its exit code."""
    where = f"data-parallel training ({ranks} ranks) failed"
    failures = rank_failures(output)
    killed = killed_ranks(failures)
    if killed:
        return (f"{where}: rank {killed[0][0]} died (killed by {_signal_name(killed[0][1])}; out of memory or "
                "killed?); re-run to resume it from its last checkpoint")
    if code < 0:
        return (f"{where}: torchrun died (killed by {_signal_name(code)}; out of memory or killed?); "
                "re-run to resume it from its last checkpoint")
    errors = [ln[len(_ERROR_PREFIX):] for ln in output.splitlines() if ln.startswith(_ERROR_PREFIX)]
    first = [e for e in errors if failures and e.startswith(f"rank {failures[0][0]}: ")]
    if first or errors:
        return f"{where}: {(first or errors)[0]}"
    if failures:
        return f"{where}: rank {failures[0][0]} exited with {failures[0][1]}; see the step's traceback for its output"
    return f"{where}: torchrun exited with {code}; see the step's traceback for its output"


def _tail(text: str, n: int = 60) -> str:
    return "torchrun output (last lines):\n" + "\n".join(text.splitlines()[-n:])


def _context(job: dict[str, Any]) -> StepContext:
    ctype = resolve(job["config_type"]) if job.get("config_type") else None
    inputs = {k: Path(v) for k, v in job["inputs"].items()}
    return StepContext(job["key"], job["kind"], job["name"], job["config"], inputs, Path(job["out"]),
                       int(job["threads"]), ctype)


def main() -> int:
    """One rank: rebuild the step context from :data:`JOB_ENV` and run its function. With
    :data:`TORCHRUN_FLAG` first: torchrun itself (its SIGTERM handler stops the ranks)."""
    from .worker import set_threads

    if sys.argv[1:2] == [TORCHRUN_FLAG]:
        die_with_parent(signal.SIGTERM)
        from torch.distributed.run import main as torchrun

        torchrun(sys.argv[2:])
        return 0
    die_with_parent(signal.SIGKILL)
    job = json.loads(os.environ[JOB_ENV])
    set_threads(int(job["threads"]))
    ctx = _context(job)
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        ctx.progress = lambda *a, **k: None  # type: ignore[method-assign]  # rank 0 reports for all
    try:
        resolve(job["fn"])(ctx)
    except ProxyscaleError as e:
        print(f"{_ERROR_PREFIX}rank {rank}: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # the one line for the step; the traceback follows, for its record
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"{_ERROR_PREFIX}rank {rank}: {type(e).__name__}: {first}", file=sys.stderr, flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

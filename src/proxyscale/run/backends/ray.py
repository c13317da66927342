"""Ray backend: each batch of steps is one Ray task; results land in the store like any backend's.

Where it runs:

* ``executor.ray_address`` unset: a private single-node Ray starts in this process for the run and
  stops with it. Every Ray server of it listens on 127.0.0.1 only (Ray's single-node mode, set
  through ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), there is no dashboard, and the backend checks
  after start that the node address and every socket Ray's processes listen on are loopback ones.
* ``executor.ray_address: "HOST:PORT"``: connect to a cluster started with ``ray start --head``
  (its nodes then need proxyscale installed and the store on a shared file system: NFS, Lustre...).
  A loopback address (``127.0.0.1:PORT``) connects in the same single-node mode; any other address
  is the user's choice to use the network. A cluster with token authentication needs ``RAY_AUTH_MODE=token``
  and its token (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``) in this process's environment.

What crosses the wire: the task is :func:`run_batch`, a module-level function that Ray imports by
name in its workers, called with one JSON string and returning one JSON string, so the only
objects Ray serialises for this backend are two ``str`` (none of our data is pickled).

A worker process that dies while running a batch (killed, out of memory) is not retried by Ray:
its steps come back ``crashed``, and the driver (``run/executor.py``) decides, as for the local
pool, which step was running and is charged (retried at most ``executor.retries`` times), which
had finished (done) and which had not started (run again, free). A step the dead worker left
half-done is taken over by its next run (its claim died with the process). Each result carries
``attempts``, the number of times its task started.

A data-parallel step (``ranks`` R) is one task whose worker starts torchrun and its R ranks on
the task's node (see :func:`task_options`). A rank killed by a signal does not kill the task: the
worker itself books the step ``crashed`` (``run/ddp.py``, ``run/worker.py``) and returns, and the
driver retries it under the same rule, as on the local pool and Slurm.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...store import read_json, write_json
from ...store.layout import pid_alive
from ..worker import execute
from .common import fail_batch

SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-node mode, servers on loopback


def run_batch(job: str) -> str:
    """The Ray task: a JSON job (payloads, store, threads) in, the JSON list of results out."""
    spec = json.loads(job)
    if spec.get("attempts_dir"):  # one file per start, so the driver can count the attempts
        tries = Path(spec["attempts_dir"])
        await_exit(tries)
        write_json(tries / f"{uuid.uuid4().hex}.json", {"pid": os.getpid(), "host": socket.gethostname()})
    return json.dumps(execute(spec["payloads"], spec["store"], int(spec["threads"])))


def await_exit(attempts_dir: Path, timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` s) until the processes of the earlier attempts on this host are
    gone. Ray reports a killed worker, and starts the retry, as soon as its sockets close, a moment
    before the process has exited; until then the step lock it holds still looks held."""
    host, me = socket.gethostname(), os.getpid()
    marks = [read_json(p) for p in attempts_dir.glob("*.json")] if attempts_dir.is_dir() else []
    pids = [int(m["pid"]) for m in marks if m.get("host") == host and m.get("pid") != me]
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, an IPv4-mapped loopback (``::ffff:127.0.0.1``) and ``localhost``."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain ``HOST:PORT`` address; None for ``auto``, ``ray://...`` and the like."""
    if "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


def _import_ray(single_node: bool) -> Any:
    if single_node:
        os.environ[SINGLE_NODE_ENV] = "0"  # read when Ray is first imported
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the ray backend needs Ray: pip install 'proxyscale[ray]', "
                          "or use executor.backend: local") from e
    if single_node:
        from ray._private import ray_constants  # Ray was imported earlier in this process: set it here too

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def _connect(ray: Any, address: str | None) -> None:
    """``ray.init`` for a new private loopback node (no address) or the cluster at ``address``."""
    where = "a local Ray" if address is None else f"the Ray cluster at {address}"
    hp = _host_port(address) if address else None
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as e:
            raise ConfigError(f"cannot reach {where} ({e.strerror or e}); start one with `ray start --head "
                              "--node-ip-address=127.0.0.1` or fix executor.ray_address") from e
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or its own errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"could not start or join {where}: {first}. For a cluster with token authentication "
                          "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN; check executor.ray_address") from e


def _exposed(ray: Any, started_here: bool) -> str:
    """What of this Ray is reachable from outside the machine ("" if nothing): its node address if
    not loopback; for a Ray started here, also any socket of this process's children (the Ray
    servers and workers) listening on another address (psutil, which Ray ships, lists them)."""
    node = ray.util.get_node_ip_address()
    if not is_loopback(node):
        return node
    if not started_here:
        return ""
    try:
        import psutil
    except ImportError:  # pragma: no cover - Ray ships psutil
        return ""
    bad = []
    for proc in psutil.Process().children(recursive=True):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        bad += [f"{c.laddr.ip}:{c.laddr.port}" for c in conns
                if c.status == psutil.CONN_LISTEN and not is_loopback(c.laddr.ip)]
    return ", ".join(bad)


def task_options(payloads: list[dict[str, Any]], threads: int, max_cpus: int) -> dict[str, Any]:
    """Ray options of the task running one batch: its threads as CPUs, the GPUs its steps need.

    A data-parallel step (``ranks`` R on CUDA, so ``gpus`` R) is one task asking for R GPUs, not a
    placement group of R one-GPU bundles nor Ray Train's TorchTrainer: the task's worker starts
    torchrun, which runs the R ranks on the task's node (run/ddp.py) exactly as the local and
    Slurm backends do, and a Ray task gets all its GPUs on one node (Ray sets
    ``CUDA_VISIBLE_DEVICES`` to them), which is what a STRICT_PACK group of R bundles would
    reserve. Only ranks spread over several nodes would need one task per rank."""
    gpus = max((float(p.get("gpus") or 0) for p in payloads), default=0.0)
    return {"num_cpus": min(max(1, threads), max_cpus), "num_gpus": gpus, "max_retries": 0,
            "retry_exceptions": False}


class RayBackend:
    """Batches as Ray tasks. ``address``: see the module docstring; ``job_dir``: where attempts are
    counted (on the shared file system); ``retries``: checked here; the driver retries (see above)."""

    def __init__(self, workers: int, address: str | None = None, job_dir: str | Path | None = None,
                 retries: int = 2) -> None:
        if retries < 0:
            raise ConfigError(f"executor.retries {retries}: give a number ≥ 0")
        hp = _host_port(address) if address else None
        single_node = address is None or (hp is not None and is_loopback(hp[0]))
        ray = _import_ray(single_node)
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            _connect(ray, address)
        if single_node:
            exposed = _exposed(ray, started_here=self._owns and address is None)
            if exposed:
                self._close()
                raise ConfigError(f"this Ray ({ray.__version__}) listens on {exposed}, not only on 127.0.0.1; "
                                  "install a newer ray, or set executor.ray_address to use the network on purpose")
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self._max_cpus = max(1, int(max((n.get("CPU", 0) for n in nodes), default=1)))
        self._max_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
        self.slots = max(1, workers or int(sum(n.get("CPU", 0) for n in nodes)))
        self.retries = retries
        self.job_dir = Path(job_dir) if job_dir is not None else None
        self._remote = ray.remote(run_batch)
        self._refs: dict[Future, Any] = {}

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        out: Future = Future()
        gpus = max(float(p.get("gpus") or 0) for p in payloads)
        if gpus > self._max_gpus:
            reason = f"needs {gpus:g} GPU(s) but no node of the Ray cluster has that many ({self._max_gpus:g})"
            out.set_result(fail_batch(payloads, store_root, reason))
            return out
        tries = self.job_dir / f"ray-{uuid.uuid4().hex[:12]}" if self.job_dir is not None else None
        job = json.dumps({"payloads": payloads, "store": store_root, "threads": threads,
                          "attempts_dir": str(tries) if tries else None})
        ref = self._remote.options(**task_options(payloads, threads, self._max_cpus)).remote(job)
        self._refs[out] = ref
        ref.future().add_done_callback(lambda f: self._settle(f, out, payloads, store_root, tries))
        return out

    def _settle(self, done: Future, out: Future, payloads: list[dict[str, Any]], store_root: str,
                tries: Path | None) -> None:
        self._refs.pop(out, None)
        attempts = len(list(tries.glob("*.json"))) if tries is not None and tries.is_dir() else None
        try:
            results = json.loads(done.result())
        except self._ray.exceptions.TaskCancelledError:  # the run is stopping: nothing to record
            results = [{"key": p["key"], "state": "failed", "reason": "cancelled"} for p in payloads]
        except BaseException as e:  # noqa: BLE001 - every way a task ends becomes a result
            if tries is not None:
                await_exit(tries)  # the dead worker may still hold its step's lock for a moment
            if isinstance(e, self._died):  # the driver charges the step that was running
                results = [{"key": p["key"], "state": "crashed", "reason": self._reason(e)} for p in payloads]
            else:
                results = fail_batch(payloads, store_root, self._reason(e))
        if tries is not None:
            shutil.rmtree(tries, ignore_errors=True)
        if attempts is not None:
            for r in results:
                r["attempts"] = attempts
        out.set_result(results)

    @property
    def _died(self) -> tuple[type, ...]:
        exc = self._ray.exceptions
        return exc.WorkerCrashedError, exc.OutOfMemoryError, exc.NodeDiedError, exc.LocalRayletDiedError

    def _reason(self, e: BaseException) -> str:
        if isinstance(e, self._died):
            return f"the Ray worker running it died ({type(e).__name__}: killed, out of memory or node lost)"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return f"Ray task error: {type(e).__name__}: {first}"

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs.values()):
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while stopping
                    pass
        self._close()

    def _close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()



def map_task_options(gpu: bool, cluster_gpus: float) -> dict[str, Any]:
    """Ray options of one sharded-selection task: one CPU; a task that can use a GPU (``gpu``: DsDm's
    featurisation) asks for one whole GPU when the cluster has any, so Ray spreads such tasks
    over the GPUs (it sets each task's ``CUDA_VISIBLE_DEVICES``) and counts them; on a cluster
    without GPUs it runs on a CPU like the others."""
    return {"num_cpus": 1, "num_gpus": 1 if gpu and cluster_gpus >= 1 else 0, "max_retries": 0}


def ray_map(address: str | None = None, workers: int = 0) -> Any:
    """A mapper for sharded selection (:mod:`proxyscale.select.shards`): runs ``fn(job)`` for each
    JSON job as one Ray task (one CPU each, and one GPU for a ``gpu`` phase on a cluster that has
    GPUs: :func:`map_task_options`; on the cluster at ``address`` or a private loopback node) and
    yields the results in job order. A task's own error (a bad shard) is re-raised as
    itself, so the user sees its one line. One Ray serves every phase of the selection (started on
    the first call); a private one stops with the process, an error stops it at once."""
    held: list[RayBackend] = []

    def run(fn: Any, jobs: list[str], gpu: bool = False) -> Any:
        if not held:
            held.append(RayBackend(workers, address))
        backend = held[0]
        ray = backend._ray
        refs = []
        try:
            opts = map_task_options(gpu, ray.cluster_resources().get("GPU", 0) if gpu else 0)
            remote = ray.remote(fn).options(**opts)
            refs = [remote.remote(j) for j in jobs]
            for ref in refs:
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    raise (cause if isinstance(cause, Exception) else e) from None
        except BaseException:
            held.clear()
            backend.shutdown(cancel=True)
            raise
    return run

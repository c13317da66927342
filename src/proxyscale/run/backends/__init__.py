"""Execution backends: where a batch of steps runs. One protocol, a small registry."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Protocol

from ...registry import Registry


class Backend(Protocol):
    """Runs ``proxyscale.run.worker.execute(payloads, store_root, threads)`` somewhere."""

    slots: int  # how many batches may run at once

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future: ...

    def shutdown(self, cancel: bool = False) -> None: ...


def _local(workers: int, **_: Any) -> Backend:
    from .local import LocalBackend

    return LocalBackend(workers)


def _inline(workers: int, **_: Any) -> Backend:
    from .local import InlineBackend

    return InlineBackend()


def _ray(workers: int, **options: Any) -> Backend:
    from .ray import RayBackend

    return RayBackend(workers, address=options.get("ray_address"), job_dir=options.get("job_dir"),
                      retries=options.get("retries", 2))


def _slurm(workers: int, **options: Any) -> Backend:
    from .slurm import SlurmBackend

    return SlurmBackend(workers, extra_args=options.get("slurm_args", ()), job_dir=options["job_dir"])


BACKENDS: Registry[Callable[..., Backend]] = Registry("backend")
for _name, _make in (("local", _local), ("inline", _inline), ("ray", _ray), ("slurm", _slurm)):
    BACKENDS.add(_name, _make)


def make_backend(name: str, workers: int, **options: Any) -> Backend:
    """Build a backend by name: ``local`` (process pool), ``inline`` (this process), ``ray``, ``slurm``."""
    return BACKENDS.get(name)(workers, **options)

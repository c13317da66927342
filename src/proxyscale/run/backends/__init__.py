"""Execution backends: where a batch of steps runs. One protocol, a small registry."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol


class Backend(Protocol):
    """Runs ``proxyscale.run.worker.execute(payloads, store_root, threads)`` somewhere."""

    slots: int  # how many batches may run at once

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future: ...

    def shutdown(self, cancel: bool = False) -> None: ...


def make_backend(name: str, workers: int, **options: Any) -> Backend:
    """Build a backend by name: ``local`` (process pool), ``inline`` (this process), ``ray``, ``slurm``."""
    from ...config import suggest
    from ...errors import ConfigError

    if name == "local":
        from .local import LocalBackend

        return LocalBackend(workers)
    if name == "inline":
        from .local import InlineBackend

        return InlineBackend()
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(workers, address=options.get("ray_address"))
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(workers, extra_args=tuple(options.get("slurm_args", ())),
                            job_dir=options["job_dir"])
    raise ConfigError(f"unknown backend '{name}'{suggest(name, ['local', 'inline', 'ray', 'slurm'])}")

"""Ray backend: each batch of steps is a Ray task. The store must be on a file system all
nodes share (NFS, Lustre...). Start a cluster with ``ray start --head`` and pass its address."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from ...errors import ConfigError


class RayBackend:
    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as e:
            raise ConfigError("the ray backend needs Ray: pip install 'proxyscale[ray]'") from e
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        total = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, workers or total)
        from ..worker import execute

        self._remote = ray.remote(execute)

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        ref = self._remote.options(num_cpus=threads).remote(payloads, store_root, threads)
        return ref.future()

    def shutdown(self, cancel: bool = False) -> None:
        return None

"""Local backends: a pool of spawned worker processes, or this very process (for tests)."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from ..worker import execute


class LocalBackend:
    """A process pool; ``spawn`` so each worker starts clean (torch and fork do not mix)."""

    def __init__(self, workers: int) -> None:
        self.slots = max(1, workers)
        self._pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=mp.get_context("spawn"))

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        return self._pool.submit(execute, payloads, store_root, threads)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class InlineBackend:
    """Runs each batch synchronously in this process."""

    slots = 1

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(execute(payloads, store_root, threads))
        except BaseException as e:  # noqa: BLE001 - surfaced through the future
            fut.set_exception(e)
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        return None

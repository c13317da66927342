"""Local backends: a pool of spawned worker processes, or this very process (for tests)."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..worker import execute, mark_when_terminated


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker if the runner dies (e.g. SIGKILL), so no orphan keeps
    holding a step's lock and a re-run can resume that step at once."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    mark_when_terminated()


class LocalBackend:
    """A process pool; ``spawn`` so each worker starts clean (torch and fork do not mix)."""

    def __init__(self, workers: int) -> None:
        self.slots = max(1, workers)
        self.rebuilt = 0  # pools started again after a worker died
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.slots, mp_context=mp.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))

    def submit(self, payloads: list[dict[str, Any]], store_root: str, threads: int) -> Future:
        try:
            return self._pool.submit(execute, payloads, store_root, threads)
        except BrokenProcessPool:  # a worker died (killed, out of memory): its batches are retried
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self.rebuilt += 1
            return self._pool.submit(execute, payloads, store_root, threads)

    def worker_pids(self) -> list[int]:
        """The pool's live worker processes (the driver tells their step claims from another runner's)."""
        return list(getattr(self._pool, "_processes", None) or ())

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

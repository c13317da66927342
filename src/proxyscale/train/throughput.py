"""Training throughput: model FLOPs utilisation against a device table, and batch prefetching.

MFU counts the model FLOPs ``6·P`` per trained token (P: every parameter, embeddings included,
as ``models.ladder.train_flops``; attention's ``T``-dependent FLOPs and activation
recomputation are not counted), over the bf16 dense peak of the GPUs the run used (SPEC §10);
on a CPU, or a GPU not in the table, it is None.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import torch

# bf16 dense peak TFLOP/s by a substring of torch.cuda.get_device_name (first match wins)
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L4", 121.0),
)


def peak_tflops(device: torch.device) -> float | None:
    """bf16 dense peak of one ``device`` (None: a CPU or a GPU not in :data:`PEAK_BF16_TFLOPS`)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def mfu(params: int, tokens_per_s: float, peak: float | None, devices: int = 1) -> float | None:
    """``6·params·tokens_per_s / (devices · peak)``; None without a peak."""
    if peak is None or peak <= 0:
        return None
    return 6.0 * params * tokens_per_s / (devices * peak * 1e12)


def prefetched(fetch: Callable[[int], torch.Tensor], start: int, stop: int, depth: int = 2) -> Iterator[torch.Tensor]:
    """``fetch(step)`` for ``step`` in ``range(start, stop)``, in order, each prepared by a
    background thread while the caller trains on the one before (``depth`` batches ahead).

    ``fetch`` raising at a step re-raises here when the caller reaches that step. Closing the
    generator early (a stopped run) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def work() -> None:
        for step in range(start, stop):
            try:
                item = (step, fetch(step), None)
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                item = (step, None, e)
            while not stopped.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None or stopped.is_set():
                return

    t = threading.Thread(target=work, name="batch-prefetch", daemon=True)
    t.start()
    try:
        for _ in range(start, stop):
            _step, batch, err = q.get()
            if err is not None:
                raise err
            yield batch
    finally:
        stopped.set()
        t.join(timeout=5)

"""Per-token losses in the evaluator: cross-entropy over (N, V, T) (class dimension second, the
logits read strided) against over (N·T, V) rows, at the evaluator's batch and the demo's
vocabulary sizes; one thread, same input, ratio in one run (not a test).

    PYTHONPATH=src python benchmarks/bench_eval_loss.py
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench_checksums import cpu_model


def _time(fn, reps: int = 10) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def _strided(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")


def _rows(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n, t, v = logits.shape
    return F.cross_entropy(logits.reshape(n * t, v), y.reshape(n * t), reduction="none").view(n, t)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    n, t = 64, 63
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; 1 thread; batch {n} × {t} targets\n")
    print("| V | class dim second (ms) | rows (ms) | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    for v in (2048, 4096, 8192):
        logits, y = torch.randn(n, t, v), torch.randint(0, v, (n, t))
        a, b = _time(lambda: _strided(logits, y)), _time(lambda: _rows(logits, y))  # noqa: B023 (called here)
        diff = (_strided(logits, y) - _rows(logits, y)).abs().max().item()
        print(f"| {v} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.1f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()

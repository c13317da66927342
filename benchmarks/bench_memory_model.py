"""The per-rank memory model (proxyscale.models.memory) against measured peaks of real training
steps, one fresh process per GPT shape and micro-batch.

On CPU (fp32): the peak resident set (``VmHWM``; see :func:`peak_rss`) of a worker that
trains two steps (proxyscale's ``train_step``: forward, fp32 loss, backward, clip, AdamW), minus
its peak before the model is built (torch imported, one warm-up step of a tiny model so that
the kernels' own buffers are in the baseline). On CUDA (bf16 autocast): ``torch.cuda.
max_memory_allocated`` over the same two steps, minus what was allocated before the model.

    python benchmarks/bench_memory_model.py [--device cpu|cuda]

Prints a markdown table: shape, micro-batch, the model's terms and total, the measured peak,
and measured / model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from proxyscale.models.ladder import GPTConfig
from proxyscale.models.memory import rank_memory

# (vocab, context, d_model, layers, heads, micro-batch): sized to run in seconds on a CPU, with
# activations or logits dominating in turn
SHAPES = [(8192, 256, 256, 4, 4, 8), (8192, 256, 256, 4, 4, 16), (2048, 512, 384, 6, 6, 8),
          (16384, 128, 128, 2, 2, 16)]
GPU_SHAPES = [(50368, 2048, 768, 12, 12, 4), (50368, 2048, 1024, 24, 16, 4)]


def measure(shape: tuple[int, ...], device: str) -> float:
    """Peak bytes one process adds while training ``shape`` two steps (see the module docstring)."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps([*shape, device])], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _train(V: int, T: int, d: int, L: int, h: int, m: int, device: str) -> None:
    import torch

    from proxyscale.models.gpt import GPT
    from proxyscale.train.optim import AdamW, TrainConfig, param_settings
    from proxyscale.train.step import train_step

    model = GPT(GPTConfig(vocab_size=V, context=T, d_model=d, n_layers=L, n_heads=h)).to(device)
    opt = AdamW(dict(model.named_parameters()), param_settings(model), TrainConfig())
    amp = torch.bfloat16 if device == "cuda" else None
    for _ in range(2):
        batch = torch.randint(0, V, (m, T + 1), device=device)
        train_step(model, opt, batch, 1e-3, 1.0, amp)


def child(args: list[Any]) -> None:
    """Runs in the fresh process: prints the peak bytes added by training."""
    import torch

    *shape, device = args
    torch.set_num_threads(1)
    _train(64, 16, 8, 1, 1, 2, device)  # warm-up: kernels, allocator arenas, autograd's own state
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _train(*shape, device)
        print(torch.cuda.max_memory_allocated() - base)
    else:
        base = peak_rss()
        _train(*shape, device)
        print(peak_rss() - base)


def peak_rss() -> int:
    """This process's peak resident set, bytes: ``VmHWM`` of /proc/self/status, which belongs to
    the process's own memory map; ``ru_maxrss`` (the fallback off Linux) keeps the high-water
    mark of the parent it was forked from across ``exec``, so a child of a large parent (a test
    session that imported torch) would see the parent's peak as its own."""
    import resource

    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rows(device: str, shapes: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """One row per shape: the model's terms (fp32 on CPU, bf16 on CUDA), the measured peak."""
    out = []
    for V, T, d, L, h, m in shapes:
        cfg = GPTConfig(vocab_size=V, context=T, d_model=d, n_layers=L, n_heads=h)
        model = rank_memory(cfg, m, act_bytes=2 if device == "cuda" else 4)
        measured = measure((V, T, d, L, h, m), device)
        out.append({"shape": f"V{V} T{T} d{d} L{L} h{h}", "m": m, "model": model, "measured": measured})
    return out


def table(device: str, found: list[dict[str, Any]]) -> str:
    from bench_checksums import cpu_model

    what = cpu_model() if device == "cpu" else "CUDA"
    lines = [f"{what}; {'fp32' if device == 'cpu' else 'bf16 autocast'}; MiB", "",
             "| shape | m | 16·P | activations | logits | model | measured | measured / model |",
             "|---|---|---|---|---|---|---|---|"]
    for r in found:
        mm = r["model"]
        fixed = mm.params + mm.grads + mm.optimizer
        lines.append(f"| {r['shape']} | {r['m']} | {fixed / 2**20:.1f} | {mm.activations / 2**20:.1f} | "
                     f"{mm.logits / 2**20:.1f} | {mm.total / 2**20:.1f} | {r['measured'] / 2**20:.1f} | "
                     f"{r['measured'] / mm.total:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    print(table(a.device, rows(a.device, GPU_SHAPES if a.device == "cuda" else SHAPES)))


if __name__ == "__main__":
    main()

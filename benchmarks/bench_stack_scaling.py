"""Where stacking K tiny models pays: per-model step time against tokens per step (not a test).

For each shape, one model's training step and stacked steps of K models are interleaved in one
process (ratios of medians; per-model times = stacked step / K). A stacked step saves the
per-op dispatch cost K-fold but does the same arithmetic and memory traffic per model, so it
wins by a large factor only where dispatch dominates: few tokens per step.

    PYTHONPATH=src python benchmarks/bench_stack_scaling.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from proxyscale.models.gpt import GPT, GPTConfig, param_count
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import cpu_info, keep_freed_memory
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

TC = TrainConfig(device="cpu", precision="fp32")


def per_model_ms(cfg: GPTConfig, B: int, ks: list[int], reps: int) -> dict[int, float]:
    fns = {}
    for k in ks:
        if k == 1:
            model = GPT(cfg, generator=torch.Generator().manual_seed(0))
            opt = AdamW(dict(model.named_parameters()), param_settings(model), TC)
            b = torch.randint(0, cfg.vocab_size, (B, cfg.context + 1))
            fns[k] = lambda model=model, opt=opt, b=b: train_step(model, opt, b, 1e-4, 1.0, None)
        else:
            st = _Stack(cfg, list(range(k)), torch.device("cpu"))
            opt = AdamW(st.params, st.settings, TC)
            b = torch.randint(0, cfg.vocab_size, (k, B, cfg.context + 1))
            fns[k] = lambda st=st, opt=opt, b=b: _step(st, opt, b, 1e-4, 1.0, None)
    times: dict[int, list[float]] = {k: [] for k in fns}
    for i in range(reps + 2):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            if i >= 2:
                times[k].append((time.perf_counter() - t) / k)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  torch kernels: {info['capability']}  "
          f"threads: {args.threads}")
    ks = [1, 8, 20]
    print(f"{'model':<10} {'B':>3} {'T':>4} {'tokens':>7} {'params':>7}  per-model ms (K=" + ", ".join(map(str, ks))
          + ")   speed-up of K=8, K=20")
    for L, d, H in ((1, 4, 1), (2, 32, 2)):
        for B, T in ((1, 8), (8, 64), (32, 128)):
            cfg = GPTConfig(512, T, d, L, H)
            m = per_model_ms(cfg, B, ks, args.reps)
            print(f"L{L}d{d:<7} {B:>3} {T:>4} {B * T:>7} {param_count(cfg):>7}  "
                  + "  ".join(f"{m[k]:7.2f}" for k in ks) + f"   {m[1] / m[8]:5.2f}x {m[1] / m[20]:5.2f}x")


if __name__ == "__main__":
    main()

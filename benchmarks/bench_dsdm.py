"""DsDm pool featurisation: windows per second per proxy size, where the time goes, and the
vmap-safe attention path against the fused kernel's fallback (the peer: what a user got before
the library chose the path itself).

    python benchmarks/bench_dsdm.py [--n 512] [--k 1024] [--context 128]
"""
from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from proxyscale.attribute.outputs import LMLogOdds
from proxyscale.attribute.trak import TRAK
from proxyscale.models.gpt import GPT, GPTConfig

SIZES = (("L1d4", 4, 1, 1), ("L1d8", 8, 1, 1), ("L1d16", 16, 1, 2), ("L2d32", 32, 2, 2))


def cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def profile(model: GPT, output: LMLogOdds, data: tuple, k: int, batch: int) -> dict[str, float]:
    """Seconds in per-example gradients, projection and Q weights, and in total, for one model."""
    trak = TRAK(model, output, k=k, batch_size=batch)
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    t = {"grads": 0.0, "project": 0.0, "q": 0.0}
    t0 = time.perf_counter()
    for i in range(0, len(data[0]), batch):
        b = [x[i:i + batch] for x in data]
        s = time.perf_counter()
        g = trak.grads(tensors, b)
        t["grads"] += time.perf_counter() - s
        s = time.perf_counter()
        trak.projector(0).project(g)
        t["project"] += time.perf_counter() - s
        s = time.perf_counter()
        output.q_weights(model, tensors, b)
        t["q"] += time.perf_counter() - s
    t["total"] = time.perf_counter() - t0
    return t


def featurize_rate(model: GPT, data: tuple, k: int, batch: int, keep_q: bool) -> float:
    """Windows per second of TRAK.featurize as DsDm calls it (``keep_q=False``: no Q pass)."""
    trak = TRAK(model, LMLogOdds(), k=k, batch_size=batch, keep_q=keep_q)
    t0 = time.perf_counter()
    trak.featurize(model.state_dict(), data)
    return len(data[0]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message="There is a performance drop")  # the fallback's own warning
    torch.manual_seed(0)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 512, (a.n, a.context)).astype(np.int64))
    data = (tokens, torch.ones(a.n, a.context - 1))
    print(f"CPU: {cpu()}; torch threads {torch.get_num_threads()}; n={a.n} windows of {a.context} tokens, "
          f"k={a.k}, batch {a.batch}")
    print(f"{'proxy':>6} {'params':>8} {'windows/s':>10} {'grads':>6} {'project':>8} {'Q':>5} "
          f"{'fused fallback windows/s':>25} {'ratio':>6} {'featurize, Q':>13} {'no Q':>6} {'ratio':>6}")
    for name, d, layers, heads in SIZES:
        model = GPT(GPTConfig(vocab_size=512, context=a.context, d_model=d, n_layers=layers, n_heads=heads))
        warm = tuple(x[:a.batch] for x in data)
        for fused in (False, True):  # warm both paths up (projector cache, kernels) before timing
            profile(model, LMLogOdds(fused_attention=fused), warm, a.k, a.batch)
        ours = profile(model, LMLogOdds(), data, a.k, a.batch)
        peer = profile(model, LMLogOdds(fused_attention=True), data, a.k, a.batch)
        rate, rate_peer = a.n / ours["total"], a.n / peer["total"]
        share = {k: ours[k] / ours["total"] for k in ("grads", "project", "q")}
        with_q, no_q = featurize_rate(model, data, a.k, a.batch, True), featurize_rate(model, data, a.k, a.batch, False)
        print(f"{name:>6} {sum(p.numel() for p in model.parameters()):>8,} {rate:>10.0f} {share['grads']:>6.0%} "
              f"{share['project']:>8.0%} {share['q']:>5.0%} {rate_peer:>25.0f} {rate / rate_peer:>5.1f}x "
              f"{with_q:>13.0f} {no_q:>6.0f} {no_q / with_q:>5.2f}x")


if __name__ == "__main__":
    main()

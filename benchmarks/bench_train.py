"""Training throughput benchmarks (not a test): prints a table, optionally writes JSON.

(a) MFU of our training step (models >= 4M parameters) against an fp32 2048² matmul timed in
    the same run; (b) tokens/s against the same-size Hugging Face ``GPT2LMHeadModel`` driven by
    the same training step; (c) bf16 autocast against fp32 and what ``precision: auto`` picks
    here; (d) aggregate speedup of training K tiny models together (``train_lm_batched``'s
    stacked step) over one at a time (``--demo``: the demo's rungs, K = 20). The CPU model and
    its speed-relevant flags are printed first.

Every comparison interleaves the two contenders step by step (MFU: each step is followed by
matmuls over an equally long span) and quotes ratios of medians, so drifts in machine load
hit both sides alike. Absolute numbers vary between machines
and with load; quote the ratios.

    .venv/bin/python benchmarks/bench_train.py --threads 2 --json bench_train.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from proxyscale.models.gpt import GPT, GPTConfig, param_count
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import choose_precision, cpu_info, keep_freed_memory
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

TC = TrainConfig(device="cpu", precision="fp32")


def step_flops(cfg: GPTConfig, tokens: int) -> float:
    """Matmul FLOPs of one training step: 6·N per token (N: parameters used in matmuls, i.e. all
    but positional embeddings; the tied embedding counts once, as the output layer) plus
    12·L·T·d per token for attention scores and values (forward + backward)."""
    n = param_count(cfg) - cfg.context * cfg.d_model
    return tokens * (6.0 * n + 12.0 * cfg.n_layers * cfg.context * cfg.d_model)


def matmul_rate(n: int = 2048, min_seconds: float = 0.5) -> float:
    """fp32 FLOP/s of back-to-back n×n matmuls run for at least ``min_seconds`` (a span
    comparable to one training step, so both see the same machine load)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, t = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t) < min_seconds:
        a @ b
        count += 1
    return count * 2.0 * n ** 3 / elapsed


def _trainer(model: torch.nn.Module, forward=None):
    opt = AdamW(dict(model.named_parameters()), param_settings(model), TC)
    fwd = forward or model
    return lambda batch: train_step(fwd, opt, batch, 1e-4, 1.0, None)


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def interleaved(a, b, batch_a, batch_b, reps: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    """Alternate calls of a and b; returns their step times after ``warmup`` pairs."""
    ta, tb = [], []
    for i in range(warmup + reps):
        x, y = _timed(a, batch_a), _timed(b, batch_b)
        if i >= warmup:
            ta.append(x)
            tb.append(y)
    return ta, tb


def bench_mfu(shape: tuple[int, int, int], reps: int) -> dict:
    L, d, H = shape
    cfg = GPTConfig(4096, 128, d, L, H)
    step = _trainer(GPT(cfg))
    batch = torch.randint(0, cfg.vocab_size, (32, cfg.context + 1))
    for _ in range(2):
        step(batch)
    t_step, peak = [], []
    for _ in range(reps):  # each step is paired with matmuls over an equally long span
        t_step.append(_timed(step, batch))
        peak.append(matmul_rate(min_seconds=t_step[-1]))
    achieved = [step_flops(cfg, 32 * 128) / s for s in t_step]
    return {"model": f"L{L} d{d} V4096 T128 B32", "params": param_count(cfg),
            "tokens_per_s": 32 * 128 / statistics.median(t_step),
            "matmul_gflops": statistics.median(peak) / 1e9,
            "mfu": statistics.median(a / p for a, p in zip(achieved, peak))}


def bench_hf(shape: tuple[int, int, int], reps: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    L, d, H = shape
    cfg = GPTConfig(4096, 128, d, L, H)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=4096, n_positions=128, n_embd=d, n_layer=L, n_head=H,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                    eos_token_id=0))  # GPT-2 as shipped otherwise (gelu_new, SDPA)
    ours = _trainer(GPT(cfg))
    theirs = _trainer(hf, lambda x: hf(x, use_cache=False).logits)
    batch = torch.randint(0, 4096, (32, 129))
    t_ours, t_hf = interleaved(ours, theirs, batch, batch, reps)
    return {"model": f"L{L} d{d} V4096 T128 B32", "ours_tokens_per_s": 4096 / statistics.median(t_ours),
            "hf_tokens_per_s": 4096 / statistics.median(t_hf),
            "speedup": statistics.median(t_hf) / statistics.median(t_ours)}


def bench_batched(shape: tuple[int, int, int, int, int], K: int, reps: int) -> dict:
    L, d, H, B, T = shape
    cfg = GPTConfig(512, T, d, L, H)
    singles = [_trainer(GPT(cfg)) for _ in range(K)]
    stack = _Stack(cfg, list(range(K)), torch.device("cpu"))
    opt = AdamW(stack.params, stack.settings, TC)
    batch = torch.randint(0, 512, (K, B, T + 1))

    def one_at_a_time(b: torch.Tensor) -> None:
        for k in range(K):
            singles[k](b[k])

    t_seq, t_bat = interleaved(one_at_a_time, lambda b: _step(stack, opt, b, 1e-4, 1.0, None), batch, batch, reps)
    return {"model": f"L{L} d{d} V512 T{T} B{B}", "params": param_count(cfg), "K": K,
            "one_at_a_time_tokens_per_s": K * B * T / statistics.median(t_seq),
            "batched_tokens_per_s": K * B * T / statistics.median(t_bat),
            "speedup": statistics.median(t_seq) / statistics.median(t_bat)}


def machine(threads: int) -> dict:
    info = cpu_info()
    return {"cpu": info["model"], "flags": info["flags"], "capability": info["capability"],
            "malloc_keeps_freed": info["malloc_keeps_freed"], "cores": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_start": os.getloadavg()[0]}


def bench_precision(shape: tuple[int, int, int], reps: int) -> dict:
    """bf16 autocast vs fp32, same step, interleaved; plus what ``precision: auto`` would choose."""
    L, d, H = shape
    cfg = GPTConfig(4096, 128, d, L, H)
    models = [GPT(cfg), GPT(cfg)]
    opts = [AdamW(dict(m.named_parameters()), param_settings(m), TC) for m in models]
    batch = torch.randint(0, 4096, (32, 129))
    t32, t16 = interleaved(lambda b: train_step(models[0], opts[0], b, 1e-4, 1.0, None),
                           lambda b: train_step(models[1], opts[1], b, 1e-4, 1.0, torch.bfloat16), batch, batch, reps)
    auto = choose_precision(cfg, TrainConfig(device="cpu", precision="auto", lr=1e-4), torch.device("cpu"))[1]
    return {"model": f"L{L} d{d} V4096 T128 B32", "params": param_count(cfg),
            "bf16_speedup": statistics.median(t32) / statistics.median(t16), "auto": auto}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6, help="timed pairs per comparison")
    ap.add_argument("--big", action="store_true", help="also measure MFU of a 12.3M-parameter model")
    ap.add_argument("--demo", action="store_true", help="also time the demo's rungs batched K=20 vs one at a time")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    keep_freed_memory()  # as training does (train_lm / train_lm_batched)
    out = {"machine": machine(args.threads)}
    out["mfu"] = [bench_mfu(s, args.reps) for s in ((4, 256, 4),) + (((6, 384, 6),) if args.big else ())]
    out["vs_hf"] = [bench_hf(s, args.reps) for s in ((4, 256, 4),)]
    out["precision"] = [bench_precision(s, args.reps) for s in ((4, 256, 4),)]
    shapes = [((2, 64, 4, 32, 128), 8), ((2, 32, 4, 8, 64), 8)]
    if args.demo:  # the demo's rungs (V512 T128 B32), all 20 models of a rung at once
        shapes += [((1, d, h, 32, 128), 20) for d, h in ((4, 1), (8, 1), (16, 2))] + [((2, 32, 2, 32, 128), 20)]
    out["batched"] = [bench_batched(s, K, args.reps) for s, K in shapes]
    out["machine"]["load_avg_end"] = os.getloadavg()[0]
    report(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def report(out: dict) -> None:
    m = out["machine"]
    print(f"CPU: {m['cpu']}  flags: {' '.join(m['flags'])}  torch kernels: {m['capability']}")
    print(f"machine: {m}")
    print("\n(a) MFU vs fp32 2048² matmul")
    for r in out["mfu"]:
        print(f"  {r['model']:<24} {r['params'] / 1e6:6.2f}M  {r['tokens_per_s']:8.0f} tok/s  "
              f"matmul {r['matmul_gflops']:6.1f} GFLOP/s  MFU {r['mfu']:.0%}")
    print("\n(b) ours vs Hugging Face GPT2LMHeadModel, same step")
    for r in out["vs_hf"]:
        print(f"  {r['model']:<24} ours {r['ours_tokens_per_s']:8.0f} tok/s  HF {r['hf_tokens_per_s']:8.0f} tok/s  "
              f"speedup {r['speedup']:.2f}x")
    print("\n(c) bf16 autocast vs fp32, same step (and what precision 'auto' chooses here)")
    for r in out["precision"]:
        a = r["auto"]
        print(f"  {r['model']:<24} bf16 speedup {r['bf16_speedup']:.2f}x  auto -> {a['precision']} "
              f"({a['reason']}{', measured %.2fx' % a['bf16_speedup'] if 'bf16_speedup' in a else ''})")
    print("\n(d) K tiny models together vs one at a time")
    for r in out["batched"]:
        print(f"  {r['model']:<24} {r['params'] / 1e3:6.1f}K  K={r['K']}  one-at-a-time "
              f"{r['one_at_a_time_tokens_per_s']:8.0f} tok/s  batched {r['batched_tokens_per_s']:8.0f} tok/s  "
              f"speedup {r['speedup']:.2f}x")


if __name__ == "__main__":
    main()

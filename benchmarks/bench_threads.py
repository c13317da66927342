"""The cost of a fixed thread count per step (not a test).

A step's thread count changes its bits, so the executor now gives a step above
``SMALL_STEP_FLOPS`` every core whatever runs beside it, and admits batches only while their
threads fit the cores: two big steps ready together run one after the other, each on every core.
Before, they ran side by side on half the cores each (a big step alone got every core in both
rules, so that case costs nothing). This times that pair both ways, alternating, in fresh
processes, and prints the ratio new / old (above 1: the fixed rule is slower).

    PYTHONPATH=src python benchmarks/bench_threads.py [--d-model 256 --layers 4 --steps 8 --rounds 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time


def _train(threads: int, d_model: int, layers: int, steps: int, start, out) -> None:
    import torch

    from proxyscale.models.gpt import GPT, GPTConfig
    from proxyscale.train.optim import AdamW, TrainConfig, param_settings
    from proxyscale.train.step import train_step

    torch.set_num_threads(threads)
    cfg = GPTConfig(vocab_size=4096, context=128, d_model=d_model, n_layers=layers, n_heads=max(1, d_model // 64))
    model = GPT(cfg, generator=torch.Generator().manual_seed(0))
    opt = AdamW(dict(model.named_parameters()), param_settings(model), TrainConfig(device="cpu", precision="fp32"))
    b = torch.randint(0, cfg.vocab_size, (16, cfg.context + 1))
    train_step(model, opt, b, 1e-4, 1.0, None)  # warm-up, before the clock starts
    if start is not None:
        start.wait()
    for _ in range(steps):
        train_step(model, opt, b, 1e-4, 1.0, None)
    out.put(time.perf_counter())


def _pair(threads: int, together: bool, args: argparse.Namespace) -> float:
    """Wall seconds for two identical big steps: side by side, or one after the other."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    if together:
        start = ctx.Barrier(3)
        procs = [ctx.Process(target=_train, args=(threads, args.d_model, args.layers, args.steps, start, out))
                 for _ in range(2)]
        for p in procs:
            p.start()
        start.wait()
        t0 = time.perf_counter()
        ends = [out.get() for _ in procs]
        for p in procs:
            p.join()
        return max(ends) - t0
    total = 0.0
    for _ in range(2):
        start = ctx.Barrier(2)
        p = ctx.Process(target=_train, args=(threads, args.d_model, args.layers, args.steps, start, out))
        p.start()
        start.wait()
        t0 = time.perf_counter()
        total += out.get() - t0
        p.join()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps timed per training run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from proxyscale.run.executor import available_cores
    from proxyscale.train.calibrate import cpu_info

    cores = available_cores()
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  cores: {cores}")
    print(f"pair of big steps: GPT d{args.d_model} L{args.layers}, T 128, B 16, V 4096, {args.steps} steps each")
    if cores < 2:
        print("one core: both rules run the pair one after the other on it (ratio 1)")
        return
    old, new = [], []
    for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both
        old.append(_pair(cores // 2, True, args))
        new.append(_pair(cores, False, args))
    o, n = statistics.median(old), statistics.median(new)
    print(f"old (side by side, {cores // 2} thread(s) each): {o:.2f} s   rounds {[round(x, 2) for x in old]}")
    print(f"new (one after the other, {cores} threads each): {n:.2f} s   rounds {[round(x, 2) for x in new]}")
    print(f"new / old: {n / o:.3f}")


if __name__ == "__main__":
    main()

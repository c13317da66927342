"""How to train many small models of one shape on 2 cores, measured for real (not a test).

The executor's stacking probe times one model and one stack in one process while the other
core is idle. A run trains them side by side, two workers sharing the caches and memory
bandwidth. This trains ``--models`` models of the demo's reference shape (L2d32, V512, T128,
B32) in each of the four ways a 2-core run can, in fresh processes, and prints wall seconds per
model step (lower is better):

- ``alone@1 x2``: two workers side by side, each training its half one model at a time on 1 thread;
- ``alone@2``: one worker, one model at a time on 2 threads;
- ``stack@1 x2``: two workers side by side, each training its half as one stack on 1 thread;
- ``stack@2``: one worker, all the models as one stack on 2 threads.

Then the probe's own measurement (``train.batched._measure_batching``: one model at 1 thread
against the stack at the stack's threads) and the mode it picks. ``--isa avx2`` runs every
child with torch, MKL and oneDNN held to AVX2 kernels (``ATEN_CPU_CAPABILITY``,
``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``): on an AVX-512 machine this shows what the
instruction set alone changes; it is not a Zen 2 (other caches, clocks and memory).

    PYTHONPATH=src python benchmarks/bench_reference_rung.py [--isa avx2] [--models 8 --steps 12 --rounds 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SHAPE = {"vocab_size": 512, "context": 128, "d_model": 32, "n_layers": 2, "n_heads": 2}
BATCH = 32


def _worker(n_models: int, stacked: bool, threads: int, steps: int, start, out) -> None:
    import torch

    from proxyscale.models.gpt import GPT, GPTConfig
    from proxyscale.train.batched import _Stack, _step
    from proxyscale.train.calibrate import keep_freed_memory
    from proxyscale.train.optim import AdamW, TrainConfig, param_settings
    from proxyscale.train.step import train_step

    keep_freed_memory()
    torch.set_num_threads(threads)
    cfg, tc = GPTConfig(**SHAPE), TrainConfig(device="cpu", precision="fp32")
    if stacked:
        st = _Stack(cfg, list(range(n_models)), torch.device("cpu"))
        opt = AdamW(st.params, st.settings, tc)
        b = torch.randint(0, cfg.vocab_size, (n_models, BATCH, cfg.context + 1))
        jobs = [lambda: _step(st, opt, b, 1e-4, 1.0, None)]
    else:
        jobs = []
        for k in range(n_models):
            m = GPT(cfg, generator=torch.Generator().manual_seed(k))
            o = AdamW(dict(m.named_parameters()), param_settings(m), tc)
            b = torch.randint(0, cfg.vocab_size, (BATCH, cfg.context + 1))
            jobs.append(lambda m=m, o=o, b=b: train_step(m, o, b, 1e-4, 1.0, None))
    for job in jobs:  # warm-up, before the clock starts
        job()
    start.wait()
    for job in jobs:  # one model's steps after another's, as a sequential group trains
        for _ in range(steps):
            job()
    out.put(time.perf_counter())


def _layout(name: str, args: argparse.Namespace) -> float:
    """Wall seconds per model step for one layout."""
    procs_n, stacked, threads = {"alone@1 x2": (2, False, 1), "alone@2": (1, False, 2),
                                 "stack@1 x2": (2, True, 1), "stack@2": (1, True, 2)}[name]
    ctx = mp.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(procs_n + 1)
    per = args.models // procs_n
    procs = [ctx.Process(target=_worker, args=(per, stacked, threads, args.steps, start, out)) for _ in range(procs_n)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    end = max(out.get() for _ in procs)
    for p in procs:
        p.join()
    return (end - t0) / (args.models * args.steps)


def _probe(models: int) -> dict:
    import torch

    from proxyscale.models.gpt import GPTConfig
    from proxyscale.train.batched import _measure_batching
    from proxyscale.train.calibrate import keep_freed_memory
    from proxyscale.train.optim import TrainConfig

    keep_freed_memory()
    tc = TrainConfig(device="cpu", precision="fp32", batch_size=BATCH)
    out = {}
    for stack_threads in (1, 2):
        rec = _measure_batching(GPTConfig(**SHAPE), tc, models, torch.device("cpu"), None, (1, stack_threads))
        out[stack_threads] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", choices=["native", "avx2"], default="native")
    ap.add_argument("--models", type=int, default=8, help="models of the shape (even)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per model")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the four layouts, interleaved")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.models < 2 or args.models % 2:
        ap.error(f"--models {args.models}: give an even number ≥ 2 (two workers take half each)")
    if args.isa == "avx2" and not args.child:  # the limits must be set before torch loads
        env = {**os.environ, **AVX2_ENV}
        sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:], "--child"], env=env))
    import torch

    from proxyscale.train.calibrate import cpu_info

    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  torch kernels: {info['capability']}"
          f"  MKL: {os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'native')}  torch {torch.__version__}")
    if args.isa == "avx2" and info["capability"] != "AVX2":
        sys.exit(f"asked for AVX2 kernels but torch reports {info['capability']}")
    names = ["alone@1 x2", "alone@2", "stack@1 x2", "stack@2"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(_layout(n, args))
    best = min(names, key=lambda n: statistics.median(times[n]))
    print(f"\n{args.models} models of L2d32 V512 T128 B32, {args.steps} steps each, {args.rounds} rounds "
          f"(median; ms of wall per model step, lower is better)")
    for n in names:
        med = statistics.median(times[n])
        print(f"  {n:<11} {1e3 * med:7.2f} ms   {med / statistics.median(times[best]):5.2f}x the best   "
              f"runs: {' '.join(f'{1e3 * t:.2f}' for t in times[n])}")
    for threads, rec in _probe(args.models).items():
        print(f"probe, stack at {threads} thread(s): one model {1e3 * rec['one_model_step_s']:.1f} ms/step at 1 thread,"
              f" stack {1e3 * rec['batched_step_s']:.1f} ms/step; core-second ratio {rec['batched_speedup']:.2f}"
              f" -> {rec['mode']}")


if __name__ == "__main__":
    main()

"""GPU check (one H100/H200, ≤ 8 minutes): what only a GPU can show, in one JSON file.

1. the ``@pytest.mark.gpu`` tests;
2. MFU of one training step of a 125M-parameter GPT (L12 d768 H12, V 50304, T 1024) with bf16
   autocast, the fused attention kernel and ``torch.compile``, against the bf16 matmul rate
   measured in the same run and against the card's nominal dense bf16 peak;
3. K tiny models trained together (``train_lm_batched``'s stacked step) against one at a time;
4. TRAK featurisation throughput (compat mode, Gaussian projector) of an MLP;
5. the paper's 37M and 125M rungs at its global batch through the micro-batch path: tokens/s,
   MFU and the peak memory against the planner's estimate (``gpu_paper.py``).

``--dry-run`` runs the same code on the CPU at toy sizes (seconds, no tests, no compile): it is
what the test suite runs, so the GPU path cannot rot unnoticed.

    benchmarks/gpu_check.sh                  # on the GPU machine
    benchmarks/gpu_check.sh --dry-run        # anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gpu_paper import check_paper_rungs  # this folder is on the path when the script runs
from proxyscale.models.gpt import GPT, GPTConfig, param_count
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import cpu_info
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM datasheets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of fn() over ``reps`` calls after ``warmup`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_rate(device: torch.device, n: int, dtype: torch.dtype, reps: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2.0 * n ** 3 / timed(lambda: a @ b, device, reps)


def step_flops(cfg: GPTConfig, tokens: int) -> float:
    """6·N per token (N without positional embeddings) plus 12·L·T·d for attention."""
    n = param_count(cfg) - cfg.context * cfg.d_model
    return tokens * (6.0 * n + 12.0 * cfg.n_layers * cfg.context * cfg.d_model)


def check_mfu(device: torch.device, dry: bool) -> dict:
    cfg = GPTConfig(128, 32, 32, 2, 2) if dry else GPTConfig(50304, 1024, 768, 12, 12)
    B = 4 if dry else 16
    tc = TrainConfig(device=str(device), precision="bf16")
    model = GPT(cfg).to(device)
    opt = AdamW(dict(model.named_parameters()), param_settings(model), tc)
    forward = model if dry else torch.compile(model)
    batch = torch.randint(0, cfg.vocab_size, (B, cfg.context + 1), device=device)
    t0 = time.perf_counter()
    train_step(forward, opt, batch, 1e-4, 1.0, torch.bfloat16)  # compiles on the GPU
    sync(device)
    compile_s = time.perf_counter() - t0
    t = timed(lambda: train_step(forward, opt, batch, 1e-4, 1.0, torch.bfloat16), device, 3 if dry else 10)
    achieved = step_flops(cfg, B * cfg.context) / t
    rate = matmul_rate(device, 256 if dry else 8192, torch.bfloat16, 3 if dry else 20)
    out = {"params": param_count(cfg), "tokens_per_step": B * cfg.context, "step_s": t, "first_step_s": compile_s,
           "achieved_tflops": achieved / 1e12, "bf16_matmul_tflops": rate / 1e12, "mfu_vs_matmul": achieved / rate}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)
    if peak:
        out["mfu_vs_nominal"] = achieved / (peak * 1e12)
    return out


def check_batched(device: torch.device, dry: bool) -> dict:
    cfg = GPTConfig(512, 128, 16, 1, 2)
    K, B = (4, 8) if dry else (64, 32)
    tc = TrainConfig(device=str(device), precision="bf16" if device.type == "cuda" else "fp32")
    amp = torch.bfloat16 if device.type == "cuda" else None
    singles = []
    for _ in range(K):
        m = GPT(cfg).to(device)
        singles.append((m, AdamW(dict(m.named_parameters()), param_settings(m), tc)))
    stack = _Stack(cfg, list(range(K)), device)
    opt = AdamW(stack.params, stack.settings, tc)
    batch = torch.randint(0, cfg.vocab_size, (K, B, cfg.context + 1), device=device)

    def one_at_a_time() -> None:
        for k, (m, o) in enumerate(singles):
            train_step(m, o, batch[k], 1e-4, 1.0, amp)

    reps = 3 if dry else 10
    t_seq = timed(one_at_a_time, device, reps)
    t_bat = timed(lambda: _step(stack, opt, batch, 1e-4, 1.0, amp), device, reps)
    tokens = K * B * cfg.context
    return {"params": param_count(cfg), "K": K, "one_at_a_time_tokens_per_s": tokens / t_seq,
            "batched_tokens_per_s": tokens / t_bat, "speedup": t_seq / t_bat}


def check_trak(device: torch.device, dry: bool) -> dict:
    from proxyscale.attribute import TRAK

    d_in, width, n, k = (16, 32, 64, 32) if dry else (256, 512, 8192, 1024)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, width), torch.nn.Tanh(), torch.nn.Linear(width, width // 2),
                                torch.nn.Tanh(), torch.nn.Linear(width // 2, 10)).to(device)
    x = torch.randn(n, d_in, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    state = {name: t.detach() for name, t in model.state_dict().items()}
    settings = dict(k=k, compat=True, projector="gaussian", seed=0, batch_size=16 if dry else 256,
                    cache_bytes=2 << 30)  # the whole p×k matrix cached (≈ 1.1 GB at full size)
    TRAK(model, **settings).featurize(state, (x[:32], y[:32]), model_id=0)  # warm-up: kernels, lazy imports
    trak = TRAK(model, **settings)
    sync(device)
    t = time.perf_counter()
    phi = trak.featurize(state, (x, y), model_id=0)
    sync(device)
    wall = time.perf_counter() - t
    return {"p": trak.p, "k": k, "n": n, "examples_per_s": n / wall, "finite": bool(torch.isfinite(
        torch.as_tensor(phi)).all())}


def gpu_tests(dry: bool) -> dict:
    if dry:
        return {"skipped": "dry run"}
    t = time.perf_counter()
    tests = Path(__file__).resolve().parents[1] / "tests"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(tests)], capture_output=True, text=True)
    tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
    return {"returncode": r.returncode, "summary": tail, "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, no tests: checks the code runs")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--paper-scale", type=float, default=1.0, help="× the paper rungs' step counts (300 and 100)")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run for the CPU path", file=sys.stderr)
        sys.exit(2)
    device = torch.device("cpu" if args.dry_run else "cuda")
    out: dict = {"machine": {"cpu": cpu_info(), "torch": torch.__version__, "python": platform.python_version(),
                             "load_avg": os.getloadavg()[0], "dry_run": args.dry_run}}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        out["machine"]["gpu"] = torch.cuda.get_device_name(device)
        out["machine"]["cuda"] = torch.version.cuda
    sections = (("gpu_tests", lambda: gpu_tests(args.dry_run)), ("mfu_125m", lambda: check_mfu(device, args.dry_run)),
                ("batched_tiny", lambda: check_batched(device, args.dry_run)),
                ("trak", lambda: check_trak(device, args.dry_run)),
                ("paper_rungs", lambda: check_paper_rungs(device, args.dry_run, args.paper_scale)))
    for name, fn in sections:
        t = time.perf_counter()
        out[name] = fn()
        out[name]["section_s"] = time.perf_counter() - t
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

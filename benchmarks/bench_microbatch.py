"""What micro-batches and activation checkpointing cost and save on the CPU: peak memory and
seconds per optimiser step of one GPT, the same global batch in every setting.

Each setting runs in a fresh subprocess (so ``ru_maxrss``, the peak resident memory, is its own);
a process that only builds the model and optimiser gives the baseline, and ``peak - base`` is
what training adds (activations, gradients, AdamW moments, allocator slack).

    python benchmarks/bench_microbatch.py [--steps 4] [--d 256] [--layers 4] [--T 256] [--B 16]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench_checksums import cpu_model  # this folder is on the path when the script runs


def child(s: dict) -> dict:
    """Run one setting in this process; returns peak RSS (MiB) and s/step."""
    import numpy as np
    import torch

    from proxyscale.models.gpt import GPT, GPTConfig
    from proxyscale.train.optim import AdamW, TrainConfig, param_settings
    from proxyscale.train.step import accumulate_step

    torch.set_num_threads(s["threads"])
    cfg = GPTConfig(vocab_size=s["V"], context=s["T"], d_model=s["d"], n_layers=s["layers"],
                    n_heads=max(1, s["d"] // 64))
    model = GPT(cfg, generator=torch.Generator().manual_seed(0))
    model.checkpoint_blocks = s["ckpt"]
    tc = TrainConfig(batch_size=s["B"], micro_batch_size=s["m"], device="cpu", precision="fp32")
    opt = AdamW(dict(model.named_parameters()), param_settings(model), tc)
    rng = np.random.default_rng(0)
    times = []
    for i in range(s["steps"]):
        batch = torch.from_numpy(rng.integers(0, s["V"], size=(s["B"], s["T"] + 1)))
        t0 = time.perf_counter()
        accumulate_step(model, opt, batch, 1e-3, 1.0, None, s["m"] or s["B"], s["B"])
        if i:  # the first step allocates; time the rest
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_mib": peak, "s_per_step": float(np.mean(times)) if times else None}


def run_setting(s: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(s)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in (("steps", 4), ("d", 256), ("layers", 4), ("T", 256), ("B", 16), ("V", 4096),
                          ("threads", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--child")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    base = {"steps": a.steps, "d": a.d, "layers": a.layers, "T": a.T, "B": a.B, "V": a.V, "threads": a.threads}
    idle = run_setting({**base, "steps": 0, "m": 0, "ckpt": False})["peak_mib"]
    print(f"{cpu_model()}; {a.threads} thread(s); GPT d={a.d} L={a.layers} T={a.T} V={a.V}, global batch {a.B}, "
          f"fp32; baseline (model + optimiser, no step) {idle:.0f} MiB\n")
    print("| micro_batch_size | activation checkpointing | peak RSS MiB | over baseline MiB | s/step |")
    print("|---|---|---|---|---|")
    for m in (0, a.B // 4, 1):
        for ckpt in (False, True):
            r = run_setting({**base, "m": m, "ckpt": ckpt})
            print(f"| {m or f'{a.B} (whole)'} | {'on' if ckpt else 'off'} | {r['peak_mib']:.0f} | "
                  f"{r['peak_mib'] - idle:.0f} | {r['s_per_step']:.3f} |")


if __name__ == "__main__":
    main()

"""Where a training step's time goes, op by op (torch.profiler; not a test).

Profiles ``--steps`` steps of one model trained alone (times multiplied by K, i.e. K models one
after another) and, with ``--K`` > 1, of K stacked models, and prints each op's self CPU time
per step of K models and its share. ``--plain-readout`` puts back the tied output layer as it
was written before ``models/readout.py`` (``x @ W.t()`` on (B, T, d), autograd's backward).

    PYTHONPATH=src python benchmarks/profile_step.py --model 1,4,1 --plain-readout --shapes
    PYTHONPATH=src python benchmarks/profile_step.py --model 4,256,4 --V 4096 --threads 2
    PYTHONPATH=src python benchmarks/profile_step.py --model 2,32,2 --B 8 --T 64 --K 8
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from contextlib import nullcontext
from unittest import mock

import torch
from torch.profiler import profile

from bench_readout import _plain
from proxyscale.models import gpt, gpt_stack
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import cpu_info, keep_freed_memory
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

TC = TrainConfig(device="cpu", precision="fp32")


def per_op_ms(step, steps: int, times: int, shapes: bool = False) -> dict[str, float]:
    for _ in range(3):
        step()
    with profile(record_shapes=shapes) as p:
        for _ in range(steps):
            step()
    out: dict[str, float] = defaultdict(float)
    for e in p.key_averages(group_by_input_shape=shapes):
        name = f"{e.key} {e.input_shapes}" if shapes and e.input_shapes else e.key
        out[name] += e.self_cpu_time_total / 1e3 / steps * times
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="1,4,1", help="L,d,heads")
    ap.add_argument("--V", type=int, default=512)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--K", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--plain-readout", action="store_true")
    ap.add_argument("--shapes", action="store_true", help="one row per op and input shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    L, d, H = map(int, args.model.split(","))
    cfg = GPTConfig(args.V, args.T, d, L, H)
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  threads: {args.threads}  "
          f"L{L} d{d} V{args.V} T{args.T} B{args.B} K{args.K}{'  plain readout' if args.plain_readout else ''}")

    def patch(module):  # noqa: ANN001, ANN202
        return mock.patch.object(module, "tied_readout", _plain) if args.plain_readout else nullcontext()
    model = GPT(cfg, generator=torch.Generator().manual_seed(0))
    opt = AdamW(dict(model.named_parameters()), param_settings(model), TC)
    b1 = torch.randint(0, args.V, (args.B, args.T + 1))
    with patch(gpt):
        cols = {"one at a time": per_op_ms(lambda: train_step(model, opt, b1, 1e-4, 1.0, None), args.steps, args.K,
                                            args.shapes)}
    if args.K > 1:
        st = _Stack(cfg, list(range(args.K)), torch.device("cpu"))
        sopt = AdamW(st.params, st.settings, TC)
        bK = torch.randint(0, args.V, (args.K, args.B, args.T + 1))
        with patch(gpt_stack):
            cols["stacked"] = per_op_ms(lambda: _step(st, sopt, bK, 1e-4, 1.0, None), args.steps, 1, args.shapes)
    totals = {c: sum(v.values()) for c, v in cols.items()}
    keys = sorted(set().union(*cols.values()), key=lambda k: -max(v.get(k, 0.0) for v in cols.values()))
    w = 90 if args.shapes else 58
    print(f"{'op (self CPU, ms per step of K models)':<{w}}" + "".join(f"{c:>22}" for c in cols))
    for k in keys[:args.rows]:
        print(f"{k[:w]:<{w}}" + "".join(f"{v.get(k, 0.0):14.2f} {100 * v.get(k, 0.0) / totals[c]:5.1f} %"
                                         for c, v in cols.items()))
    print(f"{'total':<{w}}" + "".join(f"{totals[c]:14.2f}        " for c in cols))


if __name__ == "__main__":
    main()

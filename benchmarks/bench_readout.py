"""The tied output layer's backward (``models/readout.py``) against autograd's plain product.

Two comparisons, each interleaved in one process (ratios of medians; absolute times move with
load):

1. the narrow products alone, at the shapes autograd uses for ``h @ W.t()`` and the shapes
   ``tied_readout`` uses instead (single model and K = 8 stacked);
2. whole training steps (forward, cross-entropy, backward, AdamW) of the demo's rungs
   (V 512, T 128, B 32) with ``tied_readout`` against the same model whose readout is the
   plain ``x @ W.t()`` on (B, T, d) as it was written before — one model, and K = 8 stacked models.

    PYTHONPATH=src python benchmarks/bench_readout.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from unittest import mock

import torch

from proxyscale.models import gpt, gpt_stack
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import cpu_info, keep_freed_memory
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

TC = TrainConfig(device="cpu", precision="fp32")


def _plain(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The readout as written before: ``x @ W.t()`` on the (B, T, d) hidden states (K stacked:
    ``bmm``), differentiated by autograd."""
    if h.ndim == 3:
        return torch.bmm(h, w.transpose(1, 2))
    return (h.view(32, -1, h.shape[-1]) @ w.t()).view(h.shape[0], -1)


def _median_ms(fns: dict, reps: int, warmup: int = 2) -> dict:
    times: dict = {k: [] for k in fns}
    for i in range(warmup + reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            if i >= warmup:
                times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _product_times(mm, h: torch.Tensor, w: torch.Tensor, g: torch.Tensor, reps: int) -> dict:  # noqa: ANN001
    return _median_ms({"dW autograd": lambda: mm(g.mT, h), "dW ours": lambda: mm(h.mT, g).mT,
                       "dh autograd": lambda: mm(g, w), "dh transposed": lambda: mm(w.mT, g.mT).mT}, reps)


def products(reps: int) -> None:
    N, V = 4096, 512
    print(f"1. narrow products, N={N}, V={V} (ms; autograd's form / ours)")
    for K in (1, 8):
        for d in (4, 8, 16, 32, 64):
            lead = (K,) if K > 1 else ()
            h, w, g = torch.randn(*lead, N, d), torch.randn(*lead, V, d), torch.randn(*lead, N, V)
            m = _product_times(torch.bmm if K > 1 else torch.mm, h, w, g, reps)
            print(f"  K={K} d={d:<3} weight grad {m['dW autograd']:7.2f} / {m['dW ours']:6.2f} "
                  f"({m['dW autograd'] / m['dW ours']:.2f}x)   input grad {m['dh autograd']:6.2f} / "
                  f"{m['dh transposed']:6.2f} transposed ({m['dh autograd'] / m['dh transposed']:.2f}x)")


def steps(reps: int) -> None:
    print("2. training steps, V512 T128 B32 (ms per model; plain readout / tied_readout)")
    for L, d, H in ((1, 4, 1), (1, 8, 1), (1, 16, 2), (2, 32, 2), (2, 64, 4)):
        cfg = GPTConfig(512, 128, d, L, H)
        fns = {}
        for name, patch in (("plain", True), ("ours", False)):
            model = GPT(cfg, generator=torch.Generator().manual_seed(0))
            opt = AdamW(dict(model.named_parameters()), param_settings(model), TC)
            stack = _Stack(cfg, list(range(8)), torch.device("cpu"))
            sopt = AdamW(stack.params, stack.settings, TC)
            b1, b8 = torch.randint(0, 512, (32, 129)), torch.randint(0, 512, (8, 32, 129))

            def one(model=model, opt=opt, b1=b1, patch=patch):
                with mock.patch.object(gpt, "tied_readout", _plain) if patch else nullcontext():
                    train_step(model, opt, b1, 1e-4, 1.0, None)

            def eight(stack=stack, sopt=sopt, b8=b8, patch=patch):
                with mock.patch.object(gpt_stack, "tied_readout", _plain) if patch else nullcontext():
                    _step(stack, sopt, b8, 1e-4, 1.0, None)
            fns[f"one {name}"], fns[f"K8 {name}"] = one, eight
        m = _median_ms(fns, reps)
        print(f"  L{L} d{d:<3} one model {m['one plain']:7.2f} / {m['one ours']:7.2f} "
              f"({m['one plain'] / m['one ours']:.2f}x)   K=8 stacked {m['K8 plain'] / 8:7.2f} / "
              f"{m['K8 ours'] / 8:7.2f} ({m['K8 plain'] / m['K8 ours']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  torch kernels: {info['capability']}  "
          f"threads: {args.threads}  torch {torch.__version__}")
    products(args.reps)
    steps(args.reps)


if __name__ == "__main__":
    main()

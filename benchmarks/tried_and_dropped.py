"""Speed-ups tried for tiny-model training and dropped, kept runnable (not a test).

Each subcommand times one idea against what the project does, interleaved in one process, 1
thread by default (ratios of medians; >1 means the idea is faster):

- ``compile``: ``torch.compile`` of the stacked loss of K = 8 models (L2 d32 V512 T64 B8)
  against eager stacking and against one model at a time; prints the compile time too;
- ``xent``: cross-entropy over cache-sized row blocks (a custom autograd function using torch's
  softmax per block) against ``F.cross_entropy``;
- ``fused``: the output layer and the cross-entropy fused over row chunks (logits, softmax and
  both gradients per chunk) against ``tied_readout`` + ``F.cross_entropy``;
- ``attention``: plain-op attention and torch's math kernel against the fused kernel.

    PYTHONPATH=src python benchmarks/tried_and_dropped.py compile
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.models.gpt_stack import stacked_forward
from proxyscale.models.readout import tied_readout
from proxyscale.train.batched import _Stack, _step
from proxyscale.train.calibrate import cpu_info, keep_freed_memory
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, clip_grad_norms, param_settings

TC = TrainConfig(device="cpu", precision="fp32")


def medians_ms(fns: dict, reps: int = 15, warmup: int = 3) -> dict:
    times: dict = {k: [] for k in fns}
    for i in range(warmup + reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            if i >= warmup:
                times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def bench_compile() -> None:
    K, cfg, B = 8, GPTConfig(512, 64, 32, 2, 2), 8
    stack = _Stack(cfg, list(range(K)), torch.device("cpu"))
    opt = AdamW(stack.params, stack.settings, TC)

    def losses(params, x, y):  # noqa: ANN001
        logits = stacked_forward(params, cfg, x)
        return F.cross_entropy(logits.reshape(-1, 512), y.reshape(-1), reduction="none").view(K, -1).mean(1)
    compiled = torch.compile(losses, dynamic=False)
    bK = torch.randint(0, 512, (K, B, 65))

    def compiled_step() -> None:
        compiled(stack.params, bK[..., :-1], bK[..., 1:]).sum().backward()
        ps = list(stack.params.values())
        clip_grad_norms([p.grad for p in ps], 1.0, batch_dims=1)
        opt.step(1e-4)
        for p in ps:
            p.grad = None
    t = time.perf_counter()
    compiled_step()
    print(f"compile (first call): {time.perf_counter() - t:.1f} s")
    model = GPT(cfg, generator=torch.Generator().manual_seed(0))
    mopt = AdamW(dict(model.named_parameters()), param_settings(model), TC)
    eager = _Stack(cfg, list(range(K)), torch.device("cpu"))
    eopt = AdamW(eager.params, eager.settings, TC)
    m = medians_ms({"one at a time": lambda: [train_step(model, mopt, bK[0], 1e-4, 1.0, None) for _ in range(K)],
                    "stacked eager": lambda: _step(eager, eopt, bK, 1e-4, 1.0, None),
                    "stacked compiled": compiled_step})
    for k, v in m.items():
        print(f"  {k:<18} {v:7.2f} ms per K = {K} models   {m['one at a time'] / v:.2f}x")


class _BlockNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: ANN001
        nll = torch.empty(z.shape[0])
        for s in range(0, z.shape[0], rows):
            nll[s:s + rows] = -torch.log_softmax(z[s:s + rows], -1).gather(1, y[s:s + rows, None]).squeeze(1)
        ctx.save_for_backward(z, y)
        ctx.rows = rows
        return nll

    @staticmethod
    def backward(ctx, go: torch.Tensor):  # noqa: ANN001, ANN205
        z, y = ctx.saved_tensors
        g = torch.empty_like(z)
        for s in range(0, z.shape[0], ctx.rows):
            gob = go[s:s + ctx.rows, None]
            p = torch.softmax(z[s:s + ctx.rows], -1).mul_(gob)
            g[s:s + ctx.rows] = p.scatter_add_(1, y[s:s + ctx.rows, None], -gob)
        return g, None, None


def _xent_case(R: int, V: int) -> None:
    z = torch.randn(R, V, requires_grad=True)
    y = torch.randint(0, V, (R,))
    rows = max(1, 512 * 1024 // (4 * V))  # a block of about 512 KB
    m = medians_ms({"F.cross_entropy": lambda: F.cross_entropy(z, y, reduction="none").mean().backward(),
                    "blocks": lambda: _BlockNLL.apply(z, y, rows).mean().backward()})
    print(f"  rows {R:6d} V {V:5d}: F.cross_entropy {m['F.cross_entropy']:7.2f} ms, blocks {m['blocks']:7.2f} ms "
          f"({m['F.cross_entropy'] / m['blocks']:.2f}x)")


def bench_xent() -> None:
    for R, V in ((512, 512), (4096, 512), (32768, 512), (4096, 4096)):
        _xent_case(R, V)


class _FusedReadoutNLL(torch.autograd.Function):
    """Mean cross-entropy of h·Wᵀ; the gradients are computed in the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: ANN001
        N = h.shape[0]
        dwt, dht, loss = torch.zeros(w.shape[1], w.shape[0]), torch.empty(h.shape[1], N), torch.zeros(())
        for s in range(0, N, rows):
            hc, yc = h[s:s + rows], y[s:s + rows, None]
            z = hc @ w.t()
            lse = torch.logsumexp(z, -1, keepdim=True)
            loss += (lse - z.gather(1, yc)).sum()
            p = z.sub_(lse).exp_().scatter_add_(1, yc, torch.full(yc.shape, -1.0))
            dwt.addmm_(hc.t(), p)
            dht[:, s:s + rows] = w.t() @ p.t()
        ctx.save_for_backward(dht / N, dwt / N)
        return loss / N

    @staticmethod
    def backward(ctx, go: torch.Tensor):  # noqa: ANN001, ANN205
        dht, dwt = ctx.saved_tensors
        return dht.t() * go, dwt.t() * go, None, None


def _fused_case(N: int, V: int, d: int) -> None:
    h = torch.randn(N, d, requires_grad=True)
    w = (0.02 * torch.randn(V, d)).requires_grad_()
    y = torch.randint(0, V, (N,))
    fns = {"base": lambda: F.cross_entropy(tied_readout(h, w), y).backward()}
    for rows in (64, 256, 1024):
        fns[rows] = lambda rows=rows: _FusedReadoutNLL.apply(h, w, y, rows).backward()
    m = medians_ms(fns, reps=10)
    print(f"  V {V:5d} d {d:3d}: base {m['base']:7.2f} ms; fused, rows 64/256/1024: "
          + " / ".join(f"{m[r]:.2f}" for r in (64, 256, 1024))
          + f"  (best {m['base'] / min(m[r] for r in (64, 256, 1024)):.2f}x)")


def bench_fused() -> None:
    for V in (512, 4096):
        for d in (4, 16, 32, 64, 128, 256):
            if V == 4096 or d <= 64:
                _fused_case(4096, V, d)


def _attention_case(B: int, H: int, T: int, hd: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (torch.randn(B, H, T, hd, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, hd)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)

    def plain() -> None:
        s = (q @ k.transpose(-1, -2) * hd ** -0.5).masked_fill(mask, float("-inf"))
        (torch.softmax(s, -1) @ v).backward(g)

    def math_kernel() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
    m = medians_ms({"fused": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g),
                    "plain": plain, "math": math_kernel})
    print(f"  B{B} H{H} T{T} head dim {hd:2d}: fused {m['fused']:6.2f} ms, plain ops {m['plain']:6.2f} "
          f"({m['fused'] / m['plain']:.2f}x), math kernel {m['math']:6.2f} ({m['fused'] / m['math']:.2f}x)")


def bench_attention() -> None:
    for shape in ((32, 1, 128, 4), (32, 1, 128, 8), (32, 2, 128, 8), (32, 2, 128, 16), (32, 4, 128, 16),
                  (8, 2, 64, 16), (32, 4, 128, 64)):
        _attention_case(*shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("idea", choices=["compile", "xent", "fused", "attention"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  threads: {args.threads}  idea: {args.idea}")
    {"compile": bench_compile, "xent": bench_xent, "fused": bench_fused, "attention": bench_attention}[args.idea]()


if __name__ == "__main__":
    main()

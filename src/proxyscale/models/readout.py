"""The tied output layer (logits = h · Wᵀ), with a hand-written backward for narrow models.

For d_model ≤ :data:`NARROW` both products of the backward pass are computed as short, wide
matrices that are then transposed (a free view): the input gradient as ``(Wᵀ·gᵀ)ᵀ`` instead of
``g·W`` (N × d) and the weight gradient as ``(hᵀ·g)ᵀ`` instead of ``gᵀ·h`` (V × d). MKL's sgemm
is several times slower on the tall, narrow outputs. Autograd picked the slow forms in two
places: the input gradient whenever d is narrow, and the weight gradient when the readout was
written as ``x @ W.t()`` on (B, T, d) hidden states (the folded 3-D product). Measured on a
2-core AMD EPYC (Zen 4), 1 thread, N = 4,096 rows, V = 512 (``benchmarks/bench_readout.py``,
docs/benchmarks.md "Narrow products"):

- input gradient, slow / transposed: 2.61 / 1.37 ms at d = 4, 2.68 / 1.30 at d = 8, but
  1.28 / 1.34 at d = 16 and 2.38 / 2.39 at d = 32 — hence the threshold;
- weight gradient: 6.44 / 0.93 ms at d = 4, 6.67 / 1.08 at d = 8 (1.03–1.30× at d = 16–64);
- whole training steps of one model (V 512, T 128, B 32): 1.49× at d = 4, 1.33× at d = 8.

Wider models use the plain product on 2-D hidden states, for which autograd already picks the
fast weight-gradient form. Both forms multiply the same numbers; only the order of additions
inside the BLAS may differ (float rounding). Under ``torch.func`` transforms (per-example
gradients for TRAK and DsDm) the plain product is used, so those paths keep their batching
rules. Under autocast the product runs in the autocast dtype and the gradients come back in
the inputs' dtypes, as autocast's own product does.
"""
from __future__ import annotations

import torch

__all__ = ["NARROW", "tied_readout"]

NARROW = 8  # the hand-written backward is used for d_model up to this


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b) if a.ndim == 3 else a @ b


class _TiedReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's ctx
        # Under autocast the product runs in the autocast dtype, as autocast would run it.
        amp = _autocast_dtype(h.device.type)
        hc, wc = (h, w) if amp is None else (h.to(amp), w.to(amp))
        ctx.save_for_backward(hc, wc)
        ctx.dtypes = (h.dtype, w.dtype)
        with torch.autocast(h.device.type, enabled=False):
            return _mm(hc, wc.mT)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: ANN001
        h, w = ctx.saved_tensors
        g = g.to(h.dtype)
        dh = dw = None
        if ctx.needs_input_grad[0]:
            dh = _mm(w.mT, g.mT).mT.to(ctx.dtypes[0])  # (d × N) computed, (N × d) returned
        if ctx.needs_input_grad[1]:
            dw = _mm(h.mT, g).mT.to(ctx.dtypes[1])  # (d × V) computed, (V × d) returned
        return dh, dw


def _wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def tied_readout(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Logits ``h · wᵀ``: h (N, d) with w (V, d), or stacked h (K, N, d) with w (K, V, d)."""
    if h.shape[-1] > NARROW or _wrapped(h) or _wrapped(w) or not (h.requires_grad or w.requires_grad):
        return _mm(h, w.mT)
    return _TiedReadout.apply(h, w)

"""The tied output layer (logits = h · Wᵀ) with a backward pass that avoids slow BLAS shapes.

Autograd differentiates ``h @ W.t()`` with two products whose *outputs are tall and narrow*:
the weight gradient as ``gᵀ·h`` (V × d) and the input gradient as ``g·W`` (N × d). For a
narrow model (d of 4–64 against V = 512 and N = B·T = 4,096 rows) MKL's sgemm is much slower
on such outputs than on the same product computed the other way round, as a short, wide
matrix that is then transposed (a free view). Measured on a 2-core AMD EPYC (Zen 4), 1 thread,
N = 4,096, V = 512 (docs/benchmarks.md, "Narrow products"):

- weight gradient, ``gᵀ·h`` against ``(hᵀ·g)ᵀ``: 6.5 / 0.56 ms at d = 4, 5.4 / 0.72 at d = 8,
  1.9 / 1.2 at d = 16, 2.5 / 1.8 at d = 32, 3.8 / 3.4 at d = 64; the batched form used when
  K models are stacked (K = 8): 55 / 8.1 ms at d = 4;
- input gradient, ``g·W`` against ``(Wᵀ·gᵀ)ᵀ``: 2.5 / 0.52 ms at d = 4, 2.9 / 1.0 at d = 8, but
  1.4 / 2.1 at d = 16 and 2.4 / 2.7 at d = 32, so the transposed form is used only for
  ``d <= NARROW``.

Both forms multiply the same numbers; only the order of the additions inside the BLAS may
differ (float rounding). The forward product is autograd's. Under ``torch.func`` transforms
(per-example gradients for TRAK and DsDm) the plain product is used, so those paths keep their
batching rules.
"""
from __future__ import annotations

import torch

__all__ = ["NARROW", "tied_readout"]

NARROW = 8  # input gradients are computed transposed for d_model up to this


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
            narrow = h.shape[-1] <= NARROW
            dh = (_mm(w.mT, g.mT).mT if narrow else _mm(g, w)).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            dw = _mm(h.mT, g).mT.to(ctx.dtypes[1])  # (d × V) computed, (V × d) returned
        return dh, dw


def _wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def tied_readout(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Logits ``h · wᵀ``: h (N, d) with w (V, d), or stacked h (K, N, d) with w (K, V, d)."""
    if _wrapped(h) or _wrapped(w) or not (h.requires_grad or w.requires_grad):
        return _mm(h, w.mT)
    return _TiedReadout.apply(h, w)

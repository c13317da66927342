"""The forward pass of K same-shape GPTs whose parameters are stacked along a leading axis.

It computes, for every k, exactly the function of :class:`proxyscale.models.gpt.GPT` with the
parameters ``{name: p[k]}``, but written directly on the stacked tensors (``baddbmm`` for the
linear layers, one ``bmm`` for the tied output layer) instead of ``torch.func.vmap`` over a
``functional_call``. Two reasons, both measured (docs/benchmarks.md):

- attention can use the fused ``scaled_dot_product_attention`` kernel by folding the model
  axis into its batch axis (vmap has no batching rule for the fused CPU kernel, so the vmapped
  path had to materialise K·B·H·T² scores and a softmax over them — the main cost at d64/T128);
- no functorch dispatch layer around every op (on small models most of a step is overhead).

Parameter names are those of ``GPT.named_parameters()``; every tensor has a leading K axis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ladder import GPTConfig
from .readout import tied_readout

__all__ = ["stacked_forward"]


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-model LayerNorm of x (K, N, d) with weight/bias (K, d) (eps 1e-5, as nn.LayerNorm)."""
    return torch.addcmul(b.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w.unsqueeze(1))


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-model x (K, N, in) @ w (K, out, in)ᵀ + b (K, out)."""
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _attention(p: dict, pre: str, x: torch.Tensor, cfg: GPTConfig, B: int, T: int) -> torch.Tensor:
    K, _, d = x.shape
    H = cfg.n_heads
    qkv = _linear(x, p[pre + "qkv.weight"], p[pre + "qkv.bias"])  # (K, B·T, 3d)
    qkv = qkv.view(K * B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # 3 × (K·B, H, T, hd)
    y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True, scale=cfg.attn_scale)
    y = y.transpose(1, 2).reshape(K, B * T, d)
    return _linear(y, p[pre + "attn_out.weight"], p[pre + "attn_out.bias"])


def stacked_forward(params: dict[str, torch.Tensor], cfg: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    """Logits (K, B, T, V) of K stacked GPTs for token ids idx (K, B, T)."""
    K, B, T = idx.shape
    V, d = cfg.vocab_size, cfg.d_model
    if T > cfg.context:
        raise ValueError(f"sequence length {T} exceeds the model context {cfg.context}")
    wte = params["wte.weight"]  # (K, V, d)
    offsets = (torch.arange(K, device=idx.device) * V).view(K, 1, 1)
    x = F.embedding(idx + offsets, wte.reshape(K * V, d)).view(K, B, T, d)
    x = (x + params["wpe.weight"][:, :T].unsqueeze(1)).view(K, B * T, d)
    for i in range(cfg.n_layers):
        pre = f"blocks.{i}."
        h = _layer_norm(x, params[pre + "ln_1.weight"], params[pre + "ln_1.bias"])
        x = x + _attention(params, pre, h, cfg, B, T)
        h = _layer_norm(x, params[pre + "ln_2.weight"], params[pre + "ln_2.bias"])
        h = F.gelu(_linear(h, params[pre + "fc.weight"], params[pre + "fc.bias"]))
        x = x + _linear(h, params[pre + "proj.weight"], params[pre + "proj.bias"])
    x = _layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    if cfg.output_mult != 1.0:
        x = x * cfg.output_mult
    return tied_readout(x, wte).view(K, B, T, V)

"""A GPT-2/MPT-style decoder (SPEC §2) with optional μP.

Learned positional embeddings, pre-LayerNorm (with bias), causal self-attention, a GELU MLP of
width 4d, biases on every linear layer, a final LayerNorm and an output layer tied to the token
embedding. The parameter count is exactly ``V·d + T·d + L·(12·d² + 13·d) + 2·d``.

μP (maximal update parametrisation; off by default, an extension of the paper for the GPT) is
relative to a base width ``mup_base_width``; ``width_mult = d_model / mup_base_width``:

- hidden matrices (qkv, attention output, both MLP matrices) are initialised with std
  ``init_std / sqrt(width_mult)`` and trained with Adam LR ``lr / width_mult``;
- embeddings, biases and LayerNorm parameters keep width-independent init and LR;
- attention scores are scaled by ``1/d_head`` (times ``sqrt(base d_head)``, so the base width
  matches the usual ``1/sqrt(d_head)``);
- the output logits are multiplied by ``1/width_mult``. The output layer is tied to the input
  embedding, so it cannot get its own init or LR; it is treated as an embedding (constant init
  and LR) and the multiplier alone keeps the logits' update O(1) — the same choice as the
  ``mup`` package's shared readout.

At ``d_model == mup_base_width`` a μP model equals the standard model exactly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..errors import ConfigError, StoreError
from .ladder import GPTConfig, param_count
from .readout import tied_readout

__all__ = ["GPT", "GPTConfig", "ParamKind", "load_gpt", "model_config_dict", "param_count"]

ParamKind = Literal["hidden", "embedding", "vector"]


class Block(nn.Module):
    """One pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.scale = cfg.attn_scale
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def attention(self, x: torch.Tensor, fused: bool) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 × (B, T, d)
        q, k, v = (t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            # Plain ops: torch.func.vmap has batching rules for these but not for the fused CPU kernel.
            # Scale q (T·hd values) rather than the scores (T·T), and mask in place: matmul's
            # backward needs only q and k, so overwriting its output is safe.
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            y = scores.masked_fill_(future, float("-inf")).softmax(dim=-1) @ v
        return self.attn_out(y.transpose(1, 2).reshape(B, T, d))

    def forward(self, x: torch.Tensor, fused: bool = True) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x), fused)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    """Decoder-only LM: ``forward(idx (B, T)) -> logits (B, T, V)``.

    ``checkpoint_blocks = True`` (TrainConfig.activation_checkpointing) keeps only each block's
    input during a training forward and recomputes the block's activations in backward
    (``torch.utils.checkpoint``, non-reentrant): less memory, about one more forward of compute,
    the same gradients."""

    checkpoint_blocks: bool = False

    def __init__(self, cfg: GPTConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 init (normal(0, init_std), residual projections / sqrt(2L), zero biases, unit
        LayerNorm), with hidden matrices narrowed by 1/sqrt(width_mult) under μP."""
        cfg = self.cfg
        hidden_std = cfg.init_std / math.sqrt(cfg.width_mult)
        resid_std = hidden_std / math.sqrt(2 * cfg.n_layers)  # GPT-2: keeps the residual sum O(1) in depth
        for emb in (self.wte, self.wpe):
            emb.weight.normal_(0.0, cfg.init_std, generator=generator)
        for block in self.blocks:
            for lin, std in ((block.qkv, hidden_std), (block.attn_out, resid_std),
                             (block.fc, hidden_std), (block.proj, resid_std)):
                lin.weight.normal_(0.0, std, generator=generator)
                lin.bias.zero_()
        for ln in (m for m in self.modules() if isinstance(m, nn.LayerNorm)):
            ln.weight.fill_(1.0)
            ln.bias.zero_()

    def param_kinds(self) -> dict[str, ParamKind]:
        """μP role of each parameter: 'hidden' (both dims scale with width), 'embedding'
        (wte/wpe; wte is also the output layer) or 'vector' (biases, LayerNorm)."""
        out: dict[str, ParamKind] = {}
        for name, p in self.named_parameters():
            if name in ("wte.weight", "wpe.weight"):
                out[name] = "embedding"
            else:
                out[name] = "hidden" if p.ndim == 2 else "vector"
        return out

    def forward(self, idx: torch.Tensor, fused_attention: bool = True) -> torch.Tensor:
        """Logits (B, T, V) for token ids ``idx`` (B, T). ``fused_attention=False`` uses plain
        ops (needed under ``torch.func.vmap``); both compute the same function."""
        T = idx.shape[-1]
        if T > self.cfg.context:
            raise ConfigError(f"sequence length {T} exceeds the model context {self.cfg.context}; "
                              "shorten the inputs or build the model with a larger context")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, d)
        remat = self.checkpoint_blocks and torch.is_grad_enabled()
        for block in self.blocks:
            if remat:
                x = torch.utils.checkpoint.checkpoint(block, x, fused_attention, use_reentrant=False)
            else:
                x = block(x, fused_attention)
        x = self.ln_f(x)
        if self.cfg.output_mult != 1.0:  # scale the (B, T, d) input, not the V-wide logits: cheaper
            x = x * self.cfg.output_mult
        return tied_readout(x.reshape(-1, x.shape[-1]), self.wte.weight).view(*x.shape[:-1], -1)  # (B, T, V)


def model_config_dict(cfg: GPTConfig) -> dict:
    """The JSON form written beside trained weights (``model.json``)."""
    from ..config import to_dict
    from ..store import FORMAT_VERSION

    return {"format_version": FORMAT_VERSION, "family": "gpt", "model": to_dict(cfg)}


def load_gpt(run_dir: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Load a model written by :func:`proxyscale.train.train_lm` (``model.json`` + ``model.safetensors``)."""
    from ..config import from_dict
    from ..store import load_weights, read_json

    d = Path(run_dir)
    if not (d / "model.safetensors").is_file() or not (d / "model.json").is_file():
        raise StoreError(f"{d}: no trained model here (model.safetensors/model.json missing); "
                         "train it first or check the path")
    meta = read_json(d / "model.json")
    cfg = from_dict(GPTConfig, meta["model"], where=f"{d / 'model.json'}:model")
    model = GPT(cfg)
    model.load_state_dict(load_weights(d / "model.safetensors"))
    return model.to(device)

"""The small MLP of SPEC §8 (64-128-10 on flattened 8x8 digits), with a width multiplier.

``depth`` hidden layers of ``round(hidden * width_mult)`` ReLU units and a linear readout.
With ``mup`` on, it is parametrised by μP relative to a model of ``base_width_mult`` (see
:mod:`proxyscale.models.mup`); the first layer's weights and all hidden biases are then
vector-like, hidden-to-hidden weights matrix-like.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .mup import ParamScaling, infer_scalings, meta_shapes, mup_rescale_init_, readout_multiplier, standard_scalings


@dataclass(frozen=True)
class MLPConfig:
    """MLP settings: ``in_dim → hidden·w (× depth) → n_classes``."""

    in_dim: int = 64
    hidden: int = 128
    n_classes: int = 10
    depth: int = 1
    width_mult: float = 1.0
    mup: bool = False
    base_width_mult: float = 1.0
    readout_zero_init: bool = False

    def __post_init__(self) -> None:
        if self.in_dim < 1 or self.hidden < 1 or self.depth < 1 or self.n_classes < 2:
            raise ConfigError("MLP needs in_dim ≥ 1, hidden ≥ 1, depth ≥ 1 and n_classes ≥ 2")
        if self.width_mult <= 0 or self.base_width_mult <= 0:
            raise ConfigError(f"width_mult ({self.width_mult}) and base_width_mult "
                              f"({self.base_width_mult}) must be positive")

        if self.mup and round(self.hidden * self.base_width_mult) < 1:
            raise ConfigError(f"base_width_mult={self.base_width_mult} gives a 0-unit base model; raise it")

    def width(self) -> int:
        return max(1, round(self.hidden * self.width_mult))


class MLPBody(nn.Module):
    """The MLP's layers (also used to read parameter shapes on the meta device)."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        h = cfg.width()
        dims = [cfg.in_dim] + [h] * cfg.depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.readout = nn.Linear(h, cfg.n_classes)


class MLP(MLPBody):
    """``forward`` maps (B, in_dim) inputs (or (B, C, H, W) images, flattened) to (B, n_classes)."""

    readout_name = "readout"

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.scalings = mlp_scalings(cfg)
        self.readout_mult = readout_multiplier(self.scalings, self.readout_name)
        if cfg.readout_zero_init:
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        if cfg.mup:
            mup_rescale_init_(self, self.scalings, self.readout_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, h)
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            h = F.relu(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, n_classes)
        return self.readout(self.features(x) * self.readout_mult)


def mlp_scalings(cfg: MLPConfig) -> dict[str, ParamScaling]:
    """Per-parameter μP scalings of ``cfg`` (all ones when ``cfg.mup`` is off)."""
    shapes = meta_shapes(lambda: MLPBody(cfg))
    if not cfg.mup:
        return standard_scalings(shapes)
    base = meta_shapes(lambda: MLPBody(replace(cfg, width_mult=cfg.base_width_mult)))
    delta = meta_shapes(lambda: MLPBody(replace(cfg, width_mult=2 * cfg.base_width_mult)))
    return infer_scalings(shapes, base, delta)

"""ResNet-18 (CIFAR variant) with a width multiplier, for the vision ladder.

CIFAR variant: a 3x3 stride-1 stem and no max-pool, then 4 stages of 2 BasicBlocks with
``64w, 128w, 256w, 512w`` channels, global average pooling and a linear readout. The
parameter count grows ~w²: 11,173,962 at w = 1 on CIFAR-10, 44.6K at w = 1/16 and 714M at
w = 8 (SPEC §5).

**Normalisation: GroupNorm, not BatchNorm.** BatchNorm couples the examples of a batch
and carries running statistics (mutable buffers). That breaks the things this ladder is
for: per-example gradients (TRAK) need an output that depends on one example only, and
batched training of many models with ``torch.func.vmap`` cannot update buffers in place.
GroupNorm normalises each example on its own, has no buffers, and behaves identically in
train and eval mode. Groups hold ``group_size`` channels (4 by default) so each group's
statistics cover the same number of values at every width — at w = 1/16 the 4-channel
stage is one group (layer norm). The affine parameters match BatchNorm's, so parameter
counts equal the BatchNorm ResNet-18's.

**Small images.** ``strides`` sets each stage's first stride. CIFAR uses (1, 2, 2, 2)
(32→4 pixels). For 8x8 digits use (1, 2, 2, 1) (see :func:`strides_for`): 8→8→4→2→2, so
the last stage still sees a 2x2 map rather than a single pixel, where per-example group
statistics would be degenerate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .mup import ParamScaling, infer_scalings, meta_shapes, mup_rescale_init_, readout_multiplier, standard_scalings

STAGE_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet-18 settings. ``mup`` turns on μP relative to a model of ``base_width_mult``."""

    width_mult: float = 1.0
    n_classes: int = 10
    in_channels: int = 3
    mup: bool = False
    base_width_mult: float = 1.0
    strides: tuple[int, int, int, int] = (1, 2, 2, 2)
    group_size: int = 4
    readout_zero_init: bool = False

    def __post_init__(self) -> None:
        if self.width_mult <= 0 or self.base_width_mult <= 0:
            raise ConfigError(f"width_mult ({self.width_mult}) and base_width_mult "
                              f"({self.base_width_mult}) must be positive, e.g. 0.0625 … 8")
        if self.n_classes < 2 or self.in_channels < 1 or self.group_size < 1:
            raise ConfigError("n_classes must be ≥ 2, in_channels ≥ 1 and group_size ≥ 1")
        if self.mup and round(STAGE_WIDTHS[0] * self.base_width_mult) < 1:
            raise ConfigError(f"base_width_mult={self.base_width_mult} gives a 0-channel base model; "
                              "use at least 1/64 (1/16 is the paper ladder's narrowest rung)")
        if len(self.strides) != 4 or any(s not in (1, 2) for s in self.strides):
            raise ConfigError(f"strides {self.strides}: give 4 stage strides, each 1 or 2")

    def widths(self) -> tuple[int, ...]:
        return tuple(max(1, round(c * self.width_mult)) for c in STAGE_WIDTHS)


def strides_for(image_size: int) -> tuple[int, int, int, int]:
    """Stage strides that leave at least a 2x2 map before pooling: (1,2,2,2) for 32x32,
    (1,2,2,1) for 8x8."""
    strides, size = [1], image_size
    for _ in range(3):
        s = 2 if size // 2 >= 2 else 1
        strides.append(s)
        size //= s
    return tuple(strides)  # type: ignore[return-value]


def _groups(channels: int, group_size: int) -> int:
    g = max(1, channels // group_size)
    while channels % g:
        g -= 1
    return g


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(c_out, group_size), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(c_out, group_size), c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.GroupNorm(_groups(c_out, group_size), c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNetBody(nn.Module):
    """The ResNet's layers without μP bookkeeping (also used to read shapes on the meta device)."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        w = cfg.widths()
        self.stem = nn.Conv2d(cfg.in_channels, w[0], 3, 1, 1, bias=False)
        self.stem_norm = nn.GroupNorm(_groups(w[0], cfg.group_size), w[0])
        blocks, c_in = [], w[0]
        for c_out, stride in zip(w, cfg.strides):
            blocks += [BasicBlock(c_in, c_out, stride, cfg.group_size),
                       BasicBlock(c_out, c_out, 1, cfg.group_size)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.readout = nn.Linear(c_in, cfg.n_classes)


class ResNet(ResNetBody):
    """ResNet-18 of ``cfg``; ``forward`` maps (B, C, H, W) images to (B, n_classes) logits."""

    readout_name = "readout"

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.scalings = resnet_scalings(cfg)
        self.readout_mult = readout_multiplier(self.scalings, self.readout_name)
        if cfg.readout_zero_init:
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        if cfg.mup:
            mup_rescale_init_(self, self.scalings, self.readout_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 512w)
        h = F.relu(self.stem_norm(self.stem(x)))
        h = self.blocks(h)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.readout(self.features(x) * self.readout_mult)


def resnet_scalings(cfg: ResNetConfig) -> dict[str, ParamScaling]:
    """Per-parameter μP scalings of ``cfg`` (all ones when ``cfg.mup`` is off)."""
    shapes = meta_shapes(lambda: ResNetBody(cfg))
    if not cfg.mup:
        return standard_scalings(shapes)
    base = meta_shapes(lambda: ResNetBody(replace(cfg, width_mult=cfg.base_width_mult)))
    delta = meta_shapes(lambda: ResNetBody(replace(cfg, width_mult=2 * cfg.base_width_mult)))
    return infer_scalings(shapes, base, delta)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameter values."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

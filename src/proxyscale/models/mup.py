"""Maximal update parametrisation (μP) for SGD, derived from parameter shapes.

μP (Yang & Hu, "Tensor Programs V") makes the *size of feature updates* independent of
width, so one learning rate and one weight decay serve every width of a ladder. Which
dimensions are "width" is read off by comparing parameter shapes of a *base* model with
those of a *delta* model of a different width: a dimension that differs is a width
dimension, and its width multiplier in the actual model is ``dim / base_dim``. Each
parameter then falls into one of three classes (the same rules as the ``mup`` package's
``set_base_shapes`` + ``MuReadout`` + ``MuSGD``):

- **matrix-like** (two width dims, e.g. a hidden conv 64w→64w): default 1/fan-in init;
  SGD learning rate divided by ``fanin_mult / fanout_mult`` (1 when both scale together),
  weight decay multiplied by it.
- **vector-like** (one width dim: the stem conv, biases, norm gains, the readout weight):
  learning rate multiplied by that dimension's multiplier ``r``, weight decay divided by
  ``r`` (so the coupled decay ``lr·wd`` stays put).
- **fixed** (no width dim, e.g. the readout bias): unchanged.

The readout layer's *input* is multiplied by ``1 / r_readout`` in the forward pass, and at
init the readout weight and bias are multiplied by ``sqrt(r_readout)`` (together: an output
of size O(1/sqrt(r)) at init that learns at O(1) speed). Biases of hidden linear/conv layers
are multiplied by ``sqrt(fanin_mult)`` so their init does not shrink with width.

Under the standard parametrisation (SP) every multiplier is 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import torch
from torch import nn

from ..errors import ConfigError

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ParamScaling:
    """How one parameter scales with width: its class and its SGD multipliers."""

    kind: Literal["matrix", "vector", "fixed"]
    width_mult: float  # multiplier of the last width dim (fan-in for matrix-like), 1 if none
    fanin_mult: float  # multiplier of dim 1 (fan-in of a weight), 1 for 1-d parameters
    lr_mult: float
    wd_mult: float


FIXED = ParamScaling("fixed", 1.0, 1.0, 1.0, 1.0)


def param_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name → shape of every parameter of ``module``."""
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


def meta_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the module ``build()`` makes, built on the meta device (no memory)."""
    with torch.device("meta"):
        return param_shapes(build())


def _scaling(shape: tuple[int, ...], base: tuple[int, ...], delta: tuple[int, ...]) -> ParamScaling:
    mults = [d / b if b != dd else None for d, b, dd in zip(shape, base, delta)]
    inf = [i for i, m in enumerate(mults) if m is not None]
    if not inf:
        return FIXED
    width_mult = float(mults[inf[-1]])  # type: ignore[arg-type]
    fanin_mult = float(mults[1]) if len(shape) > 1 and mults[1] is not None else 1.0
    if len(inf) == 1:
        return ParamScaling("vector", width_mult, fanin_mult, width_mult, 1.0 / width_mult)
    if len(inf) == 2 and inf == [0, 1]:
        ratio = fanin_mult / float(mults[0])  # type: ignore[arg-type]
        return ParamScaling("matrix", width_mult, fanin_mult, 1.0 / ratio, ratio)
    raise ConfigError(f"parameter of shape {shape} has width dimensions {inf}; μP here supports "
                      "at most two (fan-out, fan-in) — check the base and delta widths")


def infer_scalings(shapes: Shapes, base: Shapes, delta: Shapes) -> dict[str, ParamScaling]:
    """μP scaling of each parameter of a model with ``shapes``, given the shapes of a base and
    a delta model (same architecture, different widths)."""
    if set(shapes) != set(base) or set(base) != set(delta):
        raise ConfigError("base, delta and target models must have the same parameter names; "
                          f"differences: {sorted(set(shapes) ^ set(base) | set(base) ^ set(delta))}")
    out = {}
    for name, shape in shapes.items():
        if not len(shape) == len(base[name]) == len(delta[name]):
            raise ConfigError(f"parameter {name}: shapes {base[name]}, {delta[name]}, {shape} differ in rank")
        out[name] = _scaling(shape, base[name], delta[name])
    return out


def standard_scalings(shapes: Shapes) -> dict[str, ParamScaling]:
    """The standard parametrisation: every multiplier 1."""
    return {name: FIXED for name in shapes}


def mup_rescale_init_(model: nn.Module, scalings: Mapping[str, ParamScaling], readout: str) -> None:
    """Turn a default-initialised model into a μP-initialised one (call exactly once).

    ``readout`` is the module name of the output layer."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            w = scalings[f"{name}.weight"]
            if name == readout:
                mod.weight.mul_(math.sqrt(w.width_mult))
                if mod.bias is not None:
                    mod.bias.mul_(math.sqrt(w.width_mult))
            elif mod.bias is not None:
                mod.bias.mul_(math.sqrt(w.fanin_mult))


def readout_multiplier(scalings: Mapping[str, ParamScaling], readout: str) -> float:
    """The factor 1/r applied to the readout layer's input (1 under SP)."""
    return 1.0 / scalings[f"{readout}.weight"].width_mult


def sgd_param_groups(model: nn.Module, scalings: Mapping[str, ParamScaling], lr: float,
                     weight_decay: float) -> list[dict]:
    """Parameter groups for ``torch.optim.SGD`` with μP learning-rate / weight-decay multipliers
    (one group per distinct multiplier pair; each group records its ``lr_mult``)."""
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        s = scalings[name]
        g = groups.setdefault((s.lr_mult, s.wd_mult), {
            "params": [], "lr": lr * s.lr_mult, "weight_decay": weight_decay * s.wd_mult,
            "lr_mult": s.lr_mult})
        g["params"].append(p)
    return list(groups.values())

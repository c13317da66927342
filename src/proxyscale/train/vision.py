"""Training vision models (ResNet / MLP) with the paper's one-cycle SGD recipe.

Recipe (SPEC §5, paper Table 16 for CIFAR): SGD with momentum, learning rate rising linearly
from ``initial_lr`` to ``peak_lr`` over the first ``warmup_frac`` of steps, then falling
linearly to ``final_lr``; batch 512; coupled weight decay 5e-4. Under μP each parameter's
learning rate and weight decay carry the model's per-parameter multipliers.

Many models are trained at once as a *stack*: every parameter has a leading model axis
(``torch.func.stack_module_state``) and model ``e`` sees only the training examples where
``masks[e]`` is true. Each epoch, each model visits its subset in its own random order, cut
into the same number of near-equal batches; batches are padded to one width with weight-0
slots, so all models share tensor shapes even when their subsets differ in size. The loss
is the weighted mean over real examples, so padding changes nothing. The stack is updated
either with ``vmap`` over models (``vectorize=True``: one big kernel per op, much faster for
small MLPs) or one model after another with the very same functional step (better for
convolutional nets on CPU, where vmap's batched convolutions gain nothing) — both give the
same numbers. Checkpoints are kept at evenly spaced steps of the last third of training
(what TRAK ensembles use).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import canonical_json
from ..errors import ConfigError, DataError, DivergedError
from ..models.mlp import MLP, MLPConfig
from ..models.resnet import ResNet, ResNetConfig
from ..seeding import derive_seed, np_rng
from ..store import save_weights

ModelConfig = Union[ResNetConfig, MLPConfig]
Params = dict[str, Tensor]


@dataclass(frozen=True)
class VisionTrainConfig:
    """One-cycle SGD settings (defaults: the paper's CIFAR recipe)."""

    epochs: int = 30
    batch_size: int = 512
    peak_lr: float = 0.1
    initial_lr: float = 0.001
    final_lr: float = 0.0
    warmup_frac: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    n_checkpoints: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.n_checkpoints < 1:
            raise ConfigError("epochs, batch_size and n_checkpoints must be ≥ 1")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"warmup_frac={self.warmup_frac} must be in [0, 1)")
        if min(self.peak_lr, self.initial_lr, self.final_lr, self.weight_decay, self.momentum) < 0:
            raise ConfigError("learning rates, weight_decay and momentum must be non-negative")


@dataclass
class TrainResult:
    """Stacked final parameters (E, ...), checkpoints [(step, stacked params)] and losses (E, S)."""

    params: Params
    checkpoints: list[tuple[int, Params]]
    losses: np.ndarray


@dataclass(frozen=True)
class VisionModelSpec:
    """A model choice that round-trips through YAML: ``kind`` picks which config is used."""

    kind: Literal["mlp", "resnet"] = "mlp"
    mlp: MLPConfig = MLPConfig()
    resnet: ResNetConfig = ResNetConfig()

    def config(self) -> ModelConfig:
        return self.mlp if self.kind == "mlp" else self.resnet


def build_model(cfg: ModelConfig) -> nn.Module:
    """The module a config describes (fresh random init from torch's global RNG)."""
    if isinstance(cfg, ResNetConfig):
        return ResNet(cfg)
    if isinstance(cfg, MLPConfig):
        return MLP(cfg)
    raise ConfigError(f"unknown vision model config {type(cfg).__name__}; use ResNetConfig or MLPConfig")


def init_model(cfg: ModelConfig, seed: int) -> nn.Module:
    """A model initialised deterministically from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return build_model(cfg)


def lr_schedule(total_steps: int, cfg: VisionTrainConfig) -> np.ndarray:
    """Learning rate of each step (total_steps,): linear warm-up, then linear decay."""
    s = np.arange(total_steps, dtype=np.float64)
    warm = max(1, round(cfg.warmup_frac * total_steps)) if cfg.warmup_frac > 0 else 0
    up = cfg.initial_lr + (cfg.peak_lr - cfg.initial_lr) * s / max(warm, 1)
    down = cfg.peak_lr + (cfg.final_lr - cfg.peak_lr) * (s - warm) / max(total_steps - warm, 1)
    return np.where(s < warm, up, down)


def batch_plan(masks: np.ndarray, epochs: int, batch_size: int,
               rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """Example indices (E, S, B) and weights (E, S, B) of every step of every model.

    Each epoch, model ``e`` draws a permutation of its subset ``masks[e]`` from ``rngs[e]``
    (via a permutation of all n, so equal seeds give coupled orders) and cuts it into
    ``ceil(max subset size / batch_size)`` near-equal batches; unused slots point at example 0 with weight 0."""
    masks = np.asarray(masks, dtype=bool)
    sizes = masks.sum(axis=1)
    if masks.ndim != 2 or len(rngs) != len(masks):
        raise ConfigError(f"masks must be (E, n) with one rng per model; got {masks.shape} and {len(rngs)} rngs")
    if sizes.min() == 0:
        raise DataError(f"model {int(sizes.argmin())} has an empty training subset; every mask needs a true entry")
    per_epoch = math.ceil(sizes.max() / batch_size)
    width = math.ceil(sizes.max() / per_epoch)
    idx = np.zeros((len(masks), epochs * per_epoch, width), dtype=np.int64)
    wts = np.zeros(idx.shape, dtype=np.float32)
    for e, (mask, rng) in enumerate(zip(masks, rngs)):
        for ep in range(epochs):
            # A permutation of all n examples restricted to the subset: still a uniformly random
            # order of the subset, and two subsets trained with the same seed see their shared
            # examples in the same relative order (common random numbers for paired runs).
            perm = rng.permutation(len(mask))
            for j, chunk in enumerate(np.array_split(perm[mask[perm]], per_epoch)):
                idx[e, ep * per_epoch + j, : len(chunk)] = chunk
                wts[e, ep * per_epoch + j, : len(chunk)] = 1.0
    return idx, wts


def checkpoint_steps(total_steps: int, n: int) -> list[int]:
    """``n`` step counts evenly spaced over the last third of training, ending at the last step."""
    return sorted({max(1, round(total_steps * (2 / 3 + (i + 1) / (3 * n)))) for i in range(n)})


def _weighted_loss(model: nn.Module) -> Callable[[Params, Tensor, Tensor, Tensor], Tensor]:
    def loss(params: Params, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        logits = torch.func.functional_call(model, params, (x,))  # (B, C)
        ce = F.cross_entropy(logits, y, reduction="none")  # (B,)
        return (ce * w).sum() / w.sum().clamp_min(1.0)
    return loss


def _autograd_grad_and_value(loss: Callable[..., Tensor]) -> Callable[..., tuple[Params, Tensor]]:
    """Same contract as ``torch.func.grad_and_value`` but through plain autograd, which has
    less per-call overhead for a single model (measured ~1.5x on small CNNs)."""
    def fn(params: Params, *args: Tensor) -> tuple[Params, Tensor]:
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        value = loss(leaves, *args)
        grads = torch.autograd.grad(value, list(leaves.values()))
        return dict(zip(leaves, grads)), value.detach()
    return fn


def _sgd_update(params: Params, grads: Params, bufs: Params, lr: float, cfg: VisionTrainConfig,
                lr_mult: dict[str, float], wd_mult: dict[str, float]) -> None:
    """In-place SGD with momentum and coupled weight decay (torch.optim.SGD's rule)."""
    with torch.no_grad():
        for name, p in params.items():
            g = grads[name].add(p, alpha=cfg.weight_decay * wd_mult[name])
            bufs[name].mul_(cfg.momentum).add_(g)
            p.sub_(bufs[name], alpha=lr * lr_mult[name])


def _run_steps(model: nn.Module, params: Params, x: Tensor, y: Tensor, idx: np.ndarray, wts: np.ndarray,
               cfg: VisionTrainConfig, stacked: bool, on_step: Callable[[int, Params], None]) -> np.ndarray:
    """Train ``params`` over the plan (idx/wts with a leading model axis if ``stacked``)."""
    grad_fn = torch.func.vmap(torch.func.grad_and_value(_weighted_loss(model))) if stacked \
        else _autograd_grad_and_value(_weighted_loss(model))
    lrs = lr_schedule(idx.shape[-2], cfg)
    lr_mult = {n: s.lr_mult for n, s in model.scalings.items()}
    wd_mult = {n: s.wd_mult for n, s in model.scalings.items()}
    bufs = {n: torch.zeros_like(p) for n, p in params.items()}
    losses = np.zeros(idx.shape[:-1], dtype=np.float64)  # (E, S) or (S,)
    for s in range(idx.shape[-2]):
        bi = torch.from_numpy(idx[..., s, :])  # (E, B) or (B,)
        bw = torch.from_numpy(wts[..., s, :])
        grads, loss = grad_fn(params, x[bi], y[bi], bw)
        losses[..., s] = loss.detach().numpy()
        if not np.isfinite(losses[..., s]).all():
            raise DivergedError(f"training diverged (non-finite loss) at step {s}; lower peak_lr "
                                f"({cfg.peak_lr}) or check the inputs for NaN/inf")
        _sgd_update(params, grads, bufs, float(lrs[s]), cfg, lr_mult, wd_mult)
        on_step(s + 1, params)
    return losses


def train_models(model_cfg: ModelConfig, train_cfg: VisionTrainConfig, x: np.ndarray, y: np.ndarray,
                 masks: np.ndarray, seeds: Sequence[int], vectorize: bool = True) -> TrainResult:
    """Train ``len(seeds)`` models, model ``e`` on ``x[masks[e]]`` with seed ``seeds[e]``.

    ``x`` (n, ...) float32 inputs, ``y`` (n,) int labels, ``masks`` (E, n) bool. Seeds set
    each model's init and data order. ``vectorize`` picks vmap over models vs. a loop (same
    numbers). Returns stacked parameters (E, ...) and checkpoints of the last third."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (len(seeds), len(x)) or len(y) != len(x):
        raise ConfigError(f"need masks (E={len(seeds)}, n={len(x)}) and labels (n,); got masks "
                          f"{masks.shape}, x {len(x)}, y {len(y)}")
    idx, wts = batch_plan(masks, train_cfg.epochs, train_cfg.batch_size, [np_rng(s, "order") for s in seeds])
    models = [init_model(model_cfg, s) for s in seeds]
    params, _ = torch.func.stack_module_state(models)  # each (E, ...)
    params = {n: p.detach().clone() for n, p in params.items()}
    template = models[0].to("meta")  # architecture only: weights come in through functional_call
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    keep = set(checkpoint_steps(idx.shape[1], train_cfg.n_checkpoints))
    snaps: dict[int, list[Params]] = {s: [] for s in keep}

    def snapshot(step: int, p: Params) -> None:
        if step in keep:
            snaps[step].append({n: t.detach().clone() for n, t in p.items()})

    if vectorize:
        losses = _run_steps(template, params, xt, yt, idx, wts, train_cfg, True, snapshot)
    else:
        rows = []
        for e in range(len(seeds)):
            own = {n: p[e].clone() for n, p in params.items()}
            rows.append(_run_steps(template, own, xt, yt, idx[e], wts[e], train_cfg, False, snapshot))
            for n in params:
                params[n][e] = own[n]
        losses = np.stack(rows)
        snaps = {s: [_stack(v)] for s, v in snaps.items()}  # E single-model snapshots -> one stack
    checkpoints = [(s, snaps[s][0]) for s in sorted(keep)]
    return TrainResult(params, checkpoints, losses)


def _stack(parts: list[Params]) -> Params:
    return {n: torch.stack([p[n] for p in parts]) for n in parts[0]}


def predict_logits(model_cfg: ModelConfig, params: Params, x: np.ndarray, batch_size: int = 1024,
                   vectorize: bool = True) -> np.ndarray:
    """Logits (E, N, C) of stacked models ``params`` (E, ...) on inputs ``x`` (N, ...)."""
    with torch.device("meta"):
        template = build_model(model_cfg)
    call = lambda p, xb: torch.func.functional_call(template, p, (xb,))  # noqa: E731
    xt = torch.as_tensor(x, dtype=torch.float32)
    n_models = next(iter(params.values())).shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, len(xt), batch_size):
            xb = xt[start:start + batch_size]
            if vectorize:
                out.append(torch.func.vmap(call, in_dims=(0, None))(params, xb))
            else:
                out.append(torch.stack([call({n: p[e] for n, p in params.items()}, xb) for e in range(n_models)]))
    return torch.cat(out, dim=1).numpy()


def save_checkpoints(result: TrainResult, directory: str | Path, model_cfg: ModelConfig,
                     train_cfg: VisionTrainConfig, model_ids: Sequence[str]) -> list[Path]:
    """Write every checkpoint of every model as ``<model_id>/step-<step>.safetensors``."""
    from ..config import to_dict

    meta = {"model": canonical_json(to_dict(model_cfg)), "model_kind": type(model_cfg).__name__,
            "train": canonical_json(to_dict(train_cfg)), "format_version": "1"}
    paths = []
    for step, stacked in result.checkpoints:
        for e, mid in enumerate(model_ids):
            path = Path(directory) / mid / f"step-{step:06d}.safetensors"
            save_weights(path, {n: t[e] for n, t in stacked.items()}, {**meta, "step": str(step)})
            paths.append(path)
    return paths


def load_checkpoint(path: str | Path) -> tuple[ModelConfig, Params]:
    """The model config and state dict of a checkpoint written by :func:`save_checkpoints`."""
    import json

    from safetensors import safe_open

    from ..config import from_dict
    from ..store import load_weights

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: checkpoint is missing; re-run the training step that writes it")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    kinds = {"ResNetConfig": ResNetConfig, "MLPConfig": MLPConfig}
    if meta.get("model_kind") not in kinds:
        raise DataError(f"{p}: not a vision checkpoint (metadata model_kind={meta.get('model_kind')!r})")
    return from_dict(kinds[meta["model_kind"]], json.loads(meta["model"])), load_weights(p)

"""Retraining on training subsets: the ground truth of LDS and of counterfactual removal, for
vision models (:func:`retrain_outputs`) and GPTs (:func:`train_lm_on_subsets`,
:func:`lm_target_outputs`) alike.

Each is a pure function — model/training settings, subset masks or document pools and a root
seed in, trained models or an outputs array out — so a study step can run it and write the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..seeding import derive_seed, epoch_order
from ..train.vision import VisionModelSpec, VisionTrainConfig, predict_logits, train_models
from .outputs import LMLogOdds, log_odds
from .subsets import check_masks


@dataclass(frozen=True)
class RetrainConfig:
    """How ground-truth models are trained: model, recipe, seeds per subset, root seed.

    ``chunk`` models are trained together (vmap over models when ``vectorize``; measured
    faster for MLPs and ResNets up to w = 1/16 on CPU, no gain at w = 1/8). ``shared_seeds``
    reuses replicate r's seed on every subset (common random numbers, see :func:`model_seed`)."""

    model: VisionModelSpec
    train: VisionTrainConfig
    n_seeds: int = 2
    seed: int = 0
    vectorize: bool = True
    chunk: int = 64
    shared_seeds: bool = False

    def __post_init__(self) -> None:
        if self.n_seeds < 1 or self.chunk < 1:
            raise ConfigError("n_seeds and chunk must be ≥ 1")


def model_seed(cfg: RetrainConfig, subset: int, replicate: int) -> int:
    """Seed of the model trained on subset ``subset``, replicate ``replicate``. With
    ``shared_seeds`` every subset's replicate r uses the same seed (same init, coupled data
    order), so differences between subsets are not buried under init noise."""
    if cfg.shared_seeds:
        return derive_seed(cfg.seed, "replicate", replicate)
    return derive_seed(cfg.seed, "subset", subset, replicate)


def retrain_outputs(cfg: RetrainConfig, x_train: np.ndarray, y_train: np.ndarray, masks: np.ndarray,
                    x_targets: np.ndarray, y_targets: np.ndarray) -> np.ndarray:
    """Train ``cfg.n_seeds`` models on each subset (masks (m, n)); return target margins
    (m, n_seeds, T) float32. Model (i, r) uses seed :func:`model_seed` ``(cfg, i, r)``."""
    masks = check_masks(masks, len(x_train))
    jobs = [(i, r) for i in range(len(masks)) for r in range(cfg.n_seeds)]
    out = np.zeros((len(masks), cfg.n_seeds, len(y_targets)), dtype=np.float32)
    model_cfg = cfg.model.config()
    for start in range(0, len(jobs), cfg.chunk):
        part = jobs[start:start + cfg.chunk]
        seeds = [model_seed(cfg, i, r) for i, r in part]
        res = train_models(model_cfg, cfg.train, x_train, y_train, masks[[i for i, _ in part]], seeds,
                           vectorize=cfg.vectorize)
        logits = torch.from_numpy(predict_logits(model_cfg, res.params, x_targets, vectorize=cfg.vectorize))
        margins = log_odds(logits, torch.as_tensor(y_targets, dtype=torch.int64).expand(len(part), -1))
        for (i, r), row in zip(part, margins.numpy()):
            out[i, r] = row
    return out


def lm_schedule(pool: np.ndarray, batch: int, epochs: int, seed: int) -> tuple[int, Callable[[int], np.ndarray]]:
    """(n_steps, batch_fn) visiting ``pool`` (document indices) ``epochs`` times in seeded orders."""
    n_steps = max(1, math.ceil(epochs * len(pool) / batch))
    order = epoch_order(pool, n_steps * batch, seed, "lm-order")
    return n_steps, lambda i: order[i * batch:(i + 1) * batch]


def train_lm_on_subsets(model: Any, train: Any, docs: np.ndarray, pools: Sequence[np.ndarray], seeds: Sequence[int],
                        epochs: int, outs: Sequence[Path], mode: str = "auto") -> None:
    """Train one GPT (``model``: a GPTConfig, ``train``: a TrainConfig) per document pool
    (indices into ``docs`` (n, T+1)) for ``epochs`` epochs, all at once (vmap over stacked
    parameters); model j uses ``seeds[j]`` and is written to ``outs[j]``. ``mode``: stacked
    ("batched"), one after another ("sequential") or measured here ("auto"), as
    :func:`proxyscale.train.batched.train_lm_batched` takes it."""
    from ..train.batched import train_lm_batched

    fns, n_steps = [], 0
    for pool, seed in zip(pools, seeds):
        n_steps, fn = lm_schedule(pool, train.batch_size, epochs, seed)
        fns.append(lambda i, f=fn: docs[f(i)])
    train_lm_batched(model, train, fns, n_steps, list(outs), list(seeds), mode=mode)  # type: ignore[arg-type]


def lm_target_outputs(run_dirs: Sequence[Path], tokens: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The mean per-token log-odds (LMLogOdds) of each trained GPT on the targets: (len(run_dirs), T)."""
    from ..models.gpt import load_gpt

    f = LMLogOdds(fused_attention=False)  # the same kernel as the attribution's outputs
    out = np.zeros((len(run_dirs), len(tokens)), dtype=np.float32)
    with torch.no_grad():
        for j, d in enumerate(run_dirs):
            model = load_gpt(d).eval()
            out[j] = f.outputs(model, dict(model.named_parameters()), (tokens, mask)).numpy()
    return out

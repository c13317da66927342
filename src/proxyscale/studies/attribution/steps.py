"""Step functions of the attribution study itself: counterfactual removal sets, retraining on
them, and the analysis. (Training, TRAK and LDS retraining come from the shared fragments.)"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...run.step import StepContext, step_kind
from ...store import write_json, write_npy
from ..fragments.vision import DataConfig, RetrainStep, load_study_data, retrain_margins, study_data


@dataclass(frozen=True)
class RemovalSpec:
    fractions: tuple[float, ...]
    class_fractions: tuple[float, ...]
    n_random: int


@dataclass(frozen=True)
class CfSetsStep:
    data: DataConfig
    removal: RemovalSpec
    n_targets: int
    seed: int


@dataclass(frozen=True)
class AnalyzeStep:
    """What the analysis needs to know of the study (plain data, as recorded in its manifest)."""

    widths: tuple[dict[str, Any], ...]
    reference: str
    family: str
    dataset: str
    n_train: int
    n_targets: int
    models_per_width: int
    trak: dict[str, Any]
    lds: dict[str, Any]
    counterfactual: dict[str, Any]
    epochs: int
    n_boot: int
    seed: int
    name: str
    formulas: dict[str, str]


@step_kind("attr_cf_sets", config=CfSetsStep)
def attr_cf_sets_step(ctx: StepContext) -> None:
    """Removal sets for the first ``n_targets`` targets: keep-masks (R, n), their target and name."""
    from ...attribute.counterfactual import RemovalConfig, removal_masks
    from ...config import from_dict
    from ...seeding import np_rng

    c = ctx.config
    x, y, xt, yt = load_study_data(c["data"], flat=True)  # similarity in raw (flattened) input space
    scores = np.load(ctx.inputs["scores"] / "scores.npy", allow_pickle=False)
    rcfg = from_dict(RemovalConfig, c["removal"], "counterfactual")
    names, masks, targets = [], [], []
    for t in range(c["n_targets"]):
        nm, km = removal_masks(scores[:, t], x, xt[t], y, int(yt[t]), np_rng(c["seed"], "cf", t), rcfg)
        names += nm
        masks.append(km)
        targets += [t] * len(nm)
    write_npy(ctx.out / "keep.npy", np.concatenate(masks))
    write_npy(ctx.out / "targets.npy", np.asarray(targets, dtype=np.int64))
    write_json(ctx.out / "sets.json", {"names": names})


@step_kind("attr_cf_train", config=RetrainStep)
def attr_cf_train_step(ctx: StepContext) -> None:
    """Margins (R,) of each removal set's own target after training one width on it."""
    t0 = time.time()
    x, y, xt, yt = study_data(ctx)
    keep = np.load(ctx.inputs["sets"] / "keep.npy", allow_pickle=False)
    targets = np.load(ctx.inputs["sets"] / "targets.npy", allow_pickle=False)
    n_t = int(targets.max()) + 1
    out = retrain_margins(ctx, keep, xt[:n_t], yt[:n_t], x, y)  # (R, S, n_t)
    write_npy(ctx.out / "margins.npy", out[np.arange(len(keep)), :, targets].mean(axis=1).astype(np.float32))
    write_json(ctx.out / "cf.json", {"n_models": int(len(keep) * ctx.config["n_seeds"]),
                                     "removed": [int((~k).sum()) for k in keep], "wall_s": time.time() - t0})


@step_kind("attr_analyze", config=AnalyzeStep)
def attr_analyze_step(ctx: StepContext) -> None:
    """LDS per width (with CIs), order similarity, grad-dot comparison, counterfactual R² and
    compute spent (see :mod:`proxyscale.analyze.attribution`)."""
    from ...analyze.attribution import analyze_attribution

    analyze_attribution(ctx.config, ctx.inputs, ctx.out)

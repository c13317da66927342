"""Step functions of the attribution-transfer study (plan in :mod:`proxyscale.run.attribution`).

Each takes a :class:`~proxyscale.run.worker.StepContext` and writes ``.npy``/``.json``/
``.safetensors`` files only inside ``ctx.out``. Heavy imports happen inside the functions so
the runner imports without torch.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..store import write_json, write_npy
from .worker import StepContext


def load_study_data(data: dict[str, Any], flat: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (n, ...), y_train (n,), x_targets (T, ...), y_targets (T,)) of a data config.

    Deterministic in ``data["seed"]``: the digits split, the cifar10 train subset and the choice
    of targets from the test split are drawn from hashed seeds. ``flat`` flattens images for MLPs."""
    from ..data.vision import VisionDataConfig, load_vision
    from ..seeding import np_rng

    seed = int(data["seed"])
    cfg = VisionDataConfig(name=data["name"], root=data.get("root"), n_train=int(data["n_train"]))
    d = load_vision(cfg, np_rng(seed, "attr-data", "split"))
    if flat:
        d = d.flat()
    x, y = d.x_train, d.y_train
    if len(x) > cfg.n_train:  # cifar10: a fixed random subset of the training split
        keep = np.sort(np_rng(seed, "attr-data", "train-subset").permutation(len(x))[: cfg.n_train])
        x, y = x[keep], y[keep]
    n_t = int(data["n_targets"])
    if n_t > len(d.x_test):
        from ..errors import DataError

        raise DataError(f"n_targets={n_t} exceeds the {len(d.x_test)} test examples; lower data.n_targets")
    pick = np.sort(np_rng(seed, "attr-data", "targets").permutation(len(d.x_test))[:n_t])
    return x, y, d.x_test[pick], d.y_test[pick]


def _model(cfg: dict[str, Any]):
    from ..config import from_dict
    from ..train.vision import VisionModelSpec

    return from_dict(VisionModelSpec, cfg["model"], "model")


def _data_for(ctx: StepContext):
    return load_study_data(ctx.config["data"], flat=ctx.config["model"]["kind"] == "mlp")


def _vectorize(spec) -> bool:
    return spec.kind == "mlp"  # vmap over models pays off for MLPs, not for convolutions on CPU


def attr_train_step(ctx: StepContext) -> None:
    """Train ``len(seeds)`` models of one width on the full train set; save their checkpoints."""
    from ..config import from_dict
    from ..train.vision import VisionTrainConfig, save_checkpoints, train_models

    t0 = time.time()
    spec = _model(ctx.config)
    train = from_dict(VisionTrainConfig, ctx.config["train"], "train")
    x, y, _, _ = _data_for(ctx)
    seeds = ctx.config["seeds"]
    res = train_models(spec.config(), train, x, y, np.ones((len(seeds), len(x)), bool), seeds,
                       vectorize=_vectorize(spec))
    ids = [f"m{e}" for e in range(len(seeds))]
    save_checkpoints(res, ctx.out / "models", spec.config(), train, ids)
    write_npy(ctx.out / "losses.npy", res.losses.astype(np.float32))  # (M, steps)
    write_json(ctx.out / "train.json", {"n_models": len(seeds), "steps": int(res.losses.shape[1]),
                                        "final_loss": float(res.losses[:, -1].mean()), "wall_s": time.time() - t0,
                                        "checkpoint_steps": [s for s, _ in res.checkpoints]})


def checkpoint_files(models_dir: Path) -> list[Path]:
    """Every saved checkpoint (model-major, step order)."""
    files = sorted(models_dir.glob("m*/step-*.safetensors"), key=lambda p: (int(p.parent.name[1:]), p.name))
    if not files:
        from ..errors import StoreError

        raise StoreError(f"{models_dir}: no checkpoints; re-run the attr_train step")
    return files


def attr_trak_step(ctx: StepContext) -> None:
    """TRAK scores (n_train, n_targets) of one width's ensemble, and the grad-dot baseline."""
    from ..attribute.trak import TRAK
    from ..store import load_weights
    from ..train.vision import build_model

    t0 = time.time()
    spec, tc = _model(ctx.config), ctx.config["trak"]
    x, y, xt, yt = _data_for(ctx)
    model = build_model(spec.config())
    trak = TRAK(model, "classification", k=tc["k"], projector=tc["projector"], lambda_ratio=tc["lambda_ratio"],
                use_q=tc["use_q"], seed=ctx.config["seed"], batch_size=tc["batch_size"],
                store_dir=ctx.out / "features")
    files = checkpoint_files(ctx.inputs["models"] / "models")
    for i, f in enumerate(files):
        trak.featurize(load_weights(f), (x, y), model_id=i)
    scores = trak.score((xt, yt))  # (n, T)
    write_npy(ctx.out / "scores.npy", np.asarray(scores, dtype=np.float32))
    write_npy(ctx.out / "grad_dot.npy", trak.grad_dot((xt, yt)).astype(np.float32))
    cands = candidate_scores(trak, (xt, yt), tc, len(files))
    write_npy(ctx.out / "candidates.npy", np.stack([s for _, s in cands]).astype(np.float32))
    shutil.rmtree(ctx.out / "features", ignore_errors=True)  # an intermediate, not a result
    write_json(ctx.out / "trak.json", {"n_checkpoints": len(files), "params": trak.p, "k": tc["k"],
                                       "n_train": len(x), "n_targets": len(xt), "wall_s": time.time() - t0,
                                       "candidates": [c for c, _ in cands]})


def candidate_scores(trak: Any, targets: Any, tc: dict[str, Any], n_files: int) -> list[tuple[dict, np.ndarray]]:
    """Scores for every (λ ratio, Q) candidate of the spec, with the first 1..M models when
    ``score_by_m`` (each model brings its ``checkpoints_per_model`` checkpoints); ``n_models``
    in the returned settings counts models, not checkpoints."""
    from ..config import from_dict
    from .attribution import TrakSpec

    ts = from_dict(TrakSpec, tc, "trak")
    per = ts.checkpoints_per_model
    n_models = n_files // per
    counts = list(range(1, n_models + 1)) if ts.score_by_m else [n_models]
    out = trak.score_candidates(targets, ts.ratios, ts.q_options, n_models=[c * per for c in counts])
    return [({**c, "n_models": c["n_models"] // per}, s) for c, s in out]


def attr_subsets_step(ctx: StepContext) -> None:
    """The LDS α-subsets as masks (m, n) bool."""
    from ..attribute.subsets import sample_subsets

    c = ctx.config
    masks = sample_subsets(c["n_train"], c["alpha"], c["n_subsets"], np.random.default_rng(c["seed"]))
    write_npy(ctx.out / "masks.npy", masks)


def _retrain(ctx: StepContext, masks: np.ndarray, xt: np.ndarray, yt: np.ndarray,
             x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from ..attribute.lds import RetrainConfig, retrain_outputs
    from ..config import from_dict
    from ..train.vision import VisionTrainConfig

    spec = _model(ctx.config)
    cfg = RetrainConfig(model=spec, train=from_dict(VisionTrainConfig, ctx.config["train"], "train"),
                        n_seeds=ctx.config["n_seeds"], seed=ctx.config["seed"], vectorize=_vectorize(spec),
                        shared_seeds=bool(ctx.config.get("shared_seeds", False)))
    return retrain_outputs(cfg, x, y, masks, xt, yt)


def attr_retrain_step(ctx: StepContext) -> None:
    """Reference-width models on subsets [start, stop): target margins (chunk, seeds, T)."""
    t0 = time.time()
    x, y, xt, yt = _data_for(ctx)
    masks = np.load(ctx.inputs["subsets"] / "masks.npy", allow_pickle=False)[ctx.config["start"]:ctx.config["stop"]]
    write_npy(ctx.out / "outputs.npy", _retrain(ctx, masks, xt, yt, x, y))
    write_json(ctx.out / "retrain.json", {"n_models": int(len(masks) * ctx.config["n_seeds"]),
                                          "wall_s": time.time() - t0})


def attr_cf_sets_step(ctx: StepContext) -> None:
    """Removal sets for the first ``n_targets`` targets: keep-masks (R, n), their target and name."""
    from ..attribute.counterfactual import RemovalConfig, removal_masks
    from ..config import from_dict
    from ..seeding import np_rng

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


def attr_cf_train_step(ctx: StepContext) -> None:
    """Margins (R,) of each removal set's own target after training one width on it."""
    t0 = time.time()
    x, y, xt, yt = _data_for(ctx)
    keep = np.load(ctx.inputs["sets"] / "keep.npy", allow_pickle=False)
    targets = np.load(ctx.inputs["sets"] / "targets.npy", allow_pickle=False)
    n_t = int(targets.max()) + 1
    out = _retrain(ctx, keep, xt[:n_t], yt[:n_t], x, y)  # (R, S, n_t)
    write_npy(ctx.out / "margins.npy", out[np.arange(len(keep)), :, targets].mean(axis=1).astype(np.float32))
    write_json(ctx.out / "cf.json", {"n_models": int(len(keep) * ctx.config["n_seeds"]),
                                     "removed": [int((~k).sum()) for k in keep], "wall_s": time.time() - t0})


def attr_analyze_step(ctx: StepContext) -> None:
    """LDS per width (with CIs), order similarity, grad-dot comparison, counterfactual R² and
    compute spent (see :mod:`proxyscale.run.attr_analysis`)."""
    from .attr_analysis import analyze_attribution

    analyze_attribution(ctx.config, ctx.inputs, ctx.out)

"""The vision width-ladder fragment: a data set (digits or CIFAR-10), a width ladder of μP MLPs or
width-scaled ResNet-18s, the TRAK ensemble of each width, and reference-width retraining on LDS
subsets. Step functions write ``.npy``/``.json``/``.safetensors`` files only inside ``ctx.out``;
heavy imports happen inside the functions.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from ...config import from_dict, to_dict
from ...errors import ConfigError
from ...models.ladder import attribution_flops, train_flops
from ...run.plan import Plan, Step
from ...run.step import StepContext, step_kind
from ...seeding import derive_seed
from ...store import write_json, write_npy
from .trak import TrakSpec, candidate_scores

IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}


@dataclass(frozen=True)
class AttrDataSpec:
    """The data set: scikit-learn ``digits`` (offline) or ``cifar10`` (binary files under ``root``).

    ``n_train`` training examples (digits: the size of the train split; cifar10: a random
    subset of its 50,000) and ``n_targets`` test examples whose attribution is measured."""

    name: Literal["digits", "cifar10"] = "digits"
    root: Optional[str] = None
    n_train: int = 1000
    n_targets: int = 100

    def __post_init__(self) -> None:
        if self.name == "cifar10" and not self.root:
            raise ConfigError("data.root: cifar10 needs the directory holding the binary .bin files")
        if self.n_train < 10 or self.n_targets < 1:
            raise ConfigError(f"data: n_train={self.n_train} must be ≥ 10 and n_targets={self.n_targets} ≥ 1")
        if self.name == "digits" and self.n_train + self.n_targets > 1797:
            raise ConfigError(f"data: digits has 1,797 images; n_train + n_targets = "
                              f"{self.n_train + self.n_targets} is too many")


@dataclass(frozen=True)
class WidthLadderSpec:
    """Width multipliers of one model family; ``reference`` is one of ``widths``.

    MLP: ``depth`` hidden layers of ``hidden · w`` units. ResNet: ResNet-18 with every stage
    width × w (GroupNorm, stage strides chosen for the image size). ``mup`` trains every width
    with μP relative to ``base_width_mult`` (the paper's choice for the vision ladder)."""

    widths: tuple[float, ...]
    reference: float
    family: Literal["mlp", "resnet"] = "mlp"
    mup: bool = True
    base_width_mult: float = 1.0
    hidden: int = 128
    depth: int = 1
    group_size: int = 4

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"ladder.widths {list(self.widths)}: give at least two distinct widths")
        if any(w <= 0 for w in self.widths):
            raise ConfigError("ladder.widths must be positive multipliers, e.g. [0.125, 0.25, 0.5, 1]")
        if self.reference not in self.widths:
            raise ConfigError(f"ladder.reference={self.reference:g} is not one of the widths {list(self.widths)}")

    @property
    def proxies(self) -> tuple[float, ...]:
        return tuple(w for w in sorted(self.widths) if w != self.reference)


# -- models and their costs --------------------------------------------------------------------
def width_label(w: float) -> str:
    return f"w{w:g}"


def model_dict(data: AttrDataSpec, lad: WidthLadderSpec, w: float) -> dict[str, Any]:
    """A :class:`~proxyscale.train.vision.VisionModelSpec` (as data) for width ``w``."""
    c, h, _ = IMAGE_SHAPES[data.name]
    if lad.family == "mlp":
        return {"kind": "mlp", "mlp": {"in_dim": c * h * h, "hidden": lad.hidden, "n_classes": 10, "depth": lad.depth,
                                       "width_mult": w, "mup": lad.mup, "base_width_mult": lad.base_width_mult}}
    strides = (1, 2, 2, 1) if h <= 8 else (1, 2, 2, 2)  # keep a 2x2 map before pooling (resnet.strides_for)
    return {"kind": "resnet", "resnet": {"width_mult": w, "n_classes": 10, "in_channels": c, "mup": lad.mup,
                                         "base_width_mult": lad.base_width_mult, "strides": list(strides),
                                         "group_size": lad.group_size}}


def model_params(model: dict[str, Any]) -> int:
    """Parameter count of a vision model (built on the meta device: no memory, no init)."""
    import torch

    from ...train.vision import VisionModelSpec, build_model

    with torch.device("meta"):
        net = build_model(from_dict(VisionModelSpec, model, "model").config())
    return sum(p.numel() for p in net.parameters())


def vision_train_config(train: dict[str, Any], checkpoints_per_model: int) -> dict[str, Any]:
    """The training recipe as data, validated by ``VisionTrainConfig`` (checkpoints from ``trak``)."""
    from ...train.vision import VisionTrainConfig

    if "n_checkpoints" in train:
        raise ConfigError("train.n_checkpoints: set trak.checkpoints_per_model instead")
    return to_dict(from_dict(VisionTrainConfig, {**train, "n_checkpoints": checkpoints_per_model}, "train"))


def width_table(data: AttrDataSpec, lad: WidthLadderSpec, epochs: int) -> list[dict[str, Any]]:
    """One row per width: params, training FLOPs per model, compute ratio to the reference."""
    rows = []
    for w in sorted(lad.widths):
        p = model_params(model_dict(data, lad, w))
        rows.append({"width": w, "label": width_label(w), "params": p, "is_reference": w == lad.reference,
                     "train_flops": train_flops(p, data.n_train * epochs)})
    ref = next(r for r in rows if r["is_reference"])
    for r in rows:
        r["compute_ratio"] = ref["train_flops"] / r["train_flops"]
    return rows


# -- step configs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """The data of a vision step: the spec's data set and the study's seed."""

    name: Literal["digits", "cifar10"]
    n_train: int
    n_targets: int
    seed: int
    root: Optional[str] = None


@dataclass(frozen=True)
class VisionTrainStep:
    data: DataConfig
    model: dict[str, Any]
    train: dict[str, Any]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_model_train(self.model, self.train)


@dataclass(frozen=True)
class VisionTrakStep:
    data: DataConfig
    model: dict[str, Any]
    trak: TrakSpec
    seed: int


@dataclass(frozen=True)
class RetrainStep:
    """Reference-width models on subsets [start, stop) × ``n_seeds`` seeds (LDS ground truth),
    or on removal sets (``start``/``stop`` unused: every set)."""

    data: DataConfig
    model: dict[str, Any]
    train: dict[str, Any]
    n_seeds: int
    seed: int
    start: int = 0
    stop: int = 0
    shared_seeds: bool = False

    def __post_init__(self) -> None:
        _check_model_train(self.model, self.train)


def _check_model_train(model: dict[str, Any], train: dict[str, Any]) -> None:
    from ...train.vision import VisionModelSpec, VisionTrainConfig

    from_dict(VisionModelSpec, model, "model")
    from_dict(VisionTrainConfig, train, "train")


# -- the fragment ------------------------------------------------------------------------------
def data_config(data: AttrDataSpec, seed: int) -> dict[str, Any]:
    return {**to_dict(data), "seed": seed}


def add_width_ladder(plan: Plan, *, data: AttrDataSpec, ladder: WidthLadderSpec, train: dict[str, Any],
                     trak: TrakSpec, models_per_width: int, seed: int,
                     rows: dict[float, dict[str, Any]]) -> tuple[dict[str, str], dict[float, str]]:
    """Per width: an ensemble of ``models_per_width`` models (attr_train) and its TRAK scores
    (attr_trak). Returns the analysis inputs (``train:<w>``, ``trak:<w>``) and the TRAK keys."""
    dcfg, inputs, trak_keys = data_config(data, seed), {}, {}
    for w in sorted(ladder.widths):
        lab, row, model = width_label(w), rows[w], model_dict(data, ladder, w)
        seeds = [derive_seed(seed, "attr-train", lab, m) for m in range(models_per_width)]
        tk = plan.add(Step("attr_train", lab, {"data": dcfg, "model": model, "train": train, "seeds": seeds},
                           cost=row["train_flops"] * len(seeds), info=row))
        cost = attribution_flops(row["params"], trak.k, data.n_train, data.n_targets)
        trak_keys[w] = plan.add(Step("attr_trak", lab, {"data": dcfg, "model": model, "trak": to_dict(trak),
                                                         "seed": derive_seed(seed, "trak", lab)},
                                     {"models": tk}, cost=cost * len(seeds) * trak.checkpoints_per_model))
        inputs[f"train:{lab}"], inputs[f"trak:{lab}"] = tk, trak_keys[w]
    return inputs, trak_keys


# -- step functions ----------------------------------------------------------------------------
def load_study_data(data: dict[str, Any], flat: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (n, ...), y_train (n,), x_targets (T, ...), y_targets (T,)) of a data config.

    Deterministic in ``data["seed"]``: the digits split, the cifar10 train subset and the choice
    of targets from the test split are drawn from hashed seeds. ``flat`` flattens images for MLPs."""
    from ...data.vision import VisionDataConfig, load_vision
    from ...seeding import np_rng

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
        from ...errors import DataError

        raise DataError(f"n_targets={n_t} exceeds the {len(d.x_test)} test examples; lower data.n_targets")
    pick = np.sort(np_rng(seed, "attr-data", "targets").permutation(len(d.x_test))[:n_t])
    return x, y, d.x_test[pick], d.y_test[pick]


def vision_model(cfg: dict[str, Any]):
    from ...train.vision import VisionModelSpec

    return from_dict(VisionModelSpec, cfg["model"], "model")


def study_data(ctx: StepContext):
    return load_study_data(ctx.config["data"], flat=ctx.config["model"]["kind"] == "mlp")


def vectorize_for(spec) -> bool:
    return spec.kind == "mlp"  # vmap over models pays off for MLPs, not for convolutions on CPU


@step_kind("attr_train", config=VisionTrainStep)
def attr_train_step(ctx: StepContext) -> None:
    """Train ``len(seeds)`` models of one width on the full train set; save their checkpoints."""
    from ...config import from_dict
    from ...train.vision import VisionTrainConfig, save_checkpoints, train_models

    t0 = time.time()
    spec = vision_model(ctx.config)
    train = from_dict(VisionTrainConfig, ctx.config["train"], "train")
    x, y, _, _ = study_data(ctx)
    seeds = ctx.config["seeds"]
    res = train_models(spec.config(), train, x, y, np.ones((len(seeds), len(x)), bool), seeds,
                       vectorize=vectorize_for(spec))
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
        from ...errors import StoreError

        raise StoreError(f"{models_dir}: no checkpoints; re-run the attr_train step")
    return files


@step_kind("attr_trak", config=VisionTrakStep)
def attr_trak_step(ctx: StepContext) -> None:
    """TRAK scores (n_train, n_targets) of one width's ensemble, and the grad-dot baseline."""
    from ...attribute.trak import TRAK
    from ...store import load_weights
    from ...train.vision import build_model

    t0 = time.time()
    spec, tc = vision_model(ctx.config), ctx.config["trak"]
    x, y, xt, yt = study_data(ctx)
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
    cands = candidate_scores(trak, (xt, yt), from_dict(TrakSpec, tc, "trak"), len(files))
    write_npy(ctx.out / "candidates.npy", np.stack([s for _, s in cands]).astype(np.float32))
    shutil.rmtree(ctx.out / "features", ignore_errors=True)  # an intermediate, not a result
    write_json(ctx.out / "trak.json", {"n_checkpoints": len(files), "params": trak.p, "k": tc["k"],
                                       "n_train": len(x), "n_targets": len(xt), "wall_s": time.time() - t0,
                                       "candidates": [c for c, _ in cands]})


def retrain_margins(ctx: StepContext, masks: np.ndarray, xt: np.ndarray, yt: np.ndarray,
             x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from ...attribute.retrain import RetrainConfig, retrain_outputs
    from ...config import from_dict
    from ...train.vision import VisionTrainConfig

    spec = vision_model(ctx.config)
    cfg = RetrainConfig(model=spec, train=from_dict(VisionTrainConfig, ctx.config["train"], "train"),
                        n_seeds=ctx.config["n_seeds"], seed=ctx.config["seed"], vectorize=vectorize_for(spec),
                        shared_seeds=bool(ctx.config.get("shared_seeds", False)))
    return retrain_outputs(cfg, x, y, masks, xt, yt)


@step_kind("attr_retrain", config=RetrainStep)
def attr_retrain_step(ctx: StepContext) -> None:
    """Reference-width models on subsets [start, stop): target margins (chunk, seeds, T)."""
    t0 = time.time()
    x, y, xt, yt = study_data(ctx)
    masks = np.load(ctx.inputs["subsets"] / "masks.npy", allow_pickle=False)[ctx.config["start"]:ctx.config["stop"]]
    write_npy(ctx.out / "outputs.npy", retrain_margins(ctx, masks, xt, yt, x, y))
    write_json(ctx.out / "retrain.json", {"n_models": int(len(masks) * ctx.config["n_seeds"]),
                                          "wall_s": time.time() - t0})



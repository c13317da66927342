"""The attribution-transfer study (paper §3.1): spec and plan.

Do attribution scores computed with small proxy models predict what a large (reference) model
does when its training data changes? For every width of a ladder, train ``models_per_width``
models, compute TRAK scores of held-out targets, and score them with the linear datamodeling
score (LDS) against models *of the reference width* retrained on random α-subsets::

    attr_train (per width) ─► attr_trak (per width) ──────────────────────────┐
    attr_subsets ─► attr_retrain (reference width, chunks of subsets) ────────┤
    attr_trak (scores width) ─► attr_cf_sets ─► attr_cf_train (per width) ────┤
                                                             attr_analyze ◄───┘

A YAML file with ``kind: attribution`` at its top is this study (``proxyscale run`` dispatches
on it). An optional ``lm`` block adds the same LDS measurement on the GPT ladder (see
:mod:`proxyscale.run.attribution_lm`). This module imports neither torch nor the data layer at
module level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..config import from_dict, load_yaml, suggest, to_dict
from ..errors import ConfigError
from ..seeding import derive_seed
from .plan import Plan, Step
from .spec import ExecutorSpec

IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
TRAIN_FLOPS_FORMULA = "C_train = 6 · P · N_examples · epochs (forward + backward ≈ 6 FLOPs per parameter per example)"
ATTR_FLOPS_FORMULA = ("C_attr = [(6·P·T + 4k² + 2kP)·n + 2P(3T + k)·n_targets + k³] per featurised checkpoint "
                      "(SPEC §7; T = 1 for classification)")


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


@dataclass(frozen=True)
class TrakSpec:
    """TRAK settings: projection dimension, projector, λ = lambda_ratio · mean‖φ‖², Q weighting,
    and ``checkpoints_per_model`` (evenly spaced over the last third of training).

    ``lambda_ratios`` (candidates) and ``choose_q`` (try Q weighting on and off) make the
    analysis choose per width the setting with the best LDS on ``lds.n_holdout`` held-out
    subsets (SPEC §8); the LDS is then reported on the other subsets. ``lambda_ratio`` and
    ``use_q`` are the setting used without a choice (and for the counterfactual removal sets).
    ``score_by_m`` also scores the first 1..M models, for LDS against ensemble size."""

    k: int = 512
    projector: Literal["gaussian", "rademacher", "sparse"] = "rademacher"
    lambda_ratio: float = 1.0
    use_q: bool = False
    lambda_ratios: tuple[float, ...] = ()
    choose_q: bool = False
    score_by_m: bool = True
    checkpoints_per_model: int = 1
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.k < 1 or self.checkpoints_per_model < 1 or self.batch_size < 1:
            raise ConfigError("trak: k, checkpoints_per_model and batch_size must be ≥ 1")
        if self.lambda_ratio < 0 or any(r < 0 for r in self.lambda_ratios):
            raise ConfigError("trak.lambda_ratio(s) must be ≥ 0 (1.0 is a safe default)")
        if len(set(self.lambda_ratios)) != len(self.lambda_ratios):
            raise ConfigError(f"trak.lambda_ratios {list(self.lambda_ratios)} has repeats")

    @property
    def ratios(self) -> tuple[float, ...]:
        """The λ ratios scored: the candidates, or just ``lambda_ratio``."""
        return tuple(float(r) for r in (self.lambda_ratios or (self.lambda_ratio,)))

    @property
    def q_options(self) -> tuple[bool, ...]:
        """The Q weightings scored: both with ``choose_q``, else just ``use_q``."""
        return (False, True) if self.choose_q else (self.use_q,)

    def candidates(self) -> list[tuple[float, bool]]:
        """The (λ ratio, Q weighting) settings scored; more than one means a held-out choice."""
        return [(r, q) for r in self.ratios for q in self.q_options]


@dataclass(frozen=True)
class LDSSpec:
    """Ground truth: ``n_subsets`` random α-subsets (plus ``n_holdout`` more, used only to choose
    TRAK's λ / Q weighting), ``seeds_per_subset`` reference-width models each (averaged),
    trained in steps of ``chunk`` subsets (the executor runs chunks in parallel).
    ``shared_seeds`` gives replicate r of every subset the same seed (common random numbers:
    same initialisation and coupled data order), so subset effects are not buried under
    initialisation noise; the noise ceiling is then measured between coupled replicates."""

    alpha: float = 0.5
    n_subsets: int = 100
    n_holdout: int = 0
    seeds_per_subset: int = 2
    chunk: int = 25
    shared_seeds: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"lds.alpha={self.alpha} must be in (0, 1); 0.5 is standard")
        if self.n_subsets < 10:
            raise ConfigError(f"lds.n_subsets={self.n_subsets}: use at least 10 (≥ 50 for a stable LDS)")
        if self.seeds_per_subset < 2:
            raise ConfigError("lds.seeds_per_subset must be ≥ 2: the ground truth is averaged over seeds "
                              "and two seeds give its noise ceiling")
        if self.chunk < 1 or self.n_holdout < 0:
            raise ConfigError("lds.chunk must be ≥ 1 and lds.n_holdout ≥ 0")


@dataclass(frozen=True)
class CounterfactualSpec:
    """Removal sets (paper App. B.2) for the first ``n_targets`` targets, built from the TRAK
    scores of width ``scores_width`` (default: the smallest); every width is retrained on them
    with ``n_seeds`` seeds. ``n_targets: 0`` turns the experiment off."""

    n_targets: int = 3
    fractions: tuple[float, ...] = (0.02, 0.05, 0.1)
    class_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    n_random: int = 2
    n_seeds: int = 2
    scores_width: Optional[float] = None

    def __post_init__(self) -> None:
        if self.n_targets < 0 or self.n_seeds < 1:
            raise ConfigError("counterfactual: n_targets must be ≥ 0 and n_seeds ≥ 1")


@dataclass(frozen=True)
class AttributionSpec:
    """A whole attribution-transfer study (``kind: attribution`` in YAML).

    ``train`` holds :class:`proxyscale.train.vision.VisionTrainConfig` fields (checked when the
    plan is built); ``lm`` an optional language-model block (:class:`LMAttrSpec`)."""

    name: str
    ladder: WidthLadderSpec
    kind: Literal["attribution"] = "attribution"
    seed: int = 0
    data: AttrDataSpec = field(default_factory=AttrDataSpec)
    models_per_width: int = 5
    train: dict[str, Any] = field(default_factory=dict)
    trak: TrakSpec = field(default_factory=TrakSpec)
    lds: LDSSpec = field(default_factory=LDSSpec)
    counterfactual: CounterfactualSpec = field(default_factory=CounterfactualSpec)
    n_boot: int = 1000
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    lm: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name: '{self.name}' must be a non-empty name without '/'")
        if self.models_per_width < 1:
            raise ConfigError("models_per_width must be ≥ 1 (the paper uses 8; 5 is a good small setting)")
        sw = self.counterfactual.scores_width
        if sw is not None and sw not in self.ladder.widths:
            raise ConfigError(f"counterfactual.scores_width={sw:g} is not one of ladder.widths "
                              f"{list(self.ladder.widths)}")
        if len(self.trak.candidates()) > 1 and self.lds.n_holdout < 5:
            raise ConfigError(f"trak: {len(self.trak.candidates())} candidate settings (lambda_ratios/choose_q) are "
                              f"chosen on held-out subsets; set lds.n_holdout ≥ 5 (20 is typical), "
                              f"got {self.lds.n_holdout}")
        if self.counterfactual.n_targets > self.data.n_targets:
            raise ConfigError("counterfactual.n_targets cannot exceed data.n_targets")


def is_attribution_data(data: Any) -> bool:
    """True if parsed YAML describes an attribution study (``kind: attribution``)."""
    return isinstance(data, dict) and data.get("kind") == "attribution"


def parse_attribution_spec(data: Any, where: str = "study") -> AttributionSpec:
    """Build an :class:`AttributionSpec` from plain data (strict: unknown keys are errors)."""
    spec = from_dict(AttributionSpec, data, where)
    _vision_train_config(spec)  # fail at load time, not in a worker
    if spec.lm is not None:
        from .attribution_lm import parse_lm_block

        parse_lm_block(spec.lm, f"{where}.lm")
    return spec


def load_attribution_spec(path: Any) -> AttributionSpec:
    data = load_yaml(path)
    try:
        return parse_attribution_spec(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# -- models and their costs --------------------------------------------------------------------
def width_label(w: float) -> str:
    return f"w{w:g}"


def model_dict(spec: AttributionSpec, w: float) -> dict[str, Any]:
    """A :class:`~proxyscale.train.vision.VisionModelSpec` (as data) for width ``w``."""
    lad = spec.ladder
    c, h, _ = IMAGE_SHAPES[spec.data.name]
    if lad.family == "mlp":
        return {"kind": "mlp", "mlp": {"in_dim": c * h * h, "hidden": lad.hidden, "n_classes": 10, "depth": lad.depth,
                                       "width_mult": w, "mup": lad.mup, "base_width_mult": lad.base_width_mult}}
    strides = (1, 2, 2, 1) if h <= 8 else (1, 2, 2, 2)  # keep a 2x2 map before pooling (resnet.strides_for)
    return {"kind": "resnet", "resnet": {"width_mult": w, "n_classes": 10, "in_channels": c, "mup": lad.mup,
                                         "base_width_mult": lad.base_width_mult, "strides": list(strides),
                                         "group_size": lad.group_size}}


def model_params(spec: AttributionSpec, w: float) -> int:
    """Parameter count of width ``w`` (built on the meta device: no memory, no init)."""
    import torch

    from ..train.vision import VisionModelSpec, build_model

    with torch.device("meta"):
        model = build_model(from_dict(VisionModelSpec, model_dict(spec, w), "model").config())
    return sum(p.numel() for p in model.parameters())


def _vision_train_config(spec: AttributionSpec) -> dict[str, Any]:
    """The training recipe as data, validated by ``VisionTrainConfig`` (checkpoints from ``trak``)."""
    from ..train.vision import VisionTrainConfig

    if "n_checkpoints" in spec.train:
        raise ConfigError("train.n_checkpoints: set trak.checkpoints_per_model instead")
    cfg = from_dict(VisionTrainConfig, {**spec.train, "n_checkpoints": spec.trak.checkpoints_per_model}, "train")
    return to_dict(cfg)


def train_flops(params: int, n_examples: int, epochs: int) -> float:
    """Training FLOPs: 6 · P · N · epochs (see ``TRAIN_FLOPS_FORMULA``)."""
    return 6.0 * params * n_examples * epochs


def attribution_flops(params: int, k: int, n_train: int, n_targets: int, tokens: int = 1) -> float:
    """SPEC §7 cost of featurising and scoring with one checkpoint (``ATTR_FLOPS_FORMULA``)."""
    p, t = float(params), float(tokens)
    return (6 * p * t + 4 * k * k + 2 * k * p) * n_train + 2 * p * (3 * t + k) * n_targets + float(k) ** 3


def width_table(spec: AttributionSpec) -> list[dict[str, Any]]:
    """One row per width: params, training FLOPs per model, compute ratio to the reference."""
    epochs = _vision_train_config(spec)["epochs"]
    rows = []
    for w in sorted(spec.ladder.widths):
        p = model_params(spec, w)
        rows.append({"width": w, "label": width_label(w), "params": p, "is_reference": w == spec.ladder.reference,
                     "train_flops": train_flops(p, spec.data.n_train, epochs)})
    ref = next(r for r in rows if r["is_reference"])
    for r in rows:
        r["compute_ratio"] = ref["train_flops"] / r["train_flops"]
    return rows


# -- the plan ----------------------------------------------------------------------------------
def _data_cfg(spec: AttributionSpec) -> dict[str, Any]:
    return {**to_dict(spec.data), "seed": spec.seed}


def build_attribution_plan(spec: AttributionSpec) -> Plan:
    """Every step of the attribution study, dependencies first."""
    plan, data, train = Plan(), _data_cfg(spec), _vision_train_config(spec)
    rows = {r["width"]: r for r in width_table(spec)}
    trak_cfg = to_dict(spec.trak)
    inputs: dict[str, str] = {}
    trak_keys: dict[float, str] = {}
    for w in sorted(spec.ladder.widths):
        lab, row = width_label(w), rows[w]
        seeds = [derive_seed(spec.seed, "attr-train", lab, m) for m in range(spec.models_per_width)]
        tk = plan.add(Step("attr_train", lab, {"data": data, "model": model_dict(spec, w), "train": train,
                                                "seeds": seeds}, cost=row["train_flops"] * len(seeds), info=row))
        cost = attribution_flops(row["params"], spec.trak.k, spec.data.n_train, spec.data.n_targets)
        trak_keys[w] = plan.add(Step("attr_trak", lab, {"data": data, "model": model_dict(spec, w), "trak": trak_cfg,
                                                         "seed": derive_seed(spec.seed, "trak", lab)},
                                     {"models": tk}, cost=cost * len(seeds) * spec.trak.checkpoints_per_model))
        inputs[f"train:{lab}"], inputs[f"trak:{lab}"] = tk, trak_keys[w]
    inputs.update(_add_lds(plan, spec, data, train, rows[spec.ladder.reference]))
    inputs.update(_add_counterfactual(plan, spec, data, train, rows, trak_keys))
    if spec.lm is not None:
        from .attribution_lm import add_lm_steps

        inputs.update(add_lm_steps(plan, spec))
    plan.add(Step("attr_analyze", spec.name, _analysis_config(spec, list(rows.values())), inputs, cost=1e9))
    return plan


def _add_lds(plan: Plan, spec: AttributionSpec, data: dict[str, Any], train: dict[str, Any],
             ref: dict[str, Any]) -> dict[str, str]:
    lds = spec.lds
    total = lds.n_subsets + lds.n_holdout  # held-out subsets are the last n_holdout rows
    sub = plan.add(Step("attr_subsets", f"a{lds.alpha:g}-m{total}",
                        {"n_train": spec.data.n_train, "alpha": lds.alpha, "n_subsets": total,
                         "seed": derive_seed(spec.seed, "lds-subsets")}, cost=1e6))
    out = {"subsets": sub}
    per_model = train_flops(ref["params"], math.floor(lds.alpha * spec.data.n_train), train["epochs"])
    for start in range(0, total, lds.chunk):
        stop = min(start + lds.chunk, total)
        cfg = {"data": data, "model": model_dict(spec, spec.ladder.reference), "train": {**train, "n_checkpoints": 1},
               "n_seeds": lds.seeds_per_subset, "start": start, "stop": stop,
               "seed": (derive_seed(spec.seed, "lds-retrain") if lds.shared_seeds
                        else derive_seed(spec.seed, "lds-retrain", start)),
               "shared_seeds": lds.shared_seeds}
        out[f"retrain:{start:06d}"] = plan.add(Step("attr_retrain", f"{ref['label']}-{start}-{stop}", cfg,
                                                    {"subsets": sub},
                                                    cost=per_model * (stop - start) * lds.seeds_per_subset))
    return out


def _add_counterfactual(plan: Plan, spec: AttributionSpec, data: dict[str, Any], train: dict[str, Any],
                        rows: dict[float, dict[str, Any]], trak_keys: dict[float, str]) -> dict[str, str]:
    cf = spec.counterfactual
    if cf.n_targets == 0:
        return {}
    sw = cf.scores_width if cf.scores_width is not None else min(spec.ladder.widths)
    removal = {"fractions": list(cf.fractions), "class_fractions": list(cf.class_fractions), "n_random": cf.n_random}
    sets = plan.add(Step("attr_cf_sets", f"{width_label(sw)}-t{cf.n_targets}",
                         {"data": data, "removal": removal, "n_targets": cf.n_targets,
                          "seed": derive_seed(spec.seed, "cf-sets")}, {"scores": trak_keys[sw]}, cost=1e6))
    n_sets = cf.n_targets * (len(cf.fractions) * (cf.n_random + 4) + len(cf.class_fractions))
    out = {"cf_sets": sets}
    for w, row in rows.items():
        cfg = {"data": data, "model": model_dict(spec, w), "train": {**train, "n_checkpoints": 1},
               "n_seeds": cf.n_seeds, "seed": derive_seed(spec.seed, "cf-train", row["label"])}
        out[f"cf:{row['label']}"] = plan.add(Step("attr_cf_train", row["label"], cfg, {"sets": sets},
                                                  cost=row["train_flops"] * n_sets * cf.n_seeds))
    return out


def _analysis_config(spec: AttributionSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"widths": rows, "reference": width_label(spec.ladder.reference), "family": spec.ladder.family,
            "dataset": spec.data.name, "n_train": spec.data.n_train, "n_targets": spec.data.n_targets,
            "models_per_width": spec.models_per_width, "trak": to_dict(spec.trak), "lds": to_dict(spec.lds),
            "counterfactual": to_dict(spec.counterfactual), "epochs": _vision_train_config(spec)["epochs"],
            "n_boot": spec.n_boot, "seed": spec.seed, "name": spec.name,
            "formulas": {"train": TRAIN_FLOPS_FORMULA, "attribution": ATTR_FLOPS_FORMULA}}


def describe_attribution_plan(spec: AttributionSpec, plan: Plan, store: Any = None) -> str:
    """Dry run text: every step, then the width ladder with parameters and compute ratios."""
    from collections import Counter

    lines = [f"attribution study '{spec.name}': {len(plan)} steps "
             f"({', '.join(f'{n} {k}' for k, n in Counter(s.kind for s in plan).items())})", ""]
    for s in plan:
        state = f"[{store.state(s.key)}] " if store is not None else ""
        lines.append(f"  {state}{s.key}  cost≈{s.cost:.3g} FLOPs")
    lines += ["", f"  {'width':>8} {'params':>12} {'train FLOPs/model':>18} {'ref/proxy':>10}"]
    for r in width_table(spec):
        lines.append(f"  {r['label']:>8} {r['params']:>12,} {r['train_flops']:>18.3g} {r['compute_ratio']:>9.1f}x")
    lines.append(f"  {TRAIN_FLOPS_FORMULA}")
    return "\n".join(lines)


def check_kind(data: Any) -> None:
    """A helpful error for a misspelt ``kind``."""
    if isinstance(data, dict) and "kind" in data and data["kind"] != "attribution":
        raise ConfigError(f"kind: '{data['kind']}' is not a study kind{suggest(str(data['kind']), ['attribution'])}; "
                          "use 'kind: attribution' for an attribution study, or leave it out for a "
                          "small-to-large study")

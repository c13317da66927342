"""The attribution study's plan, composed from the vision width-ladder, LDS and (optionally) LM
attribution fragments plus this study's counterfactual removal and analysis::

    attr_train (per width) ─► attr_trak (per width) ──────────────────────────┐
    attr_subsets ─► attr_retrain (reference width, chunks of subsets) ────────┤
    attr_trak (scores width) ─► attr_cf_sets ─► attr_cf_train (per width) ────┤
    [lm block: data fragment ─► attr_lm_* steps] ─────────────────────────────┤
                                                             attr_analyze ◄───┘
"""
from __future__ import annotations

import math
from typing import Any

from ...config import to_dict
from ...models.ladder import ATTR_FLOPS_FORMULA, VISION_TRAIN_FLOPS_FORMULA, train_flops
from ...run.plan import Plan, Step
from ...seeding import derive_seed
from ..fragments.lds import add_lds
from ..fragments.lm_attr import add_lm_attribution
from ..fragments.vision import add_width_ladder, data_config, model_dict, width_label, width_table
from .spec import AttributionSpec


def widths(spec: AttributionSpec) -> list[dict[str, Any]]:
    """The width table (params, FLOPs per model, compute ratio) of the study's ladder."""
    return width_table(spec.data, spec.ladder, spec.vision_train()["epochs"])


def build_attribution_plan(spec: AttributionSpec) -> Plan:
    """Every step of the attribution study, dependencies first."""
    plan, train = Plan(), spec.vision_train()
    rows = {r["width"]: r for r in widths(spec)}
    inputs, trak_keys = add_width_ladder(plan, data=spec.data, ladder=spec.ladder, train=train, trak=spec.trak,
                                         models_per_width=spec.models_per_width, seed=spec.seed, rows=rows)
    inputs.update(_add_lds(plan, spec, train, rows[spec.ladder.reference]))
    inputs.update(_add_counterfactual(plan, spec, train, rows, trak_keys))
    if spec.lm is not None:
        inputs.update(add_lm_attribution(plan, spec.lm, spec.seed))
    plan.add(Step("attr_analyze", spec.name, _analysis_config(spec, list(rows.values())), inputs, cost=1e9))
    return plan


def _add_lds(plan: Plan, spec: AttributionSpec, train: dict[str, Any], ref: dict[str, Any]) -> dict[str, str]:
    lds = spec.lds
    base = {"data": data_config(spec.data, spec.seed),
            "model": model_dict(spec.data, spec.ladder, spec.ladder.reference),
            "train": {**train, "n_checkpoints": 1}, "n_seeds": lds.seeds_per_subset,
            "shared_seeds": lds.shared_seeds}

    def config(start: int, stop: int) -> dict[str, Any]:
        seed = (derive_seed(spec.seed, "lds-retrain") if lds.shared_seeds
                else derive_seed(spec.seed, "lds-retrain", start))
        return {**base, "start": start, "stop": stop, "seed": seed}

    per_model = train_flops(ref["params"], math.floor(lds.alpha * spec.data.n_train) * train["epochs"])
    return add_lds(plan, lds, n_train=spec.data.n_train, subsets_name=f"a{lds.alpha:g}-m{lds.total}",
                   subsets_seed=derive_seed(spec.seed, "lds-subsets"), retrain_kind="attr_retrain",
                   retrain_name=lambda a, b: f"{ref['label']}-{a}-{b}", retrain_config=config, inputs={},
                   per_model_flops=per_model)


def _add_counterfactual(plan: Plan, spec: AttributionSpec, train: dict[str, Any], rows: dict[float, dict[str, Any]],
                        trak_keys: dict[float, str]) -> dict[str, str]:
    cf = spec.counterfactual
    if cf.n_targets == 0:
        return {}
    data = data_config(spec.data, spec.seed)
    sw = cf.scores_width if cf.scores_width is not None else min(spec.ladder.widths)
    removal = {"fractions": list(cf.fractions), "class_fractions": list(cf.class_fractions), "n_random": cf.n_random}
    sets = plan.add(Step("attr_cf_sets", f"{width_label(sw)}-t{cf.n_targets}",
                         {"data": data, "removal": removal, "n_targets": cf.n_targets,
                          "seed": derive_seed(spec.seed, "cf-sets")}, {"scores": trak_keys[sw]}, cost=1e6))
    n_sets = cf.n_targets * (len(cf.fractions) * (cf.n_random + 4) + len(cf.class_fractions))
    out = {"cf_sets": sets}
    for w, row in rows.items():
        cfg = {"data": data, "model": model_dict(spec.data, spec.ladder, w), "train": {**train, "n_checkpoints": 1},
               "n_seeds": cf.n_seeds, "seed": derive_seed(spec.seed, "cf-train", row["label"])}
        out[f"cf:{row['label']}"] = plan.add(Step("attr_cf_train", row["label"], cfg, {"sets": sets},
                                                  cost=row["train_flops"] * n_sets * cf.n_seeds))
    return out


def _analysis_config(spec: AttributionSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"widths": rows, "reference": width_label(spec.ladder.reference), "family": spec.ladder.family,
            "dataset": spec.data.name, "n_train": spec.data.n_train, "n_targets": spec.data.n_targets,
            "models_per_width": spec.models_per_width, "trak": to_dict(spec.trak), "lds": to_dict(spec.lds),
            "counterfactual": to_dict(spec.counterfactual), "epochs": spec.vision_train()["epochs"],
            "n_boot": spec.n_boot, "seed": spec.seed, "name": spec.name,
            "formulas": {"train": VISION_TRAIN_FLOPS_FORMULA, "attribution": ATTR_FLOPS_FORMULA}}


def describe_attribution_plan(spec: AttributionSpec, plan: Plan, store: Any = None) -> str:
    """Dry run text: every step, then the width ladder with parameters and compute ratios."""
    from ...run.describe import describe_steps

    lines = [describe_steps(f"attribution study '{spec.name}'", plan, store),
             "", f"  {'width':>8} {'params':>12} {'train FLOPs/model':>18} {'ref/proxy':>10}"]
    for r in widths(spec):
        lines.append(f"  {r['label']:>8} {r['params']:>12,} {r['train_flops']:>18.3g} {r['compute_ratio']:>9.1f}x")
    lines.append(f"  {VISION_TRAIN_FLOPS_FORMULA}")
    return "\n".join(lines)


def width_steps(study: Any, spec: Any, width: float | None) -> tuple[Plan, str]:
    """The sub-plan that trains one width's ensemble and computes its TRAK scores (for
    ``proxyscale attribute``), and the TRAK step's key."""
    from ...errors import ConfigError

    if getattr(study, "kind", None) != "attribution":
        raise ConfigError("proxyscale attribute needs an attribution spec (a YAML file with `kind: attribution`)")
    w = spec.ladder.reference if width is None else width
    if w not in spec.ladder.widths:
        raise ConfigError(f"--width {w:g} is not one of the spec's widths {list(spec.ladder.widths)}")
    full, sub = build_attribution_plan(spec), Plan()
    trak = next(st for st in full.of_kind("attr_trak") if st.name == width_label(w))
    sub.add(full[trak.inputs["models"]])
    sub.add(trak)
    return sub, trak.key

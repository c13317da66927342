"""The attribution study's analysis: pure numpy over the finished steps' arrays.

Writes one analysis directory through :func:`proxyscale.analyze.io.write_analysis` (kind
``"attribution"``; read by :mod:`proxyscale.studies.attribution.report`):

- table ``lds``: one row per (width, method ∈ {trak, grad_dot}): LDS mean, bootstrap CI
  over targets, params, training FLOPs per model, compute ratio to the reference, and for
  TRAK the λ ratio and Q weighting used (chosen on the held-out subsets when there are
  several candidates);
- table ``lds_candidates``: per width and candidate (λ ratio, Q): held-out LDS and LDS;
- table ``lds_by_m``: per width, LDS (with CI) of the chosen setting with the first 1..M models;
- array ``lds_per_target`` (W, T): TRAK LDS per width and target (rows in ``widths`` order);
- array ``order_similarity`` (W, W): Spearman between two widths' score vectors, mean over targets;
- table ``counterfactual``: one row per (width, removal set): its margin and the reference's;
- table ``counterfactual_r2``: per width, R² of the reference margin on that width's margin;
- table ``compute``: FLOPs (formulas in ``meta``) and wall seconds per width and role;
- array ``lm_outputs`` (m, S, T), only with an ``lm`` block: the reference rung's retrained outputs;
- ``meta`` (in ``analysis.json``, written last): settings, widths, the ground truth's seed-to-seed
  agreement (``noise_ceiling``), the LDS a perfect predictor could reach (``lds_ceiling``) and
  the language-model results (``lm``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..store import read_json
from .io import write_analysis

KIND = "attribution"  # the study kind recorded in the analysis manifest


def _npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _wall(path: Path) -> float:
    rec = path / "_step.json"
    return float(read_json(rec).get("wall_s", 0.0)) if rec.is_file() else 0.0


def ground_truth(inputs: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Subset masks (m, n) and reference outputs (m, S, T), chunks concatenated in order
    (the last ``lds.n_holdout`` rows are the held-out subsets)."""
    masks = _npy(inputs["subsets"] / "masks.npy")
    chunks = sorted(r for r in inputs if r.startswith("retrain:"))
    outputs = np.concatenate([_npy(inputs[r] / "outputs.npy") for r in chunks], axis=0)
    return masks[: len(outputs)], outputs


def order_similarity(scores: list[np.ndarray]) -> np.ndarray:
    """(W, W) mean over targets of the Spearman correlation of two widths' attribution vectors."""
    from ..attribute.lds import spearman_columns

    w = len(scores)
    out = np.eye(w)
    for i in range(w):
        for j in range(i + 1, w):
            out[i, j] = out[j, i] = float(np.nanmean(spearman_columns(scores[i], scores[j])))
    return out


Candidates = dict[tuple[float, bool, int], np.ndarray]  # (λ ratio, Q, models) -> scores (n, T)


def _candidates(d: Path) -> Candidates:
    """The candidate score matrices a TRAK step wrote (older steps: none, just scores.npy)."""
    rec = read_json(d / "trak.json")
    if "candidates" not in rec:
        return {}
    arr = np.load(d / "candidates.npy", mmap_mode="r", allow_pickle=False)
    return {(c["lambda_ratio"], c["use_q"], c["n_models"]): np.asarray(arr[i])
            for i, c in enumerate(rec["candidates"])}


def _choose(cands: Candidates, m_full: int, hold: tuple[np.ndarray, np.ndarray],
            default: tuple[float, bool]) -> tuple[tuple[float, bool], list[dict[str, Any]]]:
    """The (λ ratio, Q) with the best held-out LDS among full-ensemble candidates, and every
    candidate's held-out LDS (no held-out subsets: the configured default)."""
    from ..attribute.lds import lds

    full = [key for key in cands if key[2] == m_full]
    if len(full) < 2 or len(hold[0]) == 0:
        return default, []
    rows = [{"lambda_ratio": r, "use_q": q, "lds_holdout": lds(cands[r, q, m], *hold).mean} for r, q, m in full]
    best = max(rows, key=lambda r: r["lds_holdout"])
    return (best["lambda_ratio"], best["use_q"]), rows


def _lds_rows(cfg: dict[str, Any], inputs: dict[str, Path], masks: np.ndarray,
              outputs: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray, list[dict], list[dict]]:
    from ..attribute.lds import lds, paired_difference
    from ..seeding import np_rng

    m, m_full = cfg["lds"]["n_subsets"], cfg["models_per_width"]
    fit, hold = (masks[:m], outputs[:m]), (masks[m:], outputs[m:])
    default = (float(cfg["trak"]["lambda_ratio"]), bool(cfg["trak"]["use_q"]))
    rows, per_target, cand_rows, by_m = [], [], [], []
    for w in cfg["widths"]:
        d, lab = inputs[f"trak:{w['label']}"], w["label"]
        cands = _candidates(d)
        chosen, held = _choose(cands, m_full, hold, default)
        for r in held:
            cand_rows.append({"label": lab, "width": w["width"], **r,
                              "lds": lds(cands[r["lambda_ratio"], r["use_q"], m_full], *fit).mean,
                              "chosen": (r["lambda_ratio"], r["use_q"]) == chosen})
        trak_scores = cands.get((*chosen, m_full))
        if trak_scores is None:
            trak_scores = _npy(d / "scores.npy")
        results = {method: lds(scores, *fit, rng=np_rng(cfg["seed"], "lds-boot", lab, method), n_boot=cfg["n_boot"])
                   for method, scores in (("trak", trak_scores), ("grad_dot", _npy(d / "grad_dot.npy")))}
        diff = paired_difference(results["trak"], results["grad_dot"], np_rng(cfg["seed"], "lds-diff", lab),
                                 cfg["n_boot"])
        for method, res in results.items():
            is_trak = method == "trak"
            rows.append({"width": w["width"], "label": lab, "method": method, "params": w["params"],
                         "train_flops": w["train_flops"], "compute_ratio": w["compute_ratio"],
                         "is_reference": w["is_reference"], "lds": res.mean, "ci_low": res.ci_low,
                         "ci_high": res.ci_high, "n_valid": res.n_valid,
                         "lambda_ratio": chosen[0] if is_trak else float("nan"),
                         "use_q": chosen[1] if is_trak else False,
                         "minus_grad_dot": diff[0] if is_trak else float("nan"),
                         "minus_grad_dot_low": diff[1] if is_trak else float("nan"),
                         "minus_grad_dot_high": diff[2] if is_trak else float("nan")})
        per_target.append(results["trak"].per_target)
        for (r, q, n_models), s in cands.items():
            if (r, q) == chosen:
                res = lds(s, *fit, rng=np_rng(cfg["seed"], "lds-boot-m", lab, n_models), n_boot=cfg["n_boot"])
                by_m.append({"label": lab, "width": w["width"], "n_models": n_models, "lds": res.mean,
                             "ci_low": res.ci_low, "ci_high": res.ci_high})
    return rows, np.stack(per_target), cand_rows, by_m


def _counterfactual(cfg: dict[str, Any], inputs: dict[str, Path]) -> tuple[list[dict], list[dict]]:
    from ..attribute.counterfactual import r_squared

    if "cf_sets" not in inputs:
        return [], []
    names = read_json(inputs["cf_sets"] / "sets.json")["names"]
    targets = _npy(inputs["cf_sets"] / "targets.npy")
    ref = _npy(inputs[f"cf:{cfg['reference']}"] / "margins.npy")
    points, fits = [], []
    for w in cfg["widths"]:
        m = _npy(inputs[f"cf:{w['label']}"] / "margins.npy")
        for i, nm in enumerate(names):
            points.append({"label": w["label"], "width": w["width"], "target": int(targets[i]), "set": nm,
                           "kind": nm.split("-")[0], "margin": float(m[i]), "ref_margin": float(ref[i])})
        fits.append({"label": w["label"], "width": w["width"], "compute_ratio": w["compute_ratio"],
                     "is_reference": w["is_reference"], "r2": r_squared(m, ref), "n_points": len(names),
                     "pearson": float(np.corrcoef(m, ref)[0, 1])})
    return points, fits


def _compute_rows(cfg: dict[str, Any], inputs: dict[str, Path]) -> list[dict[str, Any]]:
    """Training vs attribution FLOPs (from the formulas) and wall seconds spent, per width."""
    from ..models.ladder import attribution_flops, train_flops

    rows = []
    n, t, k = cfg["n_train"], cfg["n_targets"], cfg["trak"]["k"]
    for w in cfg["widths"]:
        lab, m = w["label"], cfg["models_per_width"]
        n_ckpt = read_json(inputs[f"trak:{lab}"] / "trak.json")["n_checkpoints"]
        rows.append({"label": lab, "width": w["width"], "role": "train ensemble", "n_models": m,
                     "flops": w["train_flops"] * m, "wall_s": _wall(inputs[f"train:{lab}"])})
        rows.append({"label": lab, "width": w["width"], "role": "TRAK", "n_models": n_ckpt,
                     "flops": attribution_flops(w["params"], k, n, t) * n_ckpt, "wall_s": _wall(inputs[f"trak:{lab}"])})
        if f"cf:{lab}" in inputs:
            rec = read_json(inputs[f"cf:{lab}"] / "cf.json")
            n_ex = sum(n - r for r in rec["removed"]) * cfg["counterfactual"]["n_seeds"]
            rows.append({"label": lab, "width": w["width"], "role": "counterfactual retraining",
                         "n_models": rec["n_models"], "flops": train_flops(w["params"], n_ex * cfg["epochs"]),
                         "wall_s": _wall(inputs[f"cf:{lab}"])})
    ref = next(w for w in cfg["widths"] if w["is_reference"])
    chunks = [r for r in inputs if r.startswith("retrain:")]
    n_models = (cfg["lds"]["n_subsets"] + cfg["lds"].get("n_holdout", 0)) * cfg["lds"]["seeds_per_subset"]
    rows.append({"label": ref["label"], "width": ref["width"], "role": "LDS ground truth", "n_models": n_models,
                 "flops": train_flops(ref["params"], int(cfg["lds"]["alpha"] * n) * n_models * cfg["epochs"]),
                 "wall_s": sum(_wall(inputs[r]) for r in chunks)})
    return rows


def analyze_attribution(cfg: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Compute every table of the attribution study and write them with the manifest last;
    returns the manifest's ``meta`` record."""
    import pandas as pd

    from ..attribute.lds import lds_ceiling, seed_agreement

    masks, outputs = ground_truth(inputs)
    lds_rows, per_target, cand_rows, by_m = _lds_rows(cfg, inputs, masks, outputs)
    scores = [_npy(inputs[f"trak:{w['label']}"] / "scores.npy") for w in cfg["widths"]]
    points, fits = _counterfactual(cfg, inputs)
    tables = {
        "lds": pd.DataFrame(lds_rows),
        "lds_candidates": pd.DataFrame(cand_rows, columns=[
            "label", "width", "lambda_ratio", "use_q", "lds_holdout", "lds", "chosen"]),
        "lds_by_m": pd.DataFrame(by_m, columns=["label", "width", "n_models", "lds", "ci_low", "ci_high"]),
        "counterfactual": pd.DataFrame(points, columns=[
            "label", "width", "target", "set", "kind", "margin", "ref_margin"]),
        "counterfactual_r2": pd.DataFrame(fits, columns=[
            "label", "width", "compute_ratio", "is_reference", "r2", "n_points", "pearson"]),
        "compute": pd.DataFrame(_compute_rows(cfg, inputs))}
    arrays = {"lds_per_target": per_target, "order_similarity": order_similarity(scores)}
    lm = None
    if any(r.startswith("lm_") for r in inputs):
        lm, arrays["lm_outputs"] = analyze_lm(cfg, inputs)
    fit_outputs = outputs[:cfg["lds"]["n_subsets"]]
    meta = {key: cfg[key] for key in ("name", "dataset", "family", "reference", "widths", "n_train", "n_targets",
                                      "models_per_width", "trak", "lds", "counterfactual", "epochs", "formulas")}
    meta.update(noise_ceiling=seed_agreement(fit_outputs), lds_ceiling=lds_ceiling(fit_outputs), lm=lm)
    write_analysis(tables, out, kind=KIND, meta=meta, arrays=arrays)
    return meta


def analyze_lm(cfg: dict[str, Any], inputs: dict[str, Path]) -> tuple[dict[str, Any], np.ndarray]:
    """LDS per rung (with bootstrap CI) against the reference rung's retraining: the ``lm`` record
    of the analysis meta, and the reference's retrained outputs (m, S, T) it was scored against."""
    from ..attribute.lds import lds, seed_agreement
    from ..seeding import np_rng

    masks = np.load(inputs["lm_subsets"] / "masks.npy", allow_pickle=False)
    chunks = sorted(r for r in inputs if r.startswith("lm_retrain:"))
    outputs = np.concatenate([np.load(inputs[r] / "outputs.npy", allow_pickle=False) for r in chunks])
    rows = []
    for role in sorted(r for r in inputs if r.startswith("lm_trak:")):
        meta = read_json(inputs[role] / "trak.json")
        res = lds(np.load(inputs[role] / "scores.npy", allow_pickle=False), masks, outputs,
                  rng=np_rng(cfg["seed"], "lm-lds-boot", role), n_boot=cfg["n_boot"])
        rows.append({"rung": role.split(":", 1)[1], "params": meta["params"], "train_flops": meta["train_flops"],
                     "is_reference": meta["is_reference"], "lds": res.mean, "ci_low": res.ci_low,
                     "ci_high": res.ci_high, "n_valid": res.n_valid})
    ref = next(r for r in rows if r["is_reference"])
    for r in rows:
        r["compute_ratio"] = ref["train_flops"] / r["train_flops"]
    rows.sort(key=lambda r: -r["compute_ratio"])
    record = {"rows": rows, "noise_ceiling": seed_agreement(outputs), "n_docs": int(masks.shape[1]),
              "n_targets": int(outputs.shape[2]), "n_subsets": int(len(outputs)), "seeds": int(outputs.shape[1])}
    return record, outputs

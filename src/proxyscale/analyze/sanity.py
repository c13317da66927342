"""Checks to read before any finding: has the reference learned, and do distributions differ?

A ranking of training distributions by the reference means nothing when the reference is no
better than guessing, or when its seeds disagree as much as its distributions do. Two tables:

- ``sanity_models``: per test set × model, the mean per-token loss against a uniform predictor
  over the vocabulary (ln V nats per token; V from the models table's optional ``vocab_size``).
  ``near_uniform``: the loss is at least :data:`UNIFORM_FRACTION` of ln V. Bits per byte has no
  model-free analogue (a uniform token predictor's bits per byte depends on the tokenizer's
  bytes per token), so the check always reads the per-token loss.
- ``sanity_reference``: per test set, whether the reference has learned (not near uniform, and
  below the best n-gram baseline when there is one) and whether its distributions can be told
  apart: the sd across distributions of its seed-mean values of the analysed metric against the
  noise of one seed mean (pooled seed sd / √S). With no real differences that ratio is about 1;
  ``indistinct`` when it is below :data:`SPREAD_RATIO`. ``trust`` is False when either fails:
  the report then flags rank and partial-r results on that test set instead of stating them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .inputs import Study

UNIFORM_FRACTION = 0.95
SPREAD_RATIO = 2.0


def _uniform(models: pd.DataFrame, model: str) -> float:
    if "vocab_size" not in models.columns:
        return math.nan
    v = pd.to_numeric(pd.Series([models.at[model, "vocab_size"]]), errors="coerce").iloc[0]
    return math.log(float(v)) if np.isfinite(v) and v > 1 else math.nan


def sanity_models(loss_means: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Per test set × model: mean per-token loss (over distributions and seeds) against ln V.

    ``loss_means``: test_set, model, distribution, seed, value (per-token loss run means)."""
    g = loss_means.groupby(["test_set", "model"], sort=True)["value"].mean().reset_index(name="loss")
    g["uniform_loss"] = [_uniform(models, m) for m in g["model"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        g["loss_over_uniform"] = g["loss"] / g["uniform_loss"]
    g["near_uniform"] = g["loss_over_uniform"] >= UNIFORM_FRACTION
    return g


def _spread(mat: pd.DataFrame) -> tuple[float, float, int]:
    """(sd across distributions of the seed means, pooled seed sd, seeds per distribution)."""
    sub = mat.to_numpy(dtype=np.float64)  # (S, D)
    n = np.isfinite(sub).sum(axis=0)
    means = np.nanmean(sub, axis=0)
    spread = float(np.std(means[np.isfinite(means)], ddof=1)) if np.isfinite(means).sum() >= 2 else math.nan
    dof = int((n - 1).clip(min=0).sum())
    ss = float(np.nansum((sub - means) ** 2))
    return spread, math.sqrt(ss / dof) if dof > 0 else math.nan, int(n.min()) if len(n) else 0


def sanity_reference(study: Study, models_check: pd.DataFrame) -> pd.DataFrame:
    """Per test set: has the reference learned, and can its distributions be told apart?"""
    ref, rows = study.reference, []
    grams = set(study.ngrams())
    for ts in sorted(set(study.run_means["test_set"])):
        mc = models_check[models_check["test_set"] == ts].set_index("model")
        r = mc.loc[ref] if ref in mc.index else None
        gram_loss = mc.loc[[g for g in mc.index if g in grams], "loss"]
        best_gram = float(gram_loss.min()) if len(gram_loss) else math.nan
        ref_loss = float(r["loss"]) if r is not None else math.nan
        reasons = []
        if r is not None and bool(r["near_uniform"]):
            reasons.append(f"its loss {ref_loss:.3g} is within {1 - UNIFORM_FRACTION:.0%} of a uniform predictor's "
                           f"{float(r['uniform_loss']):.3g} nats per token")
        if np.isfinite(best_gram) and ref_loss >= best_gram:
            reasons.append(f"its loss {ref_loss:.3g} is no lower than the best n-gram's {best_gram:.3g}")
        spread, seed_sd, n_seeds = _spread(study.matrix(ts, ref))
        noise = seed_sd / math.sqrt(n_seeds) if n_seeds > 0 and np.isfinite(seed_sd) else math.nan
        ratio = spread / noise if np.isfinite(noise) and noise > 0 else (math.inf if noise == 0 else math.nan)
        indistinct = bool(np.isfinite(ratio) and ratio < SPREAD_RATIO)
        rows.append({"test_set": ts, "reference": ref, "ref_loss": ref_loss,
                     "uniform_loss": float(r["uniform_loss"]) if r is not None else math.nan,
                     "best_ngram_loss": best_gram, "not_learned": bool(reasons), "not_learned_why": "; ".join(reasons),
                     "spread_sd": spread, "seed_sd": seed_sd, "noise_sd": noise, "n_ref_seeds": n_seeds,
                     "spread_ratio": ratio, "indistinct": indistinct, "trust": not (reasons or indistinct)})
    return pd.DataFrame(rows)

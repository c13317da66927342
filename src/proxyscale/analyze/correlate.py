"""Small-to-large correlation: do proxies rank training distributions like the reference does?

:func:`analyze_study` turns per-example results into the tables the report draws (SPEC §4).
For each test set, one point per training distribution: x = a proxy's mean test loss
(averaged over its seeds), y = the reference's (averaged over its seeds). The tables:

A run's mean test loss is the mean of per-example losses (``loss="example_mean"``) or total
loss over total predicted tokens (``"token_mean"``); the settings table records which.

- ``summary``: per test set × proxy, R² of the linear fit, Pearson, Spearman, Kendall τ-b,
  decision accuracy, bootstrap CIs over test examples × seeds
  (:mod:`proxyscale.analyze.bootstrap`; ``ci_seed_term`` says whether both models had seeds
  to estimate seed noise from), leave-one-distribution-out R² (its minimum and which
  distribution), the largest Cook's distance (and where), ``one_point_carries``
  (:func:`proxyscale.analyze.robust.carried_by_one`), and the signal beyond n-grams:
  the partial correlation with the reference given the best n-gram baseline (highest R² among
  the ``kind == "ngram"`` models on that test set) with an exact permutation p over
  distributions (one-sided: does the proxy add *positive* signal?) and its Holm-adjusted
  ``partial_p_holm`` over every such test in the table.
- ``noise_ceiling``: the same comparisons between two reference seeds (mean over seed pairs),
  and ``ceiling_r2``: the reliability of the seed-averaged reference (Spearman–Brown), the R²
  a perfect proxy would reach.
- ``points``: the scatter data, with each point's R² when it is left out and its Cook's
  distance; ``per_example``: per test example, Pearson r across distributions between proxy
  and reference losses.
- ``smallest_proxy``: the least-compute neural proxy reaching each threshold.
- ``extrapolation`` / ``extrapolation_summary``: see :mod:`proxyscale.analyze.extrapolate`.
- ``summary_loso``: for per-source test sets, the summary again without the distributions
  that contain that source (such a distribution is an outlier that flatters every proxy).
- ``models``, ``distributions``, ``test_sets`` (with ``framing`` and ``lead``) and
  ``settings``: what the report needs to describe the study without other files.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from ..seeding import np_rng
from . import bootstrap as bs
from . import extrapolate as ex
from . import robust, stats
from .bootstrap import Replicates
from .inputs import Study, complete_rows, load_study, seed_mean, shared_distributions
from .io import FORMAT_VERSION, read_analysis, write_analysis

__all__ = ["analyze_study", "write_analysis", "read_analysis"]
_ALTERNATIVE = "greater"
CI_METHOD = ("bootstrap over test examples × seeds (seed variance pooled over distributions); "
             "union of percentile and basic intervals")


def _point_stats(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"r2": stats.r2_linear(x, y), "pearson": stats.pearson(x, y), "spearman": stats.spearman(x, y),
            "kendall": stats.kendall_tau_b(x, y), "decision_accuracy": stats.decision_accuracy(x, y)}


def _compare(study: Study, ts: str, model: str, dists: list[str], reps: Replicates | None, level: float,
             r2_threshold: float) -> dict[str, Any]:
    """Statistics of one proxy against the reference on ``dists``: point values, intervals from
    the example × seed bootstrap, and how much the fit leans on one distribution."""
    xm, ym = study.matrix(ts, model), study.matrix(ts, study.reference)
    x, _, nx = seed_mean(xm, dists)
    y, _, ny = seed_mean(ym, dists)
    row: dict[str, Any] = {"n_dist": len(dists), "n_seeds": int(nx.min()), "ref_n_seeds": int(ny.min())}
    row.update(_point_stats(x, y))
    for key, fn in (("r2", stats.r2_linear), ("decision_accuracy", stats.decision_accuracy)):
        lo = hi = math.nan
        if reps is not None and len(dists) >= 3:
            vals = fn(reps.take(model, dists), reps.take(study.reference, dists))
            lo, hi = bs.robust_ci(vals, row[key], level)
        row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
    row["ci_seed_term"] = bool(reps is not None and reps.seed_df.get(model, 0) > 0
                               and reps.seed_df.get(study.reference, 0) > 0)
    loo, cook = robust.loo_r2(x, y), robust.cooks_distance(x, y)
    i_loo = int(np.nanargmin(loo)) if np.isfinite(loo).any() else None
    i_cook = int(np.nanargmax(cook)) if np.isfinite(cook).any() else None
    row["r2_loo_min"] = float(loo[i_loo]) if i_loo is not None else math.nan
    row["r2_loo_min_dist"] = dists[i_loo] if i_loo is not None else None
    row["cooks_max"] = float(cook[i_cook]) if i_cook is not None else math.nan
    row["cooks_max_dist"] = dists[i_cook] if i_cook is not None else None
    row["one_point_carries"] = robust.carried_by_one(row["r2"], row["r2_loo_min"], r2_threshold)
    return row


def _partial(study: Study, ts: str, model: str, control: str, dists: list[str], seed: int,
             scope: str) -> tuple[float, float, bool]:
    """Partial r of ``model`` with the reference given ``control``, and its permutation p."""
    x = seed_mean(study.matrix(ts, model), dists)[0]
    y = seed_mean(study.matrix(ts, study.reference), dists)[0]
    z = seed_mean(study.matrix(ts, control), dists)[0]
    if len(dists) < 4:  # 3 points leave one residual degree of freedom: r is ±1 by construction
        return math.nan, math.nan, False
    res = stats.partial_corr_permutation(x, y, z, rng=np_rng(seed, "perm", scope, ts, model),
                                         alternative=_ALTERNATIVE)
    return res.statistic, res.p_value, res.exact


def _summary_for(study: Study, ts: str, keep: list[str] | None, seed: int, reps: Replicates | None,
                 opts: dict[str, float], scope: str) -> list[dict]:
    ref = study.reference
    ref_flops = float(study.models.at[ref, "flops"])
    rows = []
    for m in study.proxies():
        dists = shared_distributions(study, ts, [m, ref], keep)
        if not dists:
            continue
        info = study.models.loc[m]
        flops = float(info["flops"])
        row = {"test_set": ts, "model": m, "kind": info["kind"], "params": int(info["params"]),
               "train_tokens": int(info["train_tokens"]), "flops": flops,
               "compute_ratio": ref_flops / flops if flops > 0 else math.inf}
        row.update(_compare(study, ts, m, dists, reps, opts["ci_level"], opts["r2_threshold"]))
        rows.append(row)
    ngram_rows = [r for r in rows if r["kind"] == "ngram" and np.isfinite(r["r2"])]
    best = max(ngram_rows, key=lambda r: r["r2"])["model"] if ngram_rows else None
    for r in rows:
        r["best_ngram"] = best
        r["partial_r"], r["partial_p"], r["partial_exact"] = math.nan, math.nan, False
        if best is not None and r["model"] != best:
            dists = shared_distributions(study, ts, [r["model"], ref, best], keep)
            r["partial_r"], r["partial_p"], r["partial_exact"] = _partial(study, ts, r["model"], best, dists,
                                                                          seed, scope)
    return rows


def _noise_ceiling(study: Study, ts: str, best: str | None) -> dict[str, Any]:
    """Reference seed vs reference seed: the best any proxy could be expected to do."""
    ref = study.reference
    dists = shared_distributions(study, ts, [ref] + ([best] if best else []))
    ys = complete_rows(study.matrix(ts, ref), dists)
    row: dict[str, Any] = {"test_set": ts, "n_ref_seeds": len(ys), "n_dist": len(dists), "best_ngram": best}
    keys = ("pearson", "r2", "spearman", "kendall", "decision_accuracy", "partial_r")
    if len(ys) < 2:
        return {**row, "n_pairs": 0, **{k: math.nan for k in keys}}
    z = seed_mean(study.matrix(ts, best), dists)[0] if best else None
    vals = []
    for a, b in itertools.combinations(range(len(ys)), 2):
        s = _point_stats(ys[a], ys[b])
        s["partial_r"] = stats.partial_correlation(ys[a], ys[b], z) if z is not None and len(dists) >= 4 else math.nan
        vals.append([s[k] for k in keys])
    arr = np.array(vals, dtype=np.float64)  # (pairs, keys)
    n_ok = np.isfinite(arr).sum(axis=0)
    mean = np.where(n_ok > 0, np.nansum(arr, axis=0) / np.maximum(n_ok, 1), np.nan)
    out = {**row, "n_pairs": len(vals), **dict(zip(keys, map(float, mean)))}
    return {**out, "ceiling_r2": _mean_reliability(out["pearson"], len(ys))}


def _mean_reliability(r_single: float, n_seeds: int) -> float:
    """Spearman–Brown: the reliability of the mean of ``n_seeds`` reference seeds from the
    seed-vs-seed correlation. A proxy that knew the reference's true losses exactly would
    reach this R² against the seed-averaged reference, in expectation; no proxy should beat it."""
    if not np.isfinite(r_single):
        return math.nan
    rho = max(float(r_single), 0.0)
    return n_seeds * rho / (1 + (n_seeds - 1) * rho) if rho > 0 else 0.0


def _points(study: Study, ts: str) -> list[dict]:
    ref = study.reference
    rows = []
    for m in study.proxies():
        dists = shared_distributions(study, ts, [m, ref])
        x, xsd, nx = seed_mean(study.matrix(ts, m), dists)
        y, ysd, ny = seed_mean(study.matrix(ts, ref), dists)
        loo, cook = robust.loo_r2(x, y), robust.cooks_distance(x, y)
        rows += [{"test_set": ts, "model": m, "distribution": d, "x": x[i], "y": y[i], "x_sd": xsd[i],
                  "y_sd": ysd[i], "n_seeds_x": int(nx[i]), "n_seeds_y": int(ny[i]), "r2_without": float(loo[i]),
                  "cooks_d": float(cook[i])} for i, d in enumerate(dists)]
    return rows


def _per_example(study: Study, ts: str) -> pd.DataFrame:
    """Per test example: Pearson r across distributions of proxy vs reference loss (seed means)."""
    res = study.results[study.results["test_set"] == ts]
    wide = res.groupby(["model", "example_id", "distribution"], sort=True)["loss"].mean().unstack("distribution")
    ref = study.reference
    if ref not in wide.index.get_level_values(0):
        return pd.DataFrame()
    ref_block = wide.loc[ref]
    out = []
    for m in study.proxies():
        if m not in wide.index.get_level_values(0):
            continue
        block = wide.loc[m]
        ids = block.index.intersection(ref_block.index)
        dists = [d for d in wide.columns if block[d].notna().any() and ref_block[d].notna().any()]
        xa = block.loc[ids, dists].to_numpy(dtype=np.float64)  # (E, D)
        ya = ref_block.loc[ids, dists].to_numpy(dtype=np.float64)  # (E, D)
        ok = np.isfinite(xa).all(axis=1) & np.isfinite(ya).all(axis=1)
        r = np.full(len(ids), np.nan)
        if ok.any() and len(dists) >= 2:
            r[ok] = stats.pearson(xa[ok], ya[ok])
        out.append(pd.DataFrame({"test_set": ts, "model": m, "example_id": ids.astype(str), "r": r,
                                 "n_dist": len(dists)}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _smallest(summary: pd.DataFrame, metric: str, threshold: float) -> list[dict]:
    """Least-compute neural proxy per test set reaching ``threshold`` on ``metric``."""
    rows = []
    for ts, g in summary.groupby("test_set", sort=True):
        neural = g[g["kind"] == "neural"].sort_values(["flops", "params"], kind="mergesort")
        grams = g[g["kind"] == "ngram"]
        passing = neural[neural[metric] >= threshold]
        pick = passing.iloc[0] if len(passing) else None
        larger = neural[neural["flops"] >= pick["flops"]] if pick is not None else neural.iloc[:0]
        best_gram = grams.loc[grams[metric].idxmax()] if grams[metric].notna().any() else None
        rows.append({
            "test_set": ts, "metric": metric, "threshold": threshold,
            "model": None if pick is None else pick["model"],
            "compute_ratio": math.nan if pick is None else float(pick["compute_ratio"]),
            "value": math.nan if pick is None else float(pick[metric]),
            # None (shown '—') when no proxy passes: there is nothing larger to ask about
            "all_larger_pass": None if pick is None else bool((larger[metric] >= threshold).all()),
            "carried_by_one": None if pick is None else bool(pick.get("one_point_carries", False)),
            "best_ngram": None if best_gram is None else best_gram["model"],
            "best_ngram_value": math.nan if best_gram is None else float(best_gram[metric]),
            "ngram_reaches": bool(best_gram is not None and best_gram[metric] >= threshold),
        })
    return rows


def _loso_scopes(study: Study) -> dict[str, list[str]]:
    """Per per-source test set: the distributions that do NOT contain its source."""
    out = {}
    for ts, info in study.test_sets.iterrows():
        if info["framing"] == "per_source":
            out[ts] = [d for d, srcs in study.distributions["sources"].items() if info["source"] not in srcs]
    return out


def _extrapolation(study: Study, points: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rungs = [m for m in study.proxies() if study.models.at[m, "kind"] == "neural" and study.models.at[m, "flops"] > 0]
    ref_flops = float(study.models.at[study.reference, "flops"])
    if not rungs or not ref_flops > 0:
        return pd.DataFrame(), pd.DataFrame()
    rung_table = study.models.loc[rungs, ["flops"]].reset_index()
    extra = ex.extrapolate(points, rung_table, ref_flops)
    return extra, ex.extrapolation_summary(extra, summary, points, rungs)


def _settings(study: Study, seed: int, opts: dict[str, Any], n_tests: int) -> pd.DataFrame:
    return pd.DataFrame([{"format_version": FORMAT_VERSION, "seed": int(seed), "reference": study.reference,
                          "r2_threshold": float(opts["r2_threshold"]),
                          "decision_threshold": float(opts["decision_threshold"]), "n_boot": int(opts["n_boot"]),
                          "ci_level": float(opts["ci_level"]), "ci_method": CI_METHOD, "loss": opts["loss"],
                          "permutation_alternative": _ALTERNATIVE, "p_adjust": "holm", "n_tests": int(n_tests)}])


def _context_tables(study: Study) -> dict[str, pd.DataFrame]:
    """Models, distributions and test sets as the report shows them (lead test sets first)."""
    models = study.models.reset_index()
    ref_flops = float(study.models.at[study.reference, "flops"])
    models["compute_ratio"] = [ref_flops / f if f > 0 else math.inf for f in models["flops"].astype(float)]
    ts = study.test_sets.reset_index()
    ts["lead"] = ts["framing"] != "per_source"
    ts = ts.sort_values(["lead", "test_set"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    return {"models": models.sort_values(["flops", "model"]).reset_index(drop=True),
            "distributions": study.distributions.reset_index(),
            "test_sets": ts[["test_set", "kind", "source", "framing", "lead"]]}


def _replicates(study: Study, names: list[str], seed: int, loss: str, n_boot: int) -> dict[str, Replicates]:
    out = {}
    for ts in names:
        res = study.results[study.results["test_set"] == ts]
        out[ts] = bs.hierarchical_replicates(res, loss=loss, rng=np_rng(seed, "bootstrap", ts), n_boot=n_boot)
    return out


def _adjust(rows: pd.DataFrame) -> pd.DataFrame:
    """Holm over every partial-r test of the table: one family of proxy × test-set tests."""
    if rows.empty:
        return rows
    return rows.assign(partial_p_holm=robust.holm(rows["partial_p"].to_numpy(dtype=np.float64)))


def analyze_study(results: pd.DataFrame, models: pd.DataFrame, distributions: pd.DataFrame,
                  test_sets: pd.DataFrame, *, seed: int, r2_threshold: float = 0.9,
                  decision_threshold: float = 0.9, n_boot: int = 1000, loss: str = "example_mean",
                  ci_level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Every small-to-large table for one study (pure: reads nothing, writes nothing).

    Inputs are the runner's ``results`` (one row per test_set, example_id, distribution,
    model, seed with ``loss``, and ``n_tokens`` for ``loss="token_mean"``), ``models`` (model,
    kind, params, train_tokens, flops, is_reference), ``distributions`` (distribution, sources;
    an optional ``mixture`` column is passed through to the report) and ``test_sets``
    (test_set, kind, source). ``seed`` roots every bootstrap / Monte Carlo stream. See the
    module docstring.
    """
    study = load_study(results, models, distributions, test_sets, loss)
    opts = {"r2_threshold": r2_threshold, "decision_threshold": decision_threshold, "n_boot": n_boot,
            "loss": loss, "ci_level": ci_level}
    names = sorted(set(study.run_means["test_set"]))
    reps = _replicates(study, names, seed, loss, n_boot)
    summary = _adjust(pd.DataFrame([r for ts in names
                                    for r in _summary_for(study, ts, None, seed, reps[ts], opts, "all")]))
    loso_rows = []
    for ts, keep in _loso_scopes(study).items():
        if ts in names:
            left_out = ",".join(d for d in study.distributions.index if d not in keep)
            loso_rows += [{**r, "left_out": left_out}
                          for r in _summary_for(study, ts, keep, seed, reps[ts], opts, "loso")]
    best = summary.groupby("test_set")["best_ngram"].first().to_dict() if len(summary) else {}
    points = pd.DataFrame([r for ts in names for r in _points(study, ts)])
    per_ex = [_per_example(study, ts) for ts in names]
    smallest = _smallest(summary, "r2", r2_threshold) + _smallest(summary, "decision_accuracy", decision_threshold)
    extra, extra_summary = _extrapolation(study, points, summary)
    n_tests = int(np.isfinite(summary["partial_p"]).sum()) if len(summary) else 0
    return {
        "summary": summary, "summary_loso": _adjust(pd.DataFrame(loso_rows)),
        "noise_ceiling": pd.DataFrame([_noise_ceiling(study, ts, best.get(ts)) for ts in names]),
        "points": points,
        "per_example": pd.concat(per_ex, ignore_index=True) if any(len(p) for p in per_ex) else pd.DataFrame(),
        "smallest_proxy": pd.DataFrame(smallest), "extrapolation": extra, "extrapolation_summary": extra_summary,
        **_context_tables(study), "settings": _settings(study, seed, opts, n_tests),
    }

"""Small-to-large correlation: do proxies rank training distributions like the reference does?

:func:`analyze_study` turns per-example results into the tables the report draws (SPEC §4).
For each test set, one point per training distribution: x = a proxy's mean test loss
(averaged over its seeds), y = the reference's (averaged over its seeds). A run's mean test loss
is the mean of per-example losses (``loss="example_mean"``) or total loss over total predicted
tokens (``"token_mean"``); the settings table records which. The tables:

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
- ``smallest_proxy``: per metric, the least-compute neural proxy from which every larger one
  reaches the threshold (see :func:`_smallest`), flagged by that metric's own leave-one-out test.
- ``extrapolation`` / ``extrapolation_summary``: see :mod:`proxyscale.analyze.extrapolate`;
  "beats the best proxy" needs the paired bootstrap interval of the difference above 0.
- ``metric_decisions``: decision accuracy under every metric a test set carries
  (:mod:`proxyscale.analyze.decisions`); ``sanity_models`` / ``sanity_reference``: the checks
  the report reads before any finding (:mod:`proxyscale.analyze.sanity`).
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

from ..errors import DataError
from ..seeding import np_rng
from . import bootstrap as bs
from . import decisions as dec
from . import extrapolate as ex
from . import metrics as mt
from . import robust, sanity, stats
from .bootstrap import Replicates
from .inputs import Study, build_study, check_tables, complete_rows, seed_mean, shared_distributions
from .io import FORMAT_VERSION, read_analysis, write_analysis
from .scan import ResultSource, TestSetScan, check_rows, scan_test_set, split_source

__all__ = ["analyze_study", "write_analysis", "read_analysis"]
_ALTERNATIVE = "greater"
CI_METHOD = ("bootstrap over test examples × seeds (seed variance pooled over distributions); "
             "union of percentile and basic intervals")


def _point_stats(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"r2": stats.r2_linear(x, y), "pearson": stats.pearson(x, y), "spearman": stats.spearman(x, y),
            "kendall": stats.kendall_tau_b(x, y), "decision_accuracy": stats.decision_accuracy(x, y)}


def _compare(study: Study, ts: str, model: str, dists: list[str], reps: Replicates | None, level: float,
             r2_threshold: float, da_threshold: float) -> dict[str, Any]:
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
    da_loo = robust.loo_decision_accuracy(x, y)
    i_da = int(np.nanargmin(da_loo)) if np.isfinite(da_loo).any() else None
    row["da_loo_min"] = float(da_loo[i_da]) if i_da is not None else math.nan
    row["da_loo_min_dist"] = dists[i_da] if i_da is not None else None
    row["da_one_point_carries"] = robust.carried_past_threshold(row["decision_accuracy"], row["da_loo_min"],
                                                                da_threshold)
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
        row.update(_compare(study, ts, m, dists, reps, opts["ci_level"], opts["r2_threshold"],
                            opts["decision_threshold"]))
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


_CARRIED_COLUMN = {"r2": "one_point_carries", "decision_accuracy": "da_one_point_carries"}


def _smallest(summary: pd.DataFrame, metric: str, threshold: float) -> list[dict]:
    """Per test set: the least-compute neural proxy from which every larger one reaches
    ``threshold`` on ``metric`` (``model``), and the least-compute one that reaches it at all
    (``first_passing``). They differ when a smaller proxy passes but a larger one fails: then
    ``fails_above`` names the larger proxies that fail and ``first_passing`` is no safe choice.
    Each metric's row carries its own leave-one-distribution-out flag."""
    rows = []
    for ts, g in summary.groupby("test_set", sort=True):
        neural = g[g["kind"] == "neural"].sort_values(["flops", "params"], kind="mergesort")
        grams = g[g["kind"] == "ngram"]
        ok = (neural[metric] >= threshold).to_numpy()
        first = int(np.argmax(ok)) if ok.any() else None
        tail_ok = np.logical_and.accumulate(ok[::-1])[::-1]  # i: proxy i and every larger one pass
        stable = int(np.argmax(tail_ok)) if tail_ok.any() else None
        pick = neural.iloc[stable] if stable is not None else None
        fails = [] if first is None else list(neural["model"].iloc[first:][~ok[first:]])
        best_gram = grams.loc[grams[metric].idxmax()] if grams[metric].notna().any() else None
        carried = _CARRIED_COLUMN.get(metric, "one_point_carries")
        rows.append({
            "test_set": ts, "metric": metric, "threshold": threshold,
            "model": None if pick is None else pick["model"],
            "compute_ratio": math.nan if pick is None else float(pick["compute_ratio"]),
            "value": math.nan if pick is None else float(pick[metric]),
            "first_passing": None if first is None else neural["model"].iloc[first],
            # None (shown '—') when no proxy passes: there is nothing larger to ask about
            "all_larger_pass": None if first is None else not fails,
            "fails_above": ", ".join(fails),
            "carried_by_one": None if pick is None else bool(pick.get(carried, False)),
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


def _extrapolation(study: Study, points: pd.DataFrame, summary: pd.DataFrame, reps: dict[str, Replicates],
                   level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rungs = [m for m in study.proxies() if study.models.at[m, "kind"] == "neural" and study.models.at[m, "flops"] > 0]
    ref_flops = float(study.models.at[study.reference, "flops"])
    if not rungs or not ref_flops > 0:
        return pd.DataFrame(), pd.DataFrame()
    rung_table = study.models.loc[rungs, ["flops"]].reset_index()
    extra = ex.extrapolate(points, rung_table, ref_flops)
    first = ex.extrapolation_summary(extra, summary, points, rungs)
    diffs = {ts: _extrapolation_diff(study, extra, r, reps.get(ts), rungs, level) for ts, r in
             first.set_index("test_set").iterrows()} if len(first) else {}
    return extra, ex.extrapolation_summary(extra, summary, points, rungs, diffs)


def _extrapolation_diff(study: Study, extra: pd.DataFrame, r: pd.Series, reps: Replicates | None, rungs: list[str],
                        level: float) -> dict[str, float]:
    """The extrapolation against the best proxy on the same replicates (paired differences)."""
    g = extra[(extra["test_set"] == r.name) & (extra["n_rungs"] == len(rungs))]
    dists = list(g["distribution"])
    if reps is None or r["best_proxy"] is None or len(dists) < 3 or len(dists) != int(r["n_dist"]):
        return {}
    try:
        rung_b = np.stack([reps.take(m, dists) for m in rungs], axis=-1)  # (B, D, K)
        best_b, ref_b = reps.take(r["best_proxy"], dists), reps.take(study.reference, dists)
    except DataError:  # a rung without replicates on some distribution: no interval
        return {}
    flops = study.models.loc[rungs, "flops"].to_numpy(dtype=np.float64)
    pred_b = ex.predict_many(flops, rung_b.reshape(-1, len(rungs)), float(study.models.at[study.reference, "flops"]))
    point = (float(r["r2"] - r["best_proxy_r2"]), float(r["decision_accuracy"] - r["best_proxy_decision_accuracy"]))
    return ex.paired_difference(pred_b.reshape(rung_b.shape[:2]), best_b, ref_b, point, level)


def _settings(study: Study, seed: int, opts: dict[str, Any], n_tests: int) -> pd.DataFrame:
    return pd.DataFrame([{"format_version": FORMAT_VERSION, "seed": int(seed), "reference": study.reference,
                          "r2_threshold": float(opts["r2_threshold"]),
                          "decision_threshold": float(opts["decision_threshold"]), "n_boot": int(opts["n_boot"]),
                          "ci_level": float(opts["ci_level"]), "ci_method": CI_METHOD, "loss": opts["loss"],
                          "metric": opts["metric"], "metric_label": mt.METRICS[opts["metric"]].label,
                          "metric_flipped": mt.METRICS[opts["metric"]].higher_is_better,
                          "skipped_test_sets": ",".join(opts.get("skipped", [])),
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


def _adjust(rows: pd.DataFrame) -> pd.DataFrame:
    """Holm over every partial-r test of the table: one family of proxy × test-set tests."""
    if rows.empty:
        return rows
    return rows.assign(partial_p_holm=robust.holm(rows["partial_p"].to_numpy(dtype=np.float64)))


def _scan_all(results: ResultSource, study_tables: tuple, opts: dict[str, Any], seed: int
              ) -> tuple[dict[str, TestSetScan], list[str]]:
    """Read one test set at a time and keep what :func:`scan_test_set` leaves; the rows are dropped."""
    mods, dists, ts_table, ref = study_tables
    sources = split_source(results)
    unknown = sorted(set(sources) - set(map(str, ts_table.index)))
    if unknown:
        raise DataError(f"results name test_set(s) {unknown[:5]} missing from the test_sets table; add them there")
    if not sources:
        raise DataError("the results table is empty; run the study's evaluation steps first")
    names = {"model": mods.index.astype(str), "distribution": dists.index.astype(str),
             "test_set": ts_table.index.astype(str)}
    proxies = [str(m) for m in mods.index if m != ref]
    scans, skipped = {}, []
    for ts in sorted(sources):
        frame = sources[ts]()
        check_rows(frame, ts, names, opts["metric"])
        sc = scan_test_set(frame, ts, chosen=opts["metric"], loss=opts["loss"], reference=ref, proxies=proxies,
                           seed=seed, n_boot=opts["n_boot"])
        del frame
        if sc is None:
            skipped.append(ts)
        else:
            scans[ts] = sc
    if not scans:
        raise DataError(f"no test set's results carry metric '{opts['metric']}' on every row; set analysis.metric "
                        f"to one they carry (loss always is)")
    return scans, skipped


def _stack(scans: dict[str, TestSetScan], metric: str) -> pd.DataFrame:  # test sets without it left out
    got = [sc.run_means[metric].assign(test_set=ts) for ts, sc in scans.items() if metric in sc.run_means]
    return pd.concat(got, ignore_index=True) if got else pd.DataFrame(columns=["model", "distribution", "seed",
                                                                              "value", "test_set"])


def _check_options(metric: str, loss: str) -> None:
    mt.metric(metric)
    if loss not in bs.LOSS_DEFINITIONS:
        raise DataError(f"loss definition '{loss}' is not one of {list(bs.LOSS_DEFINITIONS)}")
    if loss == "token_mean" and metric != "loss":
        raise DataError(f"loss 'token_mean' weighs the tokens of the per-token loss; with metric '{metric}' "
                        "set analysis.loss to example_mean")


def analyze_study(results: ResultSource, models: pd.DataFrame, distributions: pd.DataFrame,
                  test_sets: pd.DataFrame, *, seed: int, r2_threshold: float = 0.9,
                  decision_threshold: float = 0.9, n_boot: int = 1000, loss: str = "example_mean",
                  ci_level: float = 0.95, metric: str = "loss") -> dict[str, pd.DataFrame]:
    """Every small-to-large table for one study (pure: reads nothing, writes nothing).

    ``results`` is the runner's per-example table (one row per test_set, example_id,
    distribution, model, seed with ``loss``; ``n_tokens`` for ``loss="token_mean"``; optionally
    ``bpb``, ``correct_prob`` and ``correct``), or a mapping from test set to a function
    returning that test set's rows, so a suite's results are read one test set at a time.
    ``models`` (model, kind, params, train_tokens, flops, is_reference; optional vocab_size),
    ``distributions`` (distribution, sources; an optional ``mixture`` column is passed through to
    the report) and ``test_sets`` (test_set, kind, source). ``metric`` is what ranks
    distributions (:mod:`proxyscale.analyze.metrics`; test sets that lack it are skipped and
    named in the settings). ``seed`` roots every bootstrap / Monte Carlo stream.
    """
    _check_options(metric, loss)
    tables = check_tables(models, distributions, test_sets)
    opts: dict[str, Any] = {"r2_threshold": r2_threshold, "decision_threshold": decision_threshold,
                            "n_boot": n_boot, "loss": loss, "ci_level": ci_level, "metric": metric}
    scans, opts["skipped"] = _scan_all(results, tables, opts, seed)
    study = build_study(*tables, _stack(scans, metric).rename(columns={"value": "loss"}))
    names = sorted(scans)
    reps = {ts: scans[ts].reps[metric] for ts in names}
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
    per_ex = [scans[ts].per_example for ts in names]
    smallest = _smallest(summary, "r2", r2_threshold) + _smallest(summary, "decision_accuracy", decision_threshold)
    extra, extra_summary = _extrapolation(study, points, summary, reps, ci_level)
    n_tests = int(np.isfinite(summary["partial_p"]).sum()) if len(summary) else 0
    return {
        "summary": summary, "summary_loso": _adjust(pd.DataFrame(loso_rows)),
        "noise_ceiling": pd.DataFrame([_noise_ceiling(study, ts, best.get(ts)) for ts in names]), "points": points,
        "per_example": pd.concat(per_ex, ignore_index=True) if any(len(p) for p in per_ex) else pd.DataFrame(),
        "smallest_proxy": pd.DataFrame(smallest), "extrapolation": extra, "extrapolation_summary": extra_summary,
        **_suite_tables(study, scans, opts), **_context_tables(study),
        "settings": _settings(study, seed, opts, n_tests),
    }


def _suite_tables(study: Study, scans: dict[str, TestSetScan], opts: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Decision accuracy under every available metric, and the sanity checks."""
    checks = sanity.sanity_models(_stack(scans, "loss"), study.models)
    decisions = [r for ts, sc in scans.items() for r in dec.metric_decisions(
        ts, sc.run_means, sc.reps, study.reference, study.proxies(), opts["metric"], opts["ci_level"])]
    return {"metric_decisions": pd.DataFrame(decisions), "sanity_models": checks,
            "sanity_reference": sanity.sanity_reference(study, checks)}

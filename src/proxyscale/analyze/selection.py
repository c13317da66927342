"""The selection study's analysis: pure functions over the reference models' per-example losses.

Tables (written with :func:`proxyscale.analyze.io.write_analysis`, kind ``selection``):

- ``results``: one row per (selection, seed, test set, example): loss, accuracy where defined;
- ``holdout``: per target and selection (random ones apply to every target): mean holdout loss
  (seed-averaged) with a 95% bootstrap CI over holdout examples × reference seeds with the seed
  noise pooled over the target's selections (:func:`selection_replicates`; with 2–3 seeds a
  bootstrap over seeds alone is too narrow), the difference from random at the reference
  budget (negative = better than random; paired over examples) with its CI, per-seed means,
  accuracy, and the compute spent on selecting and on one reference run;
- ``smallest_proxy``: per target and method, the smallest proxy whose selection still beats
  random (difference CI entirely below zero);
- ``multiplier``: per target and selection, the compute random selection needs to match its
  loss (SPEC §6), monotone piecewise-linear in log compute through the random budgets'
  measured losses, with a CI from the same replicates;
- ``overlap``: Jaccard overlap of the windows two selections chose, per target.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..models.ladder import train_flops
from ..seeding import np_rng
from ..store import read_json, read_table
from .bootstrap import hierarchical_replicates, percentile_ci


def gather(inputs: dict[str, Path], selections: list[dict[str, Any]]) -> pd.DataFrame:
    """Every evaluated example of every reference model, labelled with its selection."""
    by_name = {s["name"]: s for s in selections}
    frames = []
    for role, path in sorted(inputs.items()):
        if not role.startswith("eval:"):
            continue
        _, name, seed = role.split(":")
        s = by_name[name]
        for f in sorted(path.glob("*.parquet")):
            df = read_table(f)
            frames.append(pd.DataFrame({"selection": name, "method": s["method"], "target": s["target"] or "",
                                        "proxy": s["proxy"] or "", "budget": s["budget"], "seed": int(seed),
                                        "test_set": f.stem, "example_id": df["example_id"], "loss": df["loss"],
                                        "correct": df["correct"]}))
    return pd.concat(frames, ignore_index=True)


def loss_matrix(results: pd.DataFrame, selection: str, test_set: str) -> pd.DataFrame:
    """Per-example losses of one selection's references on one test set: (seeds × examples)."""
    r = results[(results["selection"] == selection) & (results["test_set"] == test_set)]
    return r.pivot_table(index="seed", columns="example_id", values="loss", aggfunc="mean").sort_index(axis=1)


def selection_replicates(results: pd.DataFrame, test_set: str, selections: list[str],
                         rng: np.random.Generator, n_boot: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates (B,) of each selection's mean loss on ``test_set``: one resample of
    the examples shared by every selection (so differences are paired), plus a seed term per
    selection from the seed-to-seed variance pooled over all of them (the scaling study's scheme,
    :func:`proxyscale.analyze.bootstrap.hierarchical_replicates`, with the selections as its
    distributions and the reference as its one model)."""
    r = results[(results["test_set"] == test_set) & results["selection"].isin(selections)]
    frame = pd.DataFrame({"example_id": r["example_id"], "model": "reference", "distribution": r["selection"],
                          "seed": r["seed"], "loss": r["loss"]})
    reps = hierarchical_replicates(frame, loss="example_mean", rng=rng, n_boot=n_boot)
    return {name: col for name, col in zip(selections, reps.take("reference", selections).T)}


def _applies(s: dict[str, Any], target: str) -> bool:
    return s["target"] in (None, target)


def holdout_table(cfg: dict[str, Any], results: pd.DataFrame, level: float = 0.95
                  ) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Mean holdout loss per target and selection with its CI, the paired difference from random
    at the reference budget with its CI, and the replicates behind them (target → selection → (B,))."""
    rows, replicates = [], {}
    base = next(s for s in cfg["selections"] if s["method"] == "random" and s["budget"] == 1.0)
    for t in cfg["targets"]:
        ts, sels = f"holdout-{t}", [s for s in cfg["selections"] if _applies(s, t)]
        reps = selection_replicates(results, ts, [s["name"] for s in sels], np_rng(cfg["seed"], "sel-boot", t),
                                    cfg["n_boot"])
        replicates[t] = reps
        ref = loss_matrix(results, base["name"], ts)
        for s in sels:
            a, b = loss_matrix(results, s["name"], ts)[ref.columns].to_numpy(np.float64), ref.to_numpy(np.float64)
            part = results[(results["selection"] == s["name"]) & (results["test_set"] == ts)]
            lo, hi = percentile_ci(reps[s["name"]], level)
            dlo, dhi = percentile_ci(reps[s["name"]] - reps[base["name"]], level) if s is not base else (0.0, 0.0)
            rows.append({"target": t, "selection": s["name"], "method": s["method"], "proxy": s["proxy"] or "",
                         "budget": s["budget"], "loss": float(a.mean()), "ci_low": lo, "ci_high": hi,
                         "minus_random": float(a.mean() - b.mean()), "minus_random_low": dlo,
                         "minus_random_high": dhi, "seed_losses": [float(v) for v in a.mean(axis=1)],
                         "accuracy": float(part["correct"].mean()) if part["correct"].notna().any() else float("nan"),
                         "n_examples": int(a.shape[1]), "selection_flops": _selection_flops(cfg, s),
                         "reference_flops": _reference_flops(cfg, s)})
    return pd.DataFrame(rows), replicates


def _selection_flops(cfg: dict[str, Any], s: dict[str, Any]) -> float:
    """DsDm: its proxies' training and TRAK; the other methods count no model FLOPs."""
    if s["proxy"] is None:
        return 0.0
    return cfg["rungs"][s["proxy"]]["flops"] * cfg["dsdm_models"] + cfg["trak_flops"][s["proxy"]]


def _reference_flops(cfg: dict[str, Any], s: dict[str, Any]) -> float:
    return train_flops(cfg["rungs"][cfg["reference"]]["params"], s["n"] * cfg["context"])


def smallest_proxy(cfg: dict[str, Any], holdout: pd.DataFrame) -> pd.DataFrame:
    """Per target and proxy-based method: the smallest proxy whose selection beats random
    (difference CI below zero), and whether every larger proxy does too."""
    rows = []
    order = sorted(cfg["proxies"], key=lambda r: cfg["rungs"][r]["flops"])
    for (t, m), g in holdout[holdout["proxy"] != ""].groupby(["target", "method"]):
        beats = {r.proxy: bool(r.minus_random_high < 0) for r in g.itertuples()}
        wins = [r for r in order if beats.get(r)]
        first = wins[0] if wins else None
        rows.append({"target": t, "method": m, "smallest_proxy": first or "",
                     "compute_ratio": (cfg["rungs"][cfg["reference"]]["flops"] / cfg["rungs"][first]["flops"]
                                       if first else float("nan")),
                     "all_larger_beat": bool(first and all(beats.get(r) for r in order[order.index(first):])),
                     "n_proxies": len(order)})
    return pd.DataFrame(rows)


def monotone_envelope(y: np.ndarray) -> np.ndarray:
    """The non-increasing least-squares fit (pool adjacent violators) of losses ``y`` (K,) listed
    by increasing compute: where more random data measured a higher loss, the two are averaged."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled block
    for v in np.asarray(y, dtype=np.float64):
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(c), t / c) for t, c in blocks])


def compute_to_match(x: np.ndarray, y: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log compute at which random selection reaches each of ``loss`` (M,): the least x where the
    piecewise-linear curve through (x, y) — x (K,) increasing log budgets, y (K,) non-increasing
    losses — falls to it. Beyond the measured budgets the line through the curve's ends carries
    on (``nan`` if the curve is flat). Returns (log compute (M,), extrapolated (M,))."""
    loss = np.asarray(loss, dtype=np.float64)
    slope = (y[-1] - y[0]) / (x[-1] - x[0])
    i = np.argmax(y[None, :] <= loss[:, None], axis=1)  # (M,) first budget at or below the loss
    reached = y[i] <= loss
    inside = reached & (i > 0)
    j = np.maximum(i - 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = x[j] + (loss - y[j]) * (x[i] - x[j]) / (y[i] - y[j])
        beyond = np.where(slope < 0, np.where(reached, x[0], x[-1]) + (loss - np.where(reached, y[0], y[-1])) / slope,
                          np.nan)
    at_point = reached & (loss == y[i])  # exactly a measured loss: exactly its budget
    out = np.where(at_point, x[i], np.where(inside, between, beyond))
    return out, ~inside & ~at_point


def multiplier_table(holdout: pd.DataFrame, replicates: dict[str, dict[str, np.ndarray]],
                     level: float = 0.95) -> pd.DataFrame:
    """Compute random selection needs to match each selection's loss, as a multiple of that
    selection's own compute: monotone piecewise-linear in log compute through random's measured
    budgets (:func:`compute_to_match`), so random at a measured budget needs exactly 1×; its CI
    repeats the inversion on every bootstrap replicate (the losses' own)."""
    rows = []
    for t, g in holdout.groupby("target"):
        rand = g[g["method"] == "random"].sort_values("budget")
        if len(rand) < 2:
            continue
        x = np.log(rand["budget"].to_numpy(np.float64))
        y = monotone_envelope(rand["loss"].to_numpy(np.float64))
        log_c, extrap = compute_to_match(x, y, g["loss"].to_numpy(np.float64))
        boot = _boot_log_compute(x, [replicates[t][n] for n in rand["selection"]],
                                 [replicates[t][n] for n in g["selection"]]) if t in replicates else None
        for k, (r, lc, ex) in enumerate(zip(g.itertuples(), log_c, extrap)):
            lo = hi = float("nan")
            if boot is not None:
                lo, hi = (float(np.exp(q)) for q in percentile_ci(boot[:, k] - np.log(r.budget), level))
            rows.append({"target": t, "selection": r.selection, "method": r.method, "proxy": r.proxy,
                         "budget": r.budget, "loss": r.loss, "multiplier": float(np.exp(lc - np.log(r.budget))),
                         "multiplier_low": lo, "multiplier_high": hi, "extrapolated": bool(ex)})
    return pd.DataFrame(rows)


def _boot_log_compute(x: np.ndarray, random: list[np.ndarray], selections: list[np.ndarray]) -> np.ndarray:
    """Per replicate: random's envelope through its replicate losses (K × (B,)), inverted at
    every selection's replicate loss (M × (B,)); returns log compute (B, M)."""
    rand_b, sel_b = np.stack(random, axis=1), np.stack(selections, axis=1)
    return np.stack([compute_to_match(x, monotone_envelope(r), v)[0] for r, v in zip(rand_b, sel_b)])


def overlap_table(cfg: dict[str, Any], inputs: dict[str, Path]) -> pd.DataFrame:
    """Jaccard overlap between the chosen windows of every two selections of a target."""
    chosen = {s["name"]: set(np.load(inputs[f"sel:{s['name']}"] / "chosen.npy").tolist())
              for s in cfg["selections"] if s["budget"] == 1.0}
    rows = []
    for t in cfg["targets"]:
        names = [s["name"] for s in cfg["selections"] if s["budget"] == 1.0 and _applies(s, t)]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                inter, union = len(chosen[a] & chosen[b]), len(chosen[a] | chosen[b])
                rows.append({"target": t, "a": a, "b": b, "jaccard": inter / union if union else float("nan")})
    return pd.DataFrame(rows)


def analyze_selection(cfg: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Compute and write every table of the selection study; returns the manifest's meta."""
    from .io import write_analysis

    results = gather(inputs, cfg["selections"])
    holdout, replicates = holdout_table(cfg, results)
    tables = {"results": results, "holdout": holdout, "smallest_proxy": smallest_proxy(cfg, holdout),
              "multiplier": multiplier_table(holdout, replicates), "overlap": overlap_table(cfg, inputs)}
    parts = {r.split(":", 1)[1]: read_json(p / "selection.json") for r, p in inputs.items() if r.startswith("sel:")}
    meta = {k: cfg[k] for k in ("name", "reference", "targets", "target_kinds", "proxies", "rungs", "dsdm_models",
                                "context", "pool_windows", "reference_seeds", "n_boot")}
    meta["selections"] = {n: {k: v for k, v in p.items() if k != "settings"} for n, p in parts.items()}
    meta["holdouts"] = {r.split(":", 1)[1]: read_json(p / "part.json") for r, p in inputs.items()
                        if r.startswith("holdout:")}
    write_analysis(tables, out, kind="selection", meta=meta)
    return meta

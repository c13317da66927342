"""The selection study's analysis: pure functions over the reference models' per-example losses.

Tables (written with :func:`proxyscale.analyze.io.write_analysis`, kind ``selection``):

- ``results``: one row per (selection, seed, test set, example): loss, accuracy where defined;
- ``holdout``: per target and selection (random ones apply to every target): mean holdout loss
  (seed-averaged) with a 95% two-level bootstrap CI (reference seeds, then holdout examples),
  the difference from random at the reference budget (negative = better than random; paired
  over examples) with its CI, per-seed means,
  accuracy, and the compute spent on selecting and on one reference run;
- ``smallest_proxy``: per target and method, the smallest proxy whose selection still beats
  random (difference CI entirely below zero);
- ``multiplier``: per target and selection, the compute random selection needs to match its
  loss, from a fit of loss against log compute over the random budgets (SPEC §6);
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


def two_level_ci(a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator, n_boot: int,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean(a) − mean(b) (or of mean(a) when ``b`` is None), resampling the
    reference seeds of each side independently (they are different training runs) and the
    examples jointly (both sides saw the same ones): so the interval carries seed noise too.
    ``a``, ``b``: (seeds, examples)."""
    n_ex = a.shape[1]
    stats = np.empty(n_boot)
    for i in range(n_boot):
        e = rng.integers(0, n_ex, n_ex)
        va = a[rng.integers(0, a.shape[0], a.shape[0])][:, e].mean()
        stats[i] = va if b is None else va - b[rng.integers(0, b.shape[0], b.shape[0])][:, e].mean()
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _applies(s: dict[str, Any], target: str) -> bool:
    return s["target"] in (None, target)


def holdout_table(cfg: dict[str, Any], results: pd.DataFrame) -> pd.DataFrame:
    """Mean holdout loss per target and selection, and the paired difference from random."""
    rows = []
    base = next(s for s in cfg["selections"] if s["method"] == "random" and s["budget"] == 1.0)
    for t in cfg["targets"]:
        ts = f"holdout-{t}"
        ref = loss_matrix(results, base["name"], ts)
        for s in (s for s in cfg["selections"] if _applies(s, t)):
            rng = np_rng(cfg["seed"], "sel-boot", t, s["name"])
            mat = loss_matrix(results, s["name"], ts)[ref.columns]
            a, b = mat.to_numpy(np.float64), ref.to_numpy(np.float64)
            part = results[(results["selection"] == s["name"]) & (results["test_set"] == ts)]
            lo, hi = two_level_ci(a, None, rng, cfg["n_boot"])
            dlo, dhi = two_level_ci(a, b, rng, cfg["n_boot"]) if s is not base else (0.0, 0.0)
            rows.append({"target": t, "selection": s["name"], "method": s["method"], "proxy": s["proxy"] or "",
                         "budget": s["budget"], "loss": float(a.mean()), "ci_low": lo, "ci_high": hi,
                         "minus_random": float(a.mean() - b.mean()), "minus_random_low": dlo,
                         "minus_random_high": dhi, "seed_losses": [float(v) for v in a.mean(axis=1)],
                         "accuracy": float(part["correct"].mean()) if part["correct"].notna().any() else float("nan"),
                         "n_examples": int(a.shape[1]), "selection_flops": _selection_flops(cfg, s),
                         "reference_flops": _reference_flops(cfg, s)})
    return pd.DataFrame(rows)


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


def multiplier_table(cfg: dict[str, Any], holdout: pd.DataFrame) -> pd.DataFrame:
    """Compute random selection needs to match each selection's loss: fit loss = a + c·log C
    over the random budgets (C = budget × the reference's compute), then invert the fit."""
    rows = []
    for t, g in holdout.groupby("target"):
        rand = g[g["method"] == "random"].sort_values("budget")
        if len(rand) < 2:
            continue
        x = np.log(rand["budget"].to_numpy(float))
        c, a = np.polyfit(x, rand["loss"].to_numpy(float), 1)
        for r in g.itertuples():
            log_b = (r.loss - a) / c if c < 0 else float("nan")
            rows.append({"target": t, "selection": r.selection, "method": r.method, "proxy": r.proxy,
                         "budget": r.budget, "loss": r.loss, "multiplier": float(np.exp(log_b)) / r.budget,
                         "extrapolated": bool(not x.min() - 1e-9 <= log_b <= x.max() + 1e-9), "fit_slope": float(c)})
    return pd.DataFrame(rows)


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
    holdout = holdout_table(cfg, results)
    tables = {"results": results, "holdout": holdout, "smallest_proxy": smallest_proxy(cfg, holdout),
              "multiplier": multiplier_table(cfg, holdout), "overlap": overlap_table(cfg, inputs)}
    parts = {r.split(":", 1)[1]: read_json(p / "selection.json") for r, p in inputs.items() if r.startswith("sel:")}
    meta = {k: cfg[k] for k in ("name", "reference", "targets", "target_kinds", "proxies", "rungs", "dsdm_models",
                                "context", "pool_windows", "reference_seeds", "n_boot")}
    meta["selections"] = {n: {k: v for k, v in p.items() if k != "settings"} for n, p in parts.items()}
    meta["holdouts"] = {r.split(":", 1)[1]: read_json(p / "part.json") for r, p in inputs.items()
                        if r.startswith("holdout:")}
    write_analysis(tables, out, kind="selection", meta=meta)
    return meta

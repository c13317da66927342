"""Coverage of the selection study's 95 % intervals on "selection − random" on synthetic studies
with a known true difference: the interval the analysis prints (examples × reference seeds,
seed noise pooled over the target's selections: analyze/selection.py) beside a bootstrap that
resamples the few reference seeds themselves (the earlier scheme).

    python benchmarks/selection_coverage.py [--studies 200] [--boot 1000]

Each study: 8 selections (random at the reference budget among them), 3 reference seeds each,
150 holdout examples with shared difficulty; a run's loss = truth + seed offset (sd ``seed_sd``)
+ per-example noise (sd ``ex_sd``).
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from proxyscale.analyze.bootstrap import percentile_ci
from proxyscale.analyze.selection import selection_replicates

SELECTIONS = [f"s{i}" for i in range(8)]  # s0 is random at the reference budget
SETTINGS = ((0.05, 0.3), (0.02, 0.3), (0.1, 0.5), (0.01, 0.2))  # (seed_sd, ex_sd)


def simulate(rng: np.random.Generator, seed_sd: float, ex_sd: float, n_ex: int = 150, seeds: int = 3
             ) -> tuple[pd.DataFrame, np.ndarray]:
    """One study's per-example losses and its true selection means (8,)."""
    truth = 3.0 + rng.normal(0, 0.05, len(SELECTIONS))
    hard = rng.normal(0, 1.0, n_ex)  # example difficulty, shared by every run
    rows = []
    for s, mu in zip(SELECTIONS, truth):
        for k in range(seeds):
            loss = mu + hard + rng.normal(0, seed_sd) + rng.normal(0, ex_sd, n_ex)
            rows.append(pd.DataFrame({"selection": s, "seed": k, "test_set": "h", "example_id": np.arange(n_ex),
                                      "loss": loss}))
    return pd.concat(rows, ignore_index=True), truth


def seeds_only(res: pd.DataFrame, a: str, b: str, rng: np.random.Generator, n_boot: int) -> tuple[float, float]:
    """The earlier interval: each side's seeds resampled independently, examples jointly."""
    m = {s: res[res["selection"] == s].pivot(index="seed", columns="example_id", values="loss").to_numpy()
         for s in (a, b)}
    n_ex, stats = m[a].shape[1], np.empty(n_boot)
    for i in range(n_boot):
        e = rng.integers(0, n_ex, n_ex)
        stats[i] = (m[a][rng.integers(0, len(m[a]), len(m[a]))][:, e].mean()
                    - m[b][rng.integers(0, len(m[b]), len(m[b]))][:, e].mean())
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(lo), float(hi)


def coverage(seed_sd: float, ex_sd: float, studies: int, boot: int) -> None:
    hits = {"pooled": 0, "seeds only": 0}
    for i in range(studies):
        rng = np.random.default_rng(9000 + i)
        res, truth = simulate(rng, seed_sd, ex_sd)
        reps = selection_replicates(res, "h", SELECTIONS, rng, boot)
        for j, s in enumerate(SELECTIONS[1:], start=1):
            true = truth[j] - truth[0]
            lo, hi = percentile_ci(reps[s] - reps["s0"], 0.95)
            hits["pooled"] += lo <= true <= hi
            if j == 1:  # the slow loop once per study
                lo, hi = seeds_only(res, s, "s0", rng, boot)
                hits["seeds only"] += lo <= true <= hi
    n = {"pooled": studies * (len(SELECTIONS) - 1), "seeds only": studies}
    print(f"seed sd {seed_sd}  example sd {ex_sd}: " + "  ".join(f"{k} {v / n[k]:.3f}" for k, v in hits.items()),
          flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    for s in SETTINGS:
        coverage(*s, args.studies, args.boot)

"""Coverage of the analysis's 90 % R² intervals on synthetic studies with a known true R² (the
table in docs/LOG.md): the percentile interval, the basic interval and their union (what the
report prints), each over the example × seed bootstrap of analyze/bootstrap.py.

    python benchmarks/interval_coverage.py [--studies 200] [--boot 300]

Each setting draws true proxy and reference cell means for 8 distributions (the proxy = the
reference + spread × noise), then simulates studies of 30 examples and 2 seeds each with seed
noise ``seed_sd`` (the simulator of tests/analyze/test_analyze_bootstrap.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analyze"))
from test_analyze_bootstrap import DISTS, D, simulate  # noqa: E402

from proxyscale.analyze import stats  # noqa: E402
from proxyscale.analyze.bootstrap import basic_ci, hierarchical_replicates, percentile_ci  # noqa: E402

SETTINGS = ((0.5, 0.15, 5), (0.5, 0.15, 6), (0.2, 0.15, 2), (1.0, 0.3, 10), (3.0, 0.3, 3), (0.5, 0.4, 7))


def coverage(spread: float, seed_sd: float, truth_seed: int, studies: int, boot: int) -> None:
    tr = np.random.default_rng(truth_seed)
    ref = tr.normal(size=D)
    mu = {"R": ref, "P": ref + spread * tr.normal(size=D)}
    true = stats.r2_linear(mu["P"], mu["R"])
    hits = {"percentile": 0, "basic": 0, "union": 0}
    for i in range(studies):
        rng = np.random.default_rng(5000 + i)
        res = simulate(rng, mu, seed_sd=seed_sd)
        reps = hierarchical_replicates(res, loss="example_mean", rng=rng, n_boot=boot)
        cells = res.groupby(["model", "distribution"])["loss"].mean()
        est = stats.r2_linear(cells["P"][DISTS].to_numpy(), cells["R"][DISTS].to_numpy())
        values = stats.r2_linear(reps.take("P", DISTS), reps.take("R", DISTS))
        b, p = basic_ci(values, est, 0.9), percentile_ci(values, 0.9)
        for name, (lo, hi) in (("percentile", p), ("basic", b), ("union", (min(b[0], p[0]), max(b[1], p[1])))):
            hits[name] += lo <= true <= hi
    print(f"true R² {true:.2f}  spread {spread}  seed sd {seed_sd}: "
          + "  ".join(f"{k} {v / studies:.3f}" for k, v in hits.items()), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--boot", type=int, default=300)
    args = ap.parse_args()
    for s in SETTINGS:
        coverage(*s, args.studies, args.boot)

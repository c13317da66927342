"""The selection analysis' statistics: the two-level bootstrap carries seed noise, covers the
truth, and the compute-multiplier fit inverts a known loss curve."""
from __future__ import annotations

import numpy as np
import pandas as pd

from proxyscale.analyze.selection import multiplier_table, two_level_ci


def test_two_level_ci_covers_the_truth_and_widens_with_seed_noise():
    rng = np.random.default_rng(0)
    covered, widths = 0, {}
    for noise in (0.0, 0.3):
        for trial in range(60):
            ex = rng.normal(0, 1, 200)  # example difficulty, shared by both sides
            a = ex + 0.1 + rng.normal(0, noise, (3, 1)) + rng.normal(0, 0.2, (3, 200))
            b = ex + rng.normal(0, noise, (3, 1)) + rng.normal(0, 0.2, (3, 200))
            lo, hi = two_level_ci(a, b, np.random.default_rng(trial), 400)
            widths.setdefault(noise, []).append(hi - lo)
            covered += noise == 0.0 and lo <= 0.1 <= hi
    assert covered >= 50  # ≈ 95% of 60
    assert np.mean(widths[0.3]) > 3 * np.mean(widths[0.0])  # seed noise is in the interval


def test_multiplier_inverts_a_log_compute_fit():
    # random: loss = 5 − 0.2·log(budget); a method at loss 5 − 0.2·log 2 is worth 2× random's compute
    rows = [{"target": "t", "selection": f"random-b{b:g}", "method": "random", "proxy": "", "budget": b,
             "loss": 5 - 0.2 * np.log(b)} for b in (0.5, 1.0, 2.0)]
    rows.append({"target": "t", "selection": "dsdm", "method": "dsdm", "proxy": "p", "budget": 1.0,
                 "loss": 5 - 0.2 * np.log(2.0)})
    m = multiplier_table({}, pd.DataFrame(rows)).set_index("selection")
    assert abs(m.at["dsdm", "multiplier"] - 2.0) < 1e-9 and not m.at["dsdm", "extrapolated"]
    assert abs(m.at["random-b1", "multiplier"] - 1.0) < 1e-9

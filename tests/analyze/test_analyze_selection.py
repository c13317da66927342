"""The selection analysis' statistics: intervals over examples × seeds with pooled seed noise
(checked against the pooled two-sample t interval by hand), the monotone compute multiplier
(exactly 1× at random's measured budgets, a hand value between them), and the report's verdict."""
from __future__ import annotations

import numpy as np
import pandas as pd

from proxyscale.analyze.selection import holdout_table, multiplier_table
from proxyscale.studies.selection.report import verdict

T6 = 2.446911851  # Student t, 6 degrees of freedom, 97.5% quantile (tables)


def _results(run_means: dict[str, list[float]], n_ex: int = 4) -> pd.DataFrame:
    """Every example of a run has its run's loss: resampling examples moves nothing, so the
    interval is the seed term alone."""
    rows = [{"selection": s, "seed": k, "test_set": "holdout-t", "example_id": f"e{e}", "loss": m, "correct": np.nan}
            for s, ms in run_means.items() for k, m in enumerate(ms) for e in range(n_ex)]
    return pd.DataFrame(rows)


def _cfg(names: list[str]) -> dict:
    sels = [{"name": n, "method": n.split("-")[0], "target": None if n.startswith("random") else "t",
             "proxy": "p" if n.startswith("dsdm") else None, "budget": 1.0, "n": 10} for n in names]
    return {"seed": 0, "n_boot": 200_000, "targets": ["t"], "selections": sels, "context": 8, "dsdm_models": 1,
            "reference": "r", "rungs": {"r": {"params": 100, "flops": 1e6}, "p": {"params": 10, "flops": 1e5}},
            "trak_flops": {"p": 2e5}}


def test_interval_is_the_pooled_seed_t_interval_on_a_constructed_example():
    # run means per selection (3 seeds): within-selection sums of squares 0.02 each → pooled
    # σ̂² = 0.06 / 6 = 0.01 (ν = 6). By hand: random's loss 3.1 ± t₆·0.1/√3 = ± 0.141272;
    # dsdm − random = −0.1 ± t₆·0.1·√(2/3) = ± 0.199790 — an interval that reaches 0.
    means = {"random-b1": [3.0, 3.2, 3.1], "dsdm-t-p": [3.0, 3.1, 2.9], "dsir-t": [3.3, 3.1, 3.2]}
    h, reps = holdout_table(_cfg(list(means)), _results(means))
    h = h.set_index("selection")
    half = T6 * 0.1 / np.sqrt(3)
    assert abs(h.at["random-b1", "ci_low"] - (3.1 - half)) < 3e-3
    assert abs(h.at["random-b1", "ci_high"] - (3.1 + half)) < 3e-3
    d = T6 * 0.1 * np.sqrt(2 / 3)
    assert abs(h.at["dsdm-t-p", "minus_random"] + 0.1) < 1e-12
    assert abs(h.at["dsdm-t-p", "minus_random_low"] - (-0.1 - d)) < 3e-3
    assert abs(h.at["dsdm-t-p", "minus_random_high"] - (-0.1 + d)) < 3e-3
    assert h.at["dsdm-t-p", "minus_random_high"] > 0  # a seeds-only bootstrap of 3 seeds excluded 0 here
    assert reps["t"]["dsir-t"].shape == (200_000,)


def _holdout(losses: dict[float, float], others: dict[str, float]) -> pd.DataFrame:
    rows = [{"target": "t", "selection": f"random-b{b:g}", "method": "random", "proxy": "", "budget": b, "loss": v}
            for b, v in losses.items()]
    rows += [{"target": "t", "selection": n, "method": n, "proxy": "", "budget": 1.0, "loss": v}
             for n, v in others.items()]
    return pd.DataFrame(rows)


def test_multiplier_is_one_at_measured_random_budgets_and_interpolates_between():
    # random's losses are not linear in log compute (a log-linear fit missed budget 1 by 9%)
    random = {0.5: 5.2, 1.0: 5.0, 2.0: 4.9}
    h = _holdout(random, {"mid": 4.95, "worse": 5.3, "better": 4.8})
    m = multiplier_table(h, {}).set_index("selection")
    assert (m.loc[[f"random-b{b:g}" for b in random], "multiplier"] == 1.0).all()  # exactly
    assert not m.loc[[f"random-b{b:g}" for b in random], "extrapolated"].any()
    # 4.95 lies halfway from budget 1 (5.0) to 2 (4.9) in loss: log compute ½·log 2 → √2 ×
    assert abs(m.at["mid", "multiplier"] - np.sqrt(2)) < 1e-12 and not m.at["mid", "extrapolated"]
    # beyond the budgets: the line through the ends (slope −0.3 per log 4) carries on
    assert abs(m.at["worse", "multiplier"] - 0.5 * 4 ** (-1 / 3)) < 1e-12 and m.at["worse", "extrapolated"]
    assert abs(m.at["better", "multiplier"] - 2 * 4 ** (1 / 3)) < 1e-12 and m.at["better", "extrapolated"]


def test_multiplier_ci_repeats_the_inversion_on_the_replicates():
    random = {0.5: 5.2, 1.0: 5.0, 2.0: 4.9}
    h = _holdout(random, {"mid": 4.95})
    reps = {f"random-b{b:g}": np.full(101, v) for b, v in random.items()}
    reps["mid"] = np.linspace(4.9, 5.0, 101)  # log compute uniform on [0, log 2]
    m = multiplier_table(h, {"t": reps}).set_index("selection")
    assert abs(m.at["mid", "multiplier_low"] - 2 ** 0.025) < 1e-9
    assert abs(m.at["mid", "multiplier_high"] - 2 ** 0.975) < 1e-9
    assert m.at["random-b1", "multiplier_low"] == m.at["random-b1", "multiplier_high"] == 1.0


def test_a_non_monotone_random_curve_is_pooled_before_inverting():
    # more random data measured a higher loss (5.0 then 5.1): the envelope averages them to 5.05
    m = multiplier_table(_holdout({0.5: 5.0, 1.0: 5.1, 2.0: 4.8}, {"x": 4.925}), {}).set_index("selection")
    assert abs(m.at["x", "multiplier"] - np.sqrt(2)) < 1e-12  # halfway from 5.05 (budget 1) to 4.8 (2)


def _verdict_rows(diffs: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    rows = [{"target": "t", "method": "random", "proxy": "", "budget": 1.0, "minus_random": 0.0,
             "minus_random_low": 0.0, "minus_random_high": 0.0, "selection_flops": 0.0, "reference_flops": 1e12}]
    for name, (d, lo, hi) in diffs.items():
        method, _, proxy = name.partition(":")
        rows.append({"target": "t", "method": method, "proxy": proxy, "budget": 1.0, "minus_random": d,
                     "minus_random_low": lo, "minus_random_high": hi,
                     "selection_flops": 1.23e13 if proxy else 0.0, "reference_flops": 1e12})
    return pd.DataFrame(rows)


def test_the_verdict_says_no_gain_first_with_the_cost_of_selecting():
    h = _verdict_rows({"dsdm:L1d4": (-0.06, -0.14, 0.01), "dsir": (-0.01, -0.05, 0.03),
                       "bot-dsdm:L1d4": (0.2, 0.1, 0.3)})
    assert verdict(h, "t") == (
        "No gain on target 't': no method beat random selection (every difference CI reaches 0 or above); the "
        "best was dsdm (L1d4) -0.060 [-0.140, +0.010] nats. Selecting cost up to 12.3× the reference's training "
        "compute (dsdm (L1d4), bot-dsdm (L1d4)); dsir needs no model training.")
    win = verdict(_verdict_rows({"dsdm:L1d4": (-0.06, -0.14, -0.01), "dsir": (-0.01, -0.05, 0.03)}), "t")
    assert win.startswith("Target 't': 1 of 2 selections beat random (difference CI below 0); the best was "
                          "dsdm (L1d4) -0.060 [-0.140, -0.010] nats.")

"""Leave-one-out R², Cook's distance and Holm's adjustment against their definitions."""
import itertools

import numpy as np
import pandas as pd
import pytest

from oracles import holm_by_hand
from proxyscale.analyze import analyze_study, robust, stats
from proxyscale.analyze.synthetic import DEFAULT_MODELS, make_synthetic_study
from proxyscale.errors import DataError


def _holm_closed_testing(p):
    """Holm as the closed testing procedure over Bonferroni tests of every intersection:
    the adjusted p of H_i is the largest Bonferroni p over all subsets containing i."""
    m = len(p)
    out = np.zeros(m)
    for i in range(m):
        for k in range(1, m + 1):
            for sub in itertools.combinations(range(m), k):
                if i in sub:
                    out[i] = max(out[i], min(1.0, k * min(p[j] for j in sub)))
    return out


def test_holm_hand_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    got = robust.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(robust.holm(np.array([0.5, 0.6])), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(robust.holm(np.array([0.02])), [0.02])  # one test: unchanged


def test_holm_with_ties_and_a_non_monotone_step():
    """By hand, m = 6: sorted 0.001, 0.01, 0.02, 0.02, 0.04, 0.30 times 6, 5, 4, 3, 2, 1 gives
    0.006, 0.05, 0.08, 0.06, 0.08, 0.30; the running max makes it 0.006, 0.05, 0.08, 0.08, 0.08,
    0.30 (the second 0.02 and the 0.04 would step down to 0.06 and up again without it)."""
    p = np.array([0.01, 0.02, 0.02, 0.04, 0.001, 0.30])
    want = [0.05, 0.08, 0.08, 0.08, 0.006, 0.30]
    np.testing.assert_allclose(robust.holm(p), want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(holm_by_hand(p), want, rtol=0, atol=1e-15)  # the oracle agrees with the hand
    for perm in itertools.permutations(range(6)):  # any order of the family, ties in either order
        idx = list(perm)
        np.testing.assert_allclose(robust.holm(p[idx]), np.array(want)[idx], rtol=0, atol=1e-15)
    # a family of 3 inside nan: m counts only the tests (0.02·3, 0.03·2, 0.5·1 → 0.06, 0.06, 0.5)
    np.testing.assert_allclose(robust.holm(np.array([np.nan, 0.03, 0.5, np.nan, 0.02])),
                               [np.nan, 0.06, 0.5, np.nan, 0.06], rtol=0, atol=1e-15)


def test_holm_equals_the_step_down_written_out():
    rng = np.random.default_rng(4)
    for m in (1, 2, 5, 25, 60):
        p = np.round(rng.random(m) ** 4, 3)  # rounding makes ties; the power, small p-values
        p[rng.random(m) < 0.1] = np.nan
        np.testing.assert_allclose(robust.holm(p), holm_by_hand(p), rtol=0, atol=1e-15)


def test_holm_family_is_every_partial_r_test_of_the_summary():
    """The family: on each test set, every proxy but the best n-gram (neural rungs below the
    reference, and the other n-grams) tested against the reference given the best n-gram."""
    a = analyze_study(*make_synthetic_study(np.random.default_rng(5), n_examples=4), seed=1, n_boot=20)
    s = a["summary"]
    n_neural = sum(m.kind == "neural" for m in DEFAULT_MODELS) - 1  # the largest is the reference
    n_grams = sum(m.kind == "ngram" for m in DEFAULT_MODELS)
    family = len(a["test_sets"]) * (n_neural + n_grams - 1)
    assert (n_neural, n_grams, family) == (3, 2, 12)  # 3 test sets × (3 rungs + 2 n-grams − the best)
    assert int(a["settings"]["n_tests"].iloc[0]) == family
    tested = s[s["partial_p"].notna()]
    assert len(tested) == family and tested["partial_p_holm"].notna().all()
    assert (s["model"] == s["best_ngram"]).sum() == len(a["test_sets"])  # the control is not tested
    np.testing.assert_allclose(s["partial_p_holm"], holm_by_hand(s["partial_p"]), rtol=0, atol=1e-15)
    loso = a["summary_loso"]  # leave-source-out is a family of its own
    np.testing.assert_allclose(loso["partial_p_holm"], holm_by_hand(loso["partial_p"]), rtol=0, atol=1e-15)


def test_holm_matches_closed_testing_and_skips_nan():
    rng = np.random.default_rng(0)
    for m in range(1, 8):
        p = rng.random(m) ** 3  # plenty of small ones
        p[rng.random(m) < 0.2] = p[0]  # ties
        np.testing.assert_allclose(robust.holm(p), _holm_closed_testing(p), atol=1e-12)
    with_nan = np.array([0.01, np.nan, 0.02])
    got = robust.holm(with_nan)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], _holm_closed_testing([0.01, 0.02]))  # a family of 2, not 3
    with pytest.raises(DataError, match="p-values"):
        robust.holm(np.array([0.2, 1.5]))


def test_loo_r2_matches_refits():
    rng = np.random.default_rng(1)
    x = rng.normal(size=9)
    y = x + 0.5 * rng.normal(size=9)
    got = robust.loo_r2(x, y)
    for i in range(9):
        xi, yi = np.delete(x, i), np.delete(y, i)
        fit = np.polyval(np.polyfit(xi, yi, 1), xi)
        direct = 1 - np.sum((yi - fit) ** 2) / np.sum((yi - yi.mean()) ** 2)
        assert got[i] == pytest.approx(direct, abs=1e-10)
    assert np.isnan(robust.loo_r2(x[:3], y[:3])).all()


def test_cooks_distance_matches_refit_definition():
    """D_i = Σ_j (ŷ_j − ŷ_j(i))² / (p·s²): the change of every fitted value when i is dropped."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=10)
    y = 2 * x + rng.normal(size=10)
    x[3] += 4  # a high-leverage point
    got = robust.cooks_distance(x, y)
    full = np.polyfit(x, y, 1)
    fitted = np.polyval(full, x)
    s2 = np.sum((y - fitted) ** 2) / (len(x) - 2)
    for i in range(len(x)):
        without = np.polyval(np.polyfit(np.delete(x, i), np.delete(y, i), 1), x)
        assert got[i] == pytest.approx(np.sum((fitted - without) ** 2) / (2 * s2), rel=1e-8)
    assert np.isnan(robust.cooks_distance(x[:2], y[:2])).all()
    assert np.isnan(robust.cooks_distance(x, 3 * x + 1)).all()  # exact fit: s² = 0


def test_carried_by_one_rule():
    assert robust.carried_by_one(0.76, 0.04, 0.9)  # the measured cloze case
    assert robust.carried_by_one(0.95, 0.64, 0.9)  # passes with it, fails without
    assert not robust.carried_by_one(0.95, 0.91, 0.9)
    assert not robust.carried_by_one(0.93, 0.89, 0.9)  # crosses the threshold by a hair
    assert not robust.carried_by_one(0.30, 0.20, 0.9)
    assert robust.carried_by_one(0.65, 0.06, 0.9)  # the measured continuation case
    assert not robust.carried_by_one(0.07, 0.001, 0.9)  # no agreement to carry
    assert not robust.carried_by_one(float("nan"), 0.1, 0.9)


def _one_outlier_study(D=8, seed=3):
    rng = np.random.default_rng(seed)
    ref, proxy = rng.normal(size=D), rng.normal(size=D)
    ref[0] += 20.0  # one distribution (say, code) far from the rest on both axes
    proxy[0] += 20.0
    steady = ref + 0.2 * rng.normal(size=D)
    dists = [f"d{i}" for i in range(D)]
    rows = [("mix", f"e{e}", dists[d], m, s, float(v[d] + 0.05 * e + 0.01 * s), 4, np.nan)
            for m, v in (("R", ref), ("P", proxy), ("S", steady)) for s in range(2) for d in range(D)
            for e in range(3)]
    results = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss",
                                          "n_tokens", "correct"])
    models = pd.DataFrame([{"model": m, "kind": "neural", "params": p, "train_tokens": 0, "flops": float(p),
                            "is_reference": m == "R"} for m, p in (("R", 100), ("P", 1), ("S", 2))])
    return results, models, pd.DataFrame({"distribution": dists, "sources": [["web"]] * D}), \
        pd.DataFrame([{"test_set": "mix", "kind": "lm", "source": None}])


def test_analysis_flags_a_result_one_distribution_carries():
    a = analyze_study(*_one_outlier_study(), seed=0, n_boot=100)
    s = a["summary"].set_index("model")
    assert s.at["P", "r2"] > 0.8 and s.at["P", "r2_loo_min"] < 0.5
    assert s.at["P", "r2_loo_min_dist"] == "d0" and s.at["P", "cooks_max_dist"] == "d0"
    assert s.at["P", "one_point_carries"] and not s.at["S", "one_point_carries"]
    sp = a["smallest_proxy"].set_index("metric")
    assert sp.at["r2", "model"] == "P" and sp.at["r2", "carried_by_one"]  # the least compute passing, by one point
    p = a["points"].query("model == 'P'").sort_values("distribution")
    np.testing.assert_allclose(p["r2_without"], robust.loo_r2(p["x"].to_numpy(), p["y"].to_numpy()))
    np.testing.assert_allclose(p["cooks_d"], robust.cooks_distance(p["x"].to_numpy(), p["y"].to_numpy()))
    assert s.at["P", "r2_loo_min"] == pytest.approx(p["r2_without"].min())
    assert s.at["P", "r2"] == pytest.approx(stats.r2_linear(p["x"].to_numpy(), p["y"].to_numpy()))

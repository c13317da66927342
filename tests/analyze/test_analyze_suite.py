"""Suites: results read one test set at a time, metrics and their orientation, sanity checks,
and paired intervals for comparisons — each on data whose right answer is known."""
import math

import numpy as np
import pandas as pd
import pytest

from proxyscale.analyze import analyze_study, stats
from proxyscale.analyze.correlate import _smallest
from proxyscale.analyze.extrapolate import paired_difference, predict_many
from proxyscale.analyze.synthetic import SuiteDesign, make_synthetic_suite
from proxyscale.errors import DataError

DISTS = ["d0", "d1", "d2", "d3"]


def test_streamed_suite_recovers_the_known_truth():
    """Points are the suite's expected cell means and R² is the true cells' R², up to the noise
    of 400 examples × 3 seeds (sd ≈ 0.01); a DataFrame and per-test-set loaders agree exactly."""
    s = make_synthetic_suite(3, SuiteDesign(n_dist=8, n_scales=4, n_seeds=3, n_test_sets=2, n_examples=400))
    a = analyze_study(s["results"], s["models"], s["distributions"], s["test_sets"], seed=0, n_boot=50)
    truth = s["truth"].set_index(["test_set", "model", "distribution"])["loss"]
    pts = a["points"].set_index(["test_set", "model", "distribution"])
    assert len(pts) == 2 * 3 * 8
    assert (pts["x"] - truth.reindex(pts.index)).abs().max() < 0.05
    for (ts, m), g in a["points"].groupby(["test_set", "model"]):
        tx, ty = (truth.loc[ts, name].reindex(g["distribution"]) for name in (m, "s03"))
        want = stats.r2_linear(tx, ty)
        got = a["summary"].query("test_set == @ts and model == @m").iloc[0]
        assert got["r2"] == pytest.approx(want, abs=0.05)
        assert got["r2_lo"] <= got["r2"] <= got["r2_hi"]
    whole = pd.concat([load() for load in s["results"].values()], ignore_index=True)
    b = analyze_study(whole, s["models"], s["distributions"], s["test_sets"], seed=0, n_boot=50)
    pd.testing.assert_frame_equal(a["summary"], b["summary"])
    assert a["sanity_reference"]["trust"].all()
    es = a["extrapolation_summary"]
    assert np.isfinite(es["r2_diff_lo"]).all() and (es["beats_best_r2"] == (es["r2_diff_lo"] > 0)).all()
    np.testing.assert_allclose(a["sanity_models"]["uniform_loss"], math.log(50_000))


def _tables(rows, ref="R"):
    res = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss",
                                      "correct_prob", "correct"])
    models = pd.DataFrame([{"model": m, "kind": "neural", "params": p, "train_tokens": 0, "flops": float(p),
                            "is_reference": m == ref, "vocab_size": 100} for m, p in (("R", 100), ("P", 1))])
    dists = pd.DataFrame({"distribution": DISTS, "sources": [["web"]] * 4})
    tests = pd.DataFrame([{"test_set": t, "kind": "choice", "source": None} for t in sorted(set(res["test_set"]))])
    return res, models, dists, tests


def _choice_rows(test_set="t"):
    """d0 is best for both models: lowest loss, highest correct-choice probability and accuracy."""
    rows = []
    for m in ("R", "P"):
        for i, d in enumerate(DISTS):
            for e in range(2):
                rows.append((test_set, f"e{e}", d, m, 0, 2.0 + 0.5 * i + 0.1 * e, 0.9 - 0.2 * i + 0.02 * e,
                             float(i < 2 - e)))  # accuracy: d0 2/2, d1 1/2, d2 and d3 0/2
    return rows


def test_higher_is_better_metrics_are_flipped_to_lower_is_better():
    tabs = _tables(_choice_rows())
    a = analyze_study(*tabs, seed=0, n_boot=50, metric="correct_prob")
    x = a["points"].query("model == 'P'").sort_values("distribution")["x"].to_numpy()
    np.testing.assert_allclose(x, 1 - (0.91 - 0.2 * np.arange(4)))  # 1 − mean correct_prob
    st = a["settings"].iloc[0]
    assert st["metric"] == "correct_prob" and bool(st["metric_flipped"])
    md = a["metric_decisions"].set_index("metric")
    assert set(md["target_metric"]) == {"accuracy"}
    # P's loss ranking and its (flipped) probability ranking both agree with R's error rate on every
    # pair that accuracy separates; d2 and d3 tie on accuracy, and only that pair disagrees.
    assert md.loc["loss", "decision_accuracy"] == pytest.approx(5 / 6)
    assert md.loc["correct_prob", "decision_accuracy"] == pytest.approx(5 / 6)
    assert md.loc["accuracy", "decision_accuracy"] == pytest.approx(1.0)
    assert md.loc["correct_prob", "diff_vs_accuracy"] == pytest.approx(-1 / 6)
    acc = analyze_study(*tabs, seed=0, n_boot=50, metric="accuracy")
    np.testing.assert_allclose(acc["points"].query("model == 'P'").sort_values("distribution")["x"],
                               [0.0, 0.5, 1.0, 1.0])  # the error rate
    renamed = analyze_study(tabs[0].rename(columns={"correct": "accuracy"}), *tabs[1:], seed=0, n_boot=50,
                            metric="accuracy")  # the lm-eval and Hugging Face readers' column name
    pd.testing.assert_frame_equal(renamed["points"], acc["points"])


def test_a_metric_some_models_lack_is_one_clear_error_and_a_test_set_without_it_is_left_out():
    rows = _choice_rows("t") + _choice_rows("u")
    res, models, dists, tests = _tables(rows)
    part = res.assign(correct_prob=np.where((res["model"] == "P") & (res["test_set"] == "t"), np.nan,
                                            res["correct_prob"]))
    with pytest.raises(DataError, match=r"metric 'correct_prob' is missing for model\(s\) \['P'\] on test set 't'"):
        analyze_study(part, models, dists, tests, seed=0, n_boot=20, metric="correct_prob")
    none_on_t = res.assign(correct_prob=np.where(res["test_set"] == "t", np.nan, res["correct_prob"]))
    a = analyze_study(none_on_t, models, dists, tests, seed=0, n_boot=20, metric="correct_prob")
    assert set(a["summary"]["test_set"]) == {"u"} and a["settings"]["skipped_test_sets"].iloc[0] == "t"
    with pytest.raises(DataError, match="token_mean"):
        analyze_study(res, models, dists, tests, seed=0, n_boot=20, metric="accuracy", loss="token_mean")
    with pytest.raises(DataError, match="not one of"):
        analyze_study(res, models, dists, tests, seed=0, n_boot=20, metric="acc")


def _reference_rows(ref_loss, seed_noise):
    """R over 4 distributions × 2 seeds (per-token loss ``ref_loss[d] + seed_noise[s, d]``); P tracks it."""
    rows = []
    for s in range(2):
        for i, d in enumerate(DISTS):
            for e in range(2):
                rows.append(("t", f"e{e}", d, "R", s, ref_loss[i] + seed_noise[s, i], np.nan, np.nan))
                rows.append(("t", f"e{e}", d, "P", s, 3.0 + 0.3 * i + 0.01 * s, np.nan, np.nan))
    return rows


def test_sanity_flags_a_reference_that_has_not_learned_and_indistinct_distributions():
    noise = np.array([[0.02, -0.02, 0.02, -0.02], [-0.02, 0.02, -0.02, 0.02]])
    flat = np.full(4, math.log(100) - 0.01)  # a uniform predictor over 100 tokens, give or take seed noise
    a = analyze_study(*_tables(_reference_rows(flat, noise)), seed=0, n_boot=20)
    r = a["sanity_reference"].iloc[0]
    assert r["ref_loss"] == pytest.approx(math.log(100) - 0.01) and r["uniform_loss"] == pytest.approx(math.log(100))
    assert bool(r["not_learned"]) and bool(r["indistinct"]) and not bool(r["trust"])
    # seed means are equal (the noise cancels), so the spread is 0; seed sd 0.02·√2, noise of a mean 0.02
    assert r["spread_sd"] == pytest.approx(0.0, abs=1e-12) and r["seed_sd"] == pytest.approx(0.02 * math.sqrt(2))
    assert r["noise_sd"] == pytest.approx(0.02) and r["spread_ratio"] == pytest.approx(0.0, abs=1e-9)
    good = analyze_study(*_tables(_reference_rows(np.array([2.0, 2.3, 2.6, 2.9]), noise)), seed=0, n_boot=20)
    g = good["sanity_reference"].iloc[0]
    assert not g["not_learned"] and not g["indistinct"] and g["trust"]
    assert g["spread_ratio"] == pytest.approx(np.std([2.0, 2.3, 2.6, 2.9], ddof=1) / 0.02)


def test_smallest_proxy_needs_every_larger_proxy_and_each_metric_its_own_flag():
    """L1 passes, L2 fails, L3 passes on R²: L3 is named, L1 only as the first that passes.
    L3's decision accuracy is carried by one distribution while its R² is not."""
    summary = pd.DataFrame({
        "test_set": "t", "model": ["L1", "L2", "L3"], "kind": "neural", "flops": [1.0, 2.0, 3.0], "params": [1, 2, 3],
        "compute_ratio": [30.0, 15.0, 10.0], "r2": [0.95, 0.5, 0.93], "decision_accuracy": [0.8, 0.85, 0.95],
        "one_point_carries": [False, False, False], "da_one_point_carries": [False, False, True]})
    r2 = _smallest(summary, "r2", 0.9)[0]
    assert (r2["model"], r2["first_passing"], r2["fails_above"], r2["all_larger_pass"]) == ("L3", "L1", "L2", False)
    assert r2["compute_ratio"] == 10.0 and r2["carried_by_one"] is False
    da = _smallest(summary, "decision_accuracy", 0.9)[0]
    assert (da["model"], da["first_passing"], da["all_larger_pass"], da["carried_by_one"]) == ("L3", "L3", True, True)
    top_fails = _smallest(summary.assign(r2=[0.95, 0.96, 0.5]), "r2", 0.9)[0]
    assert top_fails["model"] is None and top_fails["first_passing"] == "L1" and top_fails["fails_above"] == "L3"


def test_paired_difference_decides_beats_by_its_interval():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 20))  # (B, D) replicates of the reference's cell means
    close = ref + 0.1 * rng.normal(size=ref.shape)
    far = ref + 1.5 * rng.normal(size=ref.shape)
    point = (float(np.mean(stats.r2_linear(close, ref) - stats.r2_linear(far, ref))), 0.1)
    better = paired_difference(close, far, ref, point, 0.95)
    assert better["r2_diff"] == point[0] and better["r2_diff_lo"] > 0.3  # R² ≈ 0.99 against ≈ 0.3
    same = paired_difference(far + 1e-3 * rng.normal(size=ref.shape), far, ref, (0.0, 0.0), 0.95)
    assert same["r2_diff_lo"] < 0 < same["r2_diff_hi"]  # 0.616 vs 0.614 is no win


def test_vectorised_ladder_fit_matches_the_single_fit_on_its_grid():
    from proxyscale.analyze.extrapolate import _FINE_GRID, _profile

    c = np.array([1e15, 4e15, 1.6e16, 6.4e16])
    x = c / c[-1]
    rng = np.random.default_rng(1)
    ys = 2.0 + 1.5 * x[None] ** -0.3 + 0.01 * rng.normal(size=(20, 4))
    got = predict_many(c, ys, 1e18)
    want = []
    for y in ys:  # the same non-negative fit, one series and one α at a time
        alpha = min(_FINE_GRID, key=lambda a: _profile(a, x, y)[0])
        _, e, amp = _profile(alpha, x, y)
        want.append(e + amp * (1e18 / c[-1]) ** -alpha)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    exact = predict_many(c, (2.0 + 1.5 * x ** -0.3)[None], 1e18)[0]
    assert exact == pytest.approx(2.0 + 1.5 * (1e18 / c[-1]) ** -0.3, abs=5e-3)  # the planted law, up to the grid
    assert np.isnan(predict_many(c, np.array([[1.0, np.nan, 1.0, 1.0]]), 1e18)[0])


def test_extrapolation_beats_the_best_proxy_only_when_the_interval_says_so():
    """R² 0.616 against 0.614 with an interval of the difference that includes 0 is no win."""
    from proxyscale.analyze.extrapolate import extrapolation_summary

    extra = pd.DataFrame({"test_set": "t", "distribution": DISTS, "method": "power_law",
                          "predicted": [1.0, 2.0, 3.5, 4.0], "reference": [1.0, 2.1, 3.0, 4.2]})
    summary = pd.DataFrame({"test_set": "t", "model": ["P"], "r2": [0.614], "decision_accuracy": [1.0]})
    points = pd.DataFrame({"test_set": "t", "model": "P", "x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 3.0, 4.0]})
    straddles = {"t": {"r2_diff_lo": -0.01, "r2_diff_hi": 0.02, "decision_diff_lo": -0.2, "decision_diff_hi": 0.1}}
    es = extrapolation_summary(extra, summary, points, ["P"], straddles).iloc[0]
    assert es["r2_diff"] == pytest.approx(es["r2"] - 0.614) and es["r2_diff"] > 0
    assert not es["beats_best_r2"] and not es["beats_best_decision"]
    above = {"t": {**straddles["t"], "r2_diff_lo": 0.001}}
    assert extrapolation_summary(extra, summary, points, ["P"], above).iloc[0]["beats_best_r2"]


def test_decision_accuracy_has_its_own_leave_one_out_rule():
    from proxyscale.analyze.robust import carried_past_threshold, loo_decision_accuracy

    x, y = np.array([0.0, 1.0, 2.0, 3.0, -1.0]), np.arange(5.0)  # the last point is out of order
    assert stats.decision_accuracy(x, y) == pytest.approx(0.6)
    np.testing.assert_allclose(loo_decision_accuracy(x, y), [0.5, 0.5, 0.5, 0.5, 1.0])
    assert carried_past_threshold(0.95, 0.85, 0.9)
    assert not carried_past_threshold(0.92, 0.89, 0.9)  # a drop of 0.03 is noise
    assert not carried_past_threshold(0.85, 0.5, 0.9)  # not passing: nothing to carry

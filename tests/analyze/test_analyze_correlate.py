"""analyze_study on synthetic studies whose truth is known."""
import numpy as np
import pandas as pd
import pytest

from proxyscale.analyze import analyze_study, read_analysis, stats, write_analysis
from proxyscale.analyze.synthetic import make_synthetic_study
from proxyscale.errors import DataError, StoreError

NGRAMS = ("unigram", "bigram", "trigram")


def build(losses, flops, ref, *, test_set="mix", source=None, dist_sources=None, n_examples=2):
    """Tables from run-level mean losses: ``losses[model]`` is (S, D) over seeds × distributions.

    Each run gets ``n_examples`` examples whose losses average to the given mean (±0.1 offsets),
    so the per-example layer is exercised without changing the means.
    """
    n_dist = next(iter(losses.values())).shape[1]
    dists = [f"d{i}" for i in range(n_dist)]
    offs = np.linspace(-0.1, 0.1, n_examples) if n_examples > 1 else np.zeros(1)
    rows = [(test_set, f"e{e}", dists[d], m, s, float(mat[s, d] + offs[e]), 4, np.nan)
            for m, mat in losses.items() for s in range(mat.shape[0]) for d in range(n_dist) for e in range(n_examples)]
    results = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss",
                                          "n_tokens", "correct"])
    models = pd.DataFrame([{"model": m, "kind": "ngram" if m in NGRAMS else "neural", "params": int(flops[m] ** 0.5),
                            "train_tokens": 0, "flops": float(flops[m]), "is_reference": m == ref} for m in losses])
    srcs = dist_sources or [["web"]] * n_dist
    distributions = pd.DataFrame({"distribution": dists, "sources": srcs})
    test_sets = pd.DataFrame([{"test_set": test_set, "kind": "lm", "source": source}])
    return results, models, distributions, test_sets


def row(analysis, model, table="summary"):
    t = analysis[table]
    return t[t["model"] == model].iloc[0]


def test_r2_matches_noise_level_and_direct_computation():
    rng = np.random.default_rng(0)
    D = 400
    ref = rng.normal(size=D)
    losses = {"R": ref[None, :], "P_clean": (2 * ref + 0.5 * rng.normal(size=D))[None, :],
              "P_noisy": (2 * ref + 2.0 * rng.normal(size=D))[None, :]}
    a = analyze_study(*build(losses, {"R": 100.0, "P_clean": 1.0, "P_noisy": 10.0}, "R", n_examples=1), seed=0)
    # Population R² of x = 2y + σε on var(y)=1 is 4 / (4 + σ²).
    assert row(a, "P_clean")["r2"] == pytest.approx(4 / 4.25, abs=0.02)
    assert row(a, "P_noisy")["r2"] == pytest.approx(4 / 8, abs=0.08)
    assert row(a, "P_noisy")["compute_ratio"] == pytest.approx(10.0)
    x, y = losses["P_noisy"][0], ref
    s = row(a, "P_noisy")
    assert s["pearson"] == pytest.approx(stats.pearson(x, y))
    assert s["decision_accuracy"] == pytest.approx(stats.decision_accuracy(x, y))
    assert s["n_dist"] == D and np.isnan(s["r2_lo"])  # one seed each: no CI


def test_seed_means_and_bootstrap_ci():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=8)
    proxy = ref + 0.3 * rng.normal(size=(3, 8))  # 3 seeds
    refs = ref + 0.05 * rng.normal(size=(2, 8))
    a = analyze_study(*build({"R": refs, "P": proxy}, {"R": 10.0, "P": 1.0}, "R"), seed=3, n_boot=400)
    s = row(a, "P")
    assert s["r2"] == pytest.approx(stats.r2_linear(proxy.mean(0), refs.mean(0)))
    assert s["n_seeds"] == 3 and s["ref_n_seeds"] == 2
    assert s["r2_lo"] <= s["r2"] + 1e-9 and s["r2"] <= s["r2_hi"] + 0.05 and s["r2_lo"] < s["r2_hi"]
    p = a["points"][(a["points"]["model"] == "P")].sort_values("distribution")
    np.testing.assert_allclose(p["x_sd"], proxy.std(axis=0, ddof=1))
    again = analyze_study(*build({"R": refs, "P": proxy}, {"R": 10.0, "P": 1.0}, "R"), seed=3, n_boot=400)
    assert row(again, "P")["r2_lo"] == s["r2_lo"]  # same seed, same numbers


def _signal_study(D, rng):
    q1, q2 = rng.normal(size=D), rng.normal(size=D)
    ref = q1 + 0.6 * q2
    bigram = q1 + 0.05 * rng.normal(size=D)
    losses = {
        "R": ref + 0.05 * rng.normal(size=(2, D)),  # 2 seeds: a noise ceiling
        "unigram": (0.5 * q1 + rng.normal(size=D))[None, :],
        "bigram": bigram[None, :],
        "P_copy": (bigram + 0.3 * rng.normal(size=D))[None, :],  # nothing beyond the bigram
        "P_good": (q1 + 0.6 * q2 + 0.2 * rng.normal(size=D))[None, :],
    }
    flops = {"R": 100.0, "unigram": 0.0, "bigram": 0.0, "P_copy": 1.0, "P_good": 2.0}
    return build(losses, flops, "R", n_examples=1)


def test_signal_beyond_ngrams_and_noise_ceiling():
    a = analyze_study(*_signal_study(40, np.random.default_rng(2)), seed=0)
    good, copy = row(a, "P_good"), row(a, "P_copy")
    assert good["best_ngram"] == "bigram"
    assert abs(copy["partial_r"]) < 0.4 and copy["partial_p"] > 0.05
    assert good["partial_r"] > 0.8 and good["partial_p"] < 0.01
    assert not good["partial_exact"]  # 40 distributions: Monte Carlo
    assert np.isnan(row(a, "bigram")["partial_r"])  # the control itself
    ceil = a["noise_ceiling"].iloc[0]
    assert ceil["n_ref_seeds"] == 2 and ceil["n_pairs"] == 1 and ceil["partial_r"] > 0.9
    assert row(a, "bigram")["compute_ratio"] == np.inf


def test_exact_permutation_with_eight_distributions():
    a = analyze_study(*_signal_study(8, np.random.default_rng(4)), seed=0)
    good = row(a, "P_good")
    assert good["partial_exact"]
    # The exact p is a multiple of 1/8!.
    assert good["partial_p"] * 40320 == pytest.approx(round(good["partial_p"] * 40320), abs=1e-6)
    res = stats.partial_corr_permutation(
        *(np.array(a["points"].query("model == 'P_good'").sort_values("distribution")[c]) for c in ("x", "y")),
        np.array(a["points"].query("model == 'bigram'").sort_values("distribution")["x"]))
    assert good["partial_p"] == pytest.approx(res.p_value)


def test_leave_source_out_removes_the_flattering_outlier():
    rng = np.random.default_rng(5)
    D = 10
    ref, proxy = rng.normal(size=D), rng.normal(size=D)  # unrelated...
    ref[0] -= 20.0  # ...except the one distribution trained on the test set's source
    proxy[0] -= 20.0
    srcs = [["web", "code"]] + [["books"]] * (D - 1)
    t = build({"R": ref[None], "P": proxy[None]}, {"R": 10.0, "P": 1.0}, "R", test_set="web_test", source="web",
              dist_sources=srcs)
    a = analyze_study(*t, seed=0)
    assert row(a, "P")["r2"] > 0.9
    loso = row(a, "P", "summary_loso")
    assert loso["n_dist"] == D - 1 and loso["left_out"] == "d0" and loso["r2"] < 0.5
    ts = a["test_sets"].iloc[0]
    assert ts["framing"] == "per_source" and not ts["lead"]


def test_smallest_proxy_requires_every_larger_proxy_to_pass():
    """tiny passes, mid (larger) fails, big passes: the stable answer is big; tiny is named only
    as the first that passes, with mid as the larger proxy that fails."""
    rng = np.random.default_rng(6)
    D = 30
    ref = rng.normal(size=D)
    losses = {"R": ref[None], "big": (ref + 0.1 * rng.normal(size=D))[None],
              "tiny": (ref + 0.1 * rng.normal(size=D))[None], "mid": (ref + 3 * rng.normal(size=D))[None]}
    flops = {"R": 1000.0, "big": 100.0, "tiny": 1.0, "mid": 10.0}
    a = analyze_study(*build(losses, flops, "R"), seed=0)
    sp = a["smallest_proxy"].set_index("metric")
    assert sp.loc["r2", "model"] == "big" and sp.loc["r2", "compute_ratio"] == pytest.approx(10.0)
    assert sp.loc["r2", "first_passing"] == "tiny" and sp.loc["r2", "fails_above"] == "mid"
    assert not sp.loc["r2", "all_larger_pass"]  # "mid" fails in between
    nothing = analyze_study(*build({"R": ref[None], "mid": losses["mid"]}, flops, "R"), seed=0)["smallest_proxy"]
    assert nothing["model"].isna().all() and nothing["all_larger_pass"].isna().all()  # shown '—', not 'no'
    assert sp.loc["decision_accuracy", "threshold"] == 0.9


def test_extrapolation_recovers_planted_power_law():
    rng = np.random.default_rng(7)
    D, alpha = 8, 0.35
    E, A = 2 + 0.3 * rng.normal(size=D), 1 + 0.2 * rng.normal(size=D)
    rung_flops = {"r1": 1e9, "r2": 1e10, "r3": 1e11, "r4": 1e12}
    ref_flops = 1e14
    losses = {m: (E + A * (c / 1e12) ** -alpha)[None] for m, c in rung_flops.items()}
    true_ref = E + A * (ref_flops / 1e12) ** -alpha
    losses["R"] = true_ref[None]
    a = analyze_study(*build(losses, {**rung_flops, "R": ref_flops}, "R"), seed=0)
    ex = a["extrapolation"].sort_values("distribution")
    assert set(ex["method"]) == {"power_law"}
    np.testing.assert_allclose(ex["alpha"], alpha, rtol=1e-3)
    np.testing.assert_allclose(ex["E"], E, rtol=1e-3)
    np.testing.assert_allclose(ex["predicted"], true_ref, rtol=1e-4)
    es = a["extrapolation_summary"].iloc[0]
    assert es["r2"] == pytest.approx(1.0, abs=1e-6) and es["mae"] < 1e-3
    assert es["largest_proxy"] == "r4" and es["largest_proxy_mae"] > 0.1


def test_per_example_correlation_matches_direct():
    results, models, dists, test_sets = make_synthetic_study(np.random.default_rng(8), n_examples=5)
    a = analyze_study(results, models, dists, test_sets, seed=0, n_boot=50)
    pe = a["per_example"]
    got = pe[(pe["test_set"] == "mixed_lm") & (pe["model"] == "L2d32") & (pe["example_id"] == "ex3")]["r"].iloc[0]
    sub = results[(results["test_set"] == "mixed_lm") & (results["example_id"] == "ex3")]
    m = sub.groupby(["model", "distribution"])["loss"].mean()
    assert got == pytest.approx(np.corrcoef(m["L2d32"].sort_index(), m["L4d96"].sort_index())[0, 1])
    assert len(pe) == 3 * 5 * 5  # test sets × examples × proxies
    lead = a["test_sets"].query("lead")["test_set"].tolist()
    assert lead == ["mixed_lm", "qa_never"]


def test_roundtrip_and_errors(tmp_path):
    t = make_synthetic_study(np.random.default_rng(9), n_examples=3)
    a = analyze_study(*t, seed=1, n_boot=50)
    write_analysis(a, tmp_path / "an")
    b = read_analysis(tmp_path / "an")
    assert set(b) == set(a)
    pd.testing.assert_frame_equal(a["summary"], b["summary"], check_dtype=False)
    with pytest.raises(StoreError, match="run the analysis"):
        read_analysis(tmp_path / "missing")
    results, models, dists, test_sets = t
    with pytest.raises(DataError, match="is_reference"):
        analyze_study(results, models.assign(is_reference=True), dists, test_sets, seed=0)
    with pytest.raises(DataError, match="lacks column"):
        analyze_study(results.drop(columns="loss"), models, dists, test_sets, seed=0)
    with pytest.raises(DataError, match="missing from the models"):
        analyze_study(results, models[models["model"] != "L2d32"], dists, test_sets, seed=0)

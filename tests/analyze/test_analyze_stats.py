"""The numpy statistics against scipy / scikit-learn oracles and brute-force enumeration."""
import itertools
import math

import numpy as np
import pytest

from oracles import oracle
from proxyscale.analyze import stats
from proxyscale.errors import DataError

scipy_stats = oracle("scipy.stats")
sk_metrics = oracle("sklearn.metrics")


def _cases():
    rng = np.random.default_rng(7)
    out = []
    for n in (3, 5, 8, 23):
        x = rng.normal(size=n)
        out.append((x, 0.7 * x + rng.normal(size=n)))  # continuous
        xt = rng.integers(0, 3, size=n).astype(float)  # heavy ties
        yt = (xt + rng.integers(0, 2, size=n)).astype(float)
        out.append((xt, yt))
    return out


@pytest.mark.parametrize("x,y", _cases())
def test_correlations_match_scipy(x, y):
    assert stats.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0], abs=1e-12)
    assert stats.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-12)
    assert stats.kendall_tau_b(x, y) == pytest.approx(scipy_stats.kendalltau(x, y, variant="b")[0], abs=1e-12)


@pytest.mark.parametrize("x,y", _cases())
def test_r2_matches_linregress_and_sklearn(x, y):
    fit = scipy_stats.linregress(x, y)
    yhat = fit.intercept + fit.slope * x
    assert stats.r2_linear(x, y) == pytest.approx(sk_metrics.r2_score(y, yhat), abs=1e-10)
    assert stats.r2_linear(x, y) == pytest.approx(fit.rvalue ** 2, abs=1e-10)


def test_rankdata_matches_scipy_average():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(stats.rankdata(x), scipy_stats.rankdata(x, method="average"))


def test_degenerate_inputs_are_nan_not_errors():
    assert math.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(stats.r2_linear([1, 2, 3], [2, 2, 2]))
    assert stats.r2_linear([1, 1, 1], [1, 2, 4]) == 0.0
    assert math.isnan(stats.kendall_tau_b([1, 1], [1, 2]))
    assert math.isnan(stats.decision_accuracy([1.0], [2.0]))
    with pytest.raises(DataError):
        stats.pearson([1, 2, 3], [1, 2])


def test_batched_forms_equal_rowwise():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    for fn in (stats.pearson, stats.r2_linear, stats.decision_accuracy):
        np.testing.assert_allclose(fn(x, y), [fn(a, b) for a, b in zip(x, y)])


def test_decision_accuracy_brute_force_and_tie_rule():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, 10).astype(float), rng.integers(0, 4, 10).astype(float)
    pairs = list(itertools.combinations(range(10), 2))
    want = np.mean([np.sign(x[i] - x[j]) == np.sign(y[i] - y[j]) for i, j in pairs])
    assert stats.decision_accuracy(x, y) == pytest.approx(want)
    # Documented tie rule: both tied agrees, one-sided tie disagrees.
    assert stats.decision_accuracy([1.0, 1.0], [5.0, 5.0]) == 1.0
    assert stats.decision_accuracy([1.0, 1.0], [5.0, 6.0]) == 0.0
    assert stats.decision_accuracy([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == 0.0


def test_partial_correlation_matches_formula_and_precision_matrix():
    rng = np.random.default_rng(5)
    z = rng.normal(size=40)
    x = z + rng.normal(size=40)
    y = z + 0.5 * x + rng.normal(size=40)
    r = np.corrcoef([x, y, z])
    want = (r[0, 1] - r[0, 2] * r[1, 2]) / math.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert stats.partial_correlation(x, y, z) == pytest.approx(want, abs=1e-12)
    # Several controls: partial r = −P_xy / sqrt(P_xx P_yy) with P the inverse covariance.
    zs = np.column_stack([z, rng.normal(size=40)])
    prec = np.linalg.inv(np.cov(np.column_stack([x, y, zs]).T))
    want2 = -prec[0, 1] / math.sqrt(prec[0, 0] * prec[1, 1])
    assert stats.partial_correlation(x, y, zs) == pytest.approx(want2, abs=1e-10)


def test_permutation_p_matches_brute_force_enumeration():
    rng = np.random.default_rng(11)
    x, y, z = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    y = y + 0.8 * x
    res = stats.partial_corr_permutation(x, y, z)
    # Brute force: every reordering of x's residuals on z, Freedman–Lane style, one by one.
    a = np.column_stack([np.ones(6), z])
    fitted = a @ np.linalg.lstsq(a, x, rcond=None)[0]
    rx = x - fitted
    obs = stats.partial_correlation(x, y, z)
    null = [stats.partial_correlation(fitted + rx[list(p)], y, z) for p in itertools.permutations(range(6))]
    want = np.mean(np.array(null) >= obs - 1e-12)
    assert res.exact and res.n_permutations == 720
    assert res.statistic == pytest.approx(obs)
    assert res.p_value == pytest.approx(want)
    two = stats.partial_corr_permutation(x, y, z, alternative="two-sided")
    assert two.p_value == pytest.approx(np.mean(np.abs(null) >= abs(obs) - 1e-12))


def test_permutation_plain_pearson_matches_scipy_exact():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.7, 0.4])
    y = np.array([0.2, 0.4, 0.1, 1.0, 0.5, 0.6])
    ours = stats.partial_corr_permutation(x, y, None, alternative="greater")
    ref = scipy_stats.permutation_test((x,), lambda a: scipy_stats.pearsonr(a, y)[0], permutation_type="pairings",
                                       alternative="greater", n_resamples=np.inf)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_monte_carlo_permutation_needs_rng_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    with pytest.raises(DataError):
        stats.partial_corr_permutation(x, y, None)
    a = stats.partial_corr_permutation(x, y, None, rng=np.random.default_rng(4), n_resamples=2000)
    b = stats.partial_corr_permutation(x, y, None, rng=np.random.default_rng(4), n_resamples=2000)
    assert not a.exact and a.n_permutations == 2001 and a.p_value == b.p_value
    assert a.p_value < 0.05  # strongly correlated data: small p
    noise = stats.partial_corr_permutation(x, rng.normal(size=12), None, rng=np.random.default_rng(4))
    assert noise.p_value > a.p_value


def test_bootstrap_ci_brackets_estimate_and_widens_with_seed_noise():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=8)
    eps = rng.normal(size=(6, 8))
    widths = []
    for sd in (0.1, 0.5):
        seeds = truth + sd * eps  # (S, D): same noise pattern, scaled
        lo, hi = stats.bootstrap_seeds_ci(stats.r2_linear, seeds, truth[None, :], rng=np.random.default_rng(1))
        est = stats.r2_linear(seeds.mean(axis=0), truth)
        assert 0 <= lo <= est <= hi <= 1
        widths.append(hi - lo)
    assert widths[1] > 2 * widths[0]
    one = stats.bootstrap_seeds_ci(stats.r2_linear, truth[None, :] * 2, truth[None, :], rng=np.random.default_rng(1))
    assert one == pytest.approx((1.0, 1.0))  # no seed variation, exact line: degenerate CI at the value

"""α-subsets and datamodels (LASSO): scikit-learn as oracle, recovery of a sparse truth."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.attribute.datamodels import fit_datamodels, fit_lasso, lasso_objective
from proxyscale.attribute.subsets import check_masks, sample_subsets, split_subsets, subset_size
from proxyscale.errors import ConfigError


def test_subsets_have_exact_size_and_are_deterministic():
    a = sample_subsets(101, 0.5, 40, np.random.default_rng(0))
    b = sample_subsets(101, 0.5, 40, np.random.default_rng(0))
    assert a.dtype == bool and a.shape == (40, 101)
    assert np.all(a.sum(axis=1) == 50) and subset_size(101, 0.5) == 50
    np.testing.assert_array_equal(a, b)
    assert len({row.tobytes() for row in a}) == 40
    # uniform inclusion: every example is in about half the subsets
    freq = sample_subsets(50, 0.3, 4000, np.random.default_rng(1)).mean(axis=0)
    assert np.abs(freq - 0.3).max() < 0.04
    with pytest.raises(ConfigError, match="alpha"):
        sample_subsets(10, 1.5, 3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="masks"):
        check_masks(np.ones((3, 4)), n=5)
    fit, hold = split_subsets(10, 3, np.random.default_rng(0))
    assert len(hold) == 3 and sorted(np.r_[fit, hold].tolist()) == list(range(10))


@pytest.mark.parametrize("beta", [0.003, 0.03, 0.3])
def test_lasso_matches_sklearn_with_half_alpha(beta):
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(2)
    X = sample_subsets(80, 0.5, 60, rng).astype(float)
    truth = rng.normal(size=(80, 3)) * (rng.random((80, 3)) < 0.15)
    Y = X @ truth + 0.3 * rng.normal(size=(60, 3)) + 2.0
    ours = fit_lasso(X, Y, beta, tol=1e-12, max_iter=200000)
    assert ours.gap <= 1e-12
    for t in range(3):
        # sklearn minimises (1/(2M))‖y − Xw − b‖² + a‖w‖₁ = half our objective when a = β/2
        sk = Lasso(alpha=beta / 2, tol=1e-12, max_iter=500000).fit(X, Y[:, t])
        np.testing.assert_allclose(ours.weights[:, t], sk.coef_, atol=2e-6)
        assert ours.bias[t] == pytest.approx(sk.intercept_, abs=2e-6)
    # and no other point does better on our objective (perturbation check)
    base = lasso_objective(X, Y, ours.weights, ours.bias, beta)
    for _ in range(5):
        W = ours.weights + 1e-3 * rng.normal(size=ours.weights.shape)
        assert np.all(lasso_objective(X, Y, W, ours.bias, beta) >= base - 1e-12)


def test_single_target_and_large_beta_give_zero_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 10))
    y = X[:, 0] * 3 + 1
    fit = fit_lasso(X, y, beta=1e6)
    assert fit.weights.shape == (10,) and np.all(fit.weights == 0)
    assert fit.bias == pytest.approx(y.mean())
    with pytest.raises(ConfigError, match="beta"):
        fit_lasso(X, y, beta=-1)


def test_datamodels_recover_sparse_influences():
    # Algorithm 1 on a world where outputs are exactly linear in the subset mask plus noise
    rng = np.random.default_rng(5)
    n, m = 200, 400
    w_true = np.zeros((n, 2))
    w_true[rng.choice(n, 10, replace=False), 0] = rng.normal(0, 1, 10)
    w_true[rng.choice(n, 10, replace=False), 1] = rng.normal(0, 1, 10)
    masks = sample_subsets(n, 0.5, m, rng)
    outputs = masks @ w_true + 0.05 * rng.normal(size=(m, 2))
    fit = fit_datamodels(masks, outputs, beta=0.002)
    assert fit.weights.shape == (n, 2)
    for t in range(2):
        big = set(np.argsort(-np.abs(fit.weights[:, t]))[:10])
        assert big == set(np.flatnonzero(w_true[:, t]))
    np.testing.assert_allclose(fit.weights, w_true, atol=0.05)

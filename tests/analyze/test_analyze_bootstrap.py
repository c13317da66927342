"""The example × seed bootstrap: coverage on synthetic studies with known truth, and its parts."""
import numpy as np
import pandas as pd
import pytest

from proxyscale.analyze import analyze_study, stats
from proxyscale.analyze.bootstrap import basic_ci, hierarchical_replicates, percentile_ci, robust_ci, run_weights
from proxyscale.errors import DataError

D, E, S = 8, 30, 2
DISTS = [f"d{d}" for d in range(D)]


def simulate(rng, mu, *, seed_sd=0.15, ex_sd=0.4):
    """Per-example losses of 2 seeds per (model, distribution) around known cell means ``mu``.

    loss = μ[m, d] + seed effect (per run) + example effect (shared by every model and
    distribution) + example × distribution effect (shared by the models) + noise. The truth
    is μ: the mean over the population of examples and seeds.
    """
    ex = rng.normal(0, 0.5, size=E)[:, None] + rng.normal(0, ex_sd, size=(E, D))  # (E, D)
    frames = []
    for m, row in mu.items():
        for s in range(S):
            loss = row + rng.normal(0, seed_sd, size=D) + ex + rng.normal(0, 0.2, size=(E, D))  # (E, D)
            frames.append(pd.DataFrame({"test_set": "t", "example_id": np.repeat([f"e{e}" for e in range(E)], D),
                                        "model": m, "distribution": np.tile(DISTS, E), "seed": s,
                                        "loss": loss.ravel(), "n_tokens": 3}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("spread, seed_sd", [(0.5, 0.15), (0.2, 0.15), (3.0, 0.3)])  # R² ≈ .8, ≈ 1, ≈ 0
def test_coverage_of_nominal_90_percent_intervals(spread, seed_sd):
    """Over seeded repeated studies the 90% intervals cover the true R² and the true cell mean
    at least 85% of the time; the seed-only bootstrap with 2 seeds does not."""
    truth_rng = np.random.default_rng(int(spread * 10))
    q = truth_rng.normal(size=D)
    mu = {"R": q, "P": q + spread * truth_rng.normal(size=D)}
    true_r2 = stats.r2_linear(mu["P"], mu["R"])
    n_sim, hit_r2, hit_mean, hit_seed_only = 100, 0, 0, 0
    for i in range(n_sim):
        rng = np.random.default_rng(1000 + i)
        res = simulate(rng, mu, seed_sd=seed_sd)
        reps = hierarchical_replicates(res, loss="example_mean", rng=rng, n_boot=300)
        xb, yb = reps.take("P", DISTS), reps.take("R", DISTS)
        runs = res.groupby(["model", "seed", "distribution"])["loss"].mean()
        xs, ys = runs["P"].unstack().to_numpy(), runs["R"].unstack().to_numpy()  # (S, D)
        est = stats.r2_linear(xs.mean(0), ys.mean(0))
        lo, hi = robust_ci(stats.r2_linear(xb, yb), est, 0.90)
        hit_r2 += lo <= true_r2 <= hi
        lo, hi = percentile_ci(xb[:, 0], 0.90)
        hit_mean += lo <= mu["P"][0] <= hi
        lo, hi = stats.bootstrap_seeds_ci(stats.r2_linear, xs, ys, rng=rng, n_boot=300, level=0.90)
        hit_seed_only += lo <= true_r2 <= hi
    assert hit_r2 / n_sim >= 0.85
    assert hit_mean / n_sim >= 0.85
    assert hit_seed_only / n_sim < hit_r2 / n_sim


def test_replicates_centre_on_the_cell_means_and_carry_seed_noise():
    rng = np.random.default_rng(5)
    mu = {"R": np.linspace(0, 1, D), "P": np.linspace(0, 2, D)}
    res = simulate(rng, mu, seed_sd=0.5)
    reps = hierarchical_replicates(res, loss="example_mean", rng=np.random.default_rng(0), n_boot=2000)
    cell = res.groupby(["model", "distribution"])["loss"].mean()
    np.testing.assert_allclose(reps.take("P", DISTS).mean(0), cell["P"][DISTS], atol=0.05)
    assert reps.seed_df == {"P": D * (S - 1), "R": D * (S - 1)}
    # Without the seed term the spread would be the example part only: seed noise widens it.
    same_seeds = res.assign(loss=res["loss"] - res.groupby(["model", "distribution", "seed"])["loss"].transform("mean")
                            + res.groupby(["model", "distribution"])["loss"].transform("mean"))
    calm = hierarchical_replicates(same_seeds, loss="example_mean", rng=np.random.default_rng(0), n_boot=2000)
    assert reps.take("P", DISTS).std(0).mean() > 1.5 * calm.take("P", DISTS).std(0).mean()
    one = res[res["seed"] == 0]
    assert hierarchical_replicates(one, loss="example_mean", rng=rng, n_boot=50).seed_df["P"] == 0


def test_a_run_missing_examples_spoils_only_its_own_cell():
    res = pd.DataFrame({"test_set": "t", "example_id": ["a", "b", "a"], "model": ["R", "R", "P"], "distribution": "d",
                        "seed": 0, "loss": [1.0, 3.0, 5.0], "n_tokens": 1})
    reps = hierarchical_replicates(res, loss="example_mean", rng=np.random.default_rng(0), n_boot=64)
    p, r = reps.take("P", ["d"])[:, 0], reps.take("R", ["d"])[:, 0]
    assert np.isnan(p).any() and not np.isnan(r).any()  # resamples without example 'a' leave P undefined
    assert set(np.round(r, 6)) <= {1.0, 2.0, 3.0} and (p[np.isfinite(p)] == 5.0).all()


def test_token_mean_weighs_examples_by_their_tokens():
    res = pd.DataFrame({"test_set": "t", "example_id": ["a", "b"], "model": "R", "distribution": "d0", "seed": 0,
                        "loss": [1.0, 4.0], "n_tokens": [3, 1]})
    for loss, want in (("example_mean", 2.5), ("token_mean", (3 * 1.0 + 4.0) / 4)):
        num, den = run_weights(res, loss)
        assert num.sum() / den.sum() == pytest.approx(want)
    with pytest.raises(DataError, match="token_mean"):
        run_weights(res.drop(columns="n_tokens"), "token_mean")
    with pytest.raises(DataError, match="not one of"):
        run_weights(res, "median")


def test_loss_definition_changes_the_analysis():
    """Long examples that disagree with short ones: the token mean follows the long ones."""
    rng = np.random.default_rng(6)
    q, r = rng.normal(size=D), rng.normal(size=D)  # what short and long examples say
    rows = []
    for m in ("R", "P"):
        for d in range(D):
            rows += [("t", "short", DISTS[d], m, 0, 3 + q[d], 1), ("t", "long", DISTS[d], m, 0, 3 + r[d], 50)]
    res = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss", "n_tokens"])
    models = pd.DataFrame([{"model": m, "kind": "neural", "params": p, "train_tokens": 0, "flops": float(p),
                            "is_reference": m == "R"} for m, p in (("R", 10), ("P", 1))])
    tabs = (pd.DataFrame({"distribution": DISTS, "sources": [["web"]] * D}),
            pd.DataFrame([{"test_set": "t", "kind": "lm", "source": None}]))
    ex = analyze_study(res, models, *tabs, seed=0, n_boot=50)
    tok = analyze_study(res, models, *tabs, seed=0, n_boot=50, loss="token_mean")
    want = (q + 50 * r) / 51 + 3
    np.testing.assert_allclose(tok["points"].sort_values("distribution")["x"], want)
    np.testing.assert_allclose(ex["points"].sort_values("distribution")["x"], (q + r) / 2 + 3)
    assert tok["settings"]["loss"].iloc[0] == "token_mean" and ex["settings"]["loss"].iloc[0] == "example_mean"


def test_basic_interval_reflects_and_clips():
    vals = np.linspace(0.5, 0.7, 101)
    lo, hi = basic_ci(vals, 0.8, 0.9)
    assert lo == pytest.approx(2 * 0.8 - np.quantile(vals, 0.95)) and hi == 1.0  # 1.09 clipped to R²'s range
    lo, hi = basic_ci(vals, 0.6, 0.9)
    assert lo == pytest.approx(1.2 - np.quantile(vals, 0.95)) and hi == pytest.approx(1.2 - np.quantile(vals, 0.05))
    assert np.isnan(basic_ci(np.full(10, 0.3), 0.3, 0.9)[0])  # nothing varied: no interval
    assert robust_ci(vals, 0.8, 0.9) == (pytest.approx(np.quantile(vals, 0.05)), 1.0)  # the union of both
    assert robust_ci(vals, 0.6, 0.9) == (pytest.approx(np.quantile(vals, 0.05)), pytest.approx(np.quantile(vals, 0.95)))

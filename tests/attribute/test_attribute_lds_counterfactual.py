"""Counterfactual removal sets, margins after removal, and the small-vs-large R²."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.attribute.counterfactual import (
    RemovalConfig,
    cosine_similarity,
    r_squared,
    removal_margins,
    removal_masks,
)
from proxyscale.attribute.retrain import RetrainConfig
from proxyscale.data.vision import load_digits_data
from proxyscale.errors import ConfigError
from proxyscale.models.mlp import MLPConfig
from proxyscale.train.vision import VisionModelSpec, VisionTrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_removal_masks_remove_what_they_say():
    rng = np.random.default_rng(0)
    n = 200
    scores = rng.normal(size=n)
    feats = rng.normal(size=(n, 5))
    target_feat = feats[3] + 0.01
    labels = rng.integers(0, 4, n)
    cfg = RemovalConfig(fractions=(0.05, 0.1), class_fractions=(0.5,), n_random=2)
    names, keep = removal_masks(scores, feats, target_feat, labels, 2, rng, cfg)
    assert keep.shape == (len(names), n) and keep.dtype == bool
    assert len(names) == 2 * (2 + 4) + 1
    removed = {nm: np.flatnonzero(~k) for nm, k in zip(names, keep)}
    assert len(removed["top-0.1"]) == 20 and len(removed["random-0.05-1"]) == 10
    assert set(removed["top-0.1"]) == set(np.argsort(scores)[-20:])
    assert set(removed["bottom-0.05"]) == set(np.argsort(scores)[:10])
    assert 3 in removed["similar-0.05"] and 3 not in removed["dissimilar-0.1"]
    sim = cosine_similarity(feats, target_feat)
    assert sim[removed["similar-0.1"]].min() >= sim[keep[names.index("similar-0.1")]].max()
    cls = removed["class-0.5"]
    assert np.all(labels[cls] == 2) and len(cls) == round(0.5 * (labels == 2).sum())
    assert not np.array_equal(removed["random-0.1-0"], removed["random-0.1-1"])
    with pytest.raises(ConfigError, match="fractions"):
        RemovalConfig(fractions=(0.0,))


def test_r_squared_matches_scipy():
    from scipy.stats import linregress

    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = 2 * x + rng.normal(size=30)
    assert r_squared(x, y) == pytest.approx(linregress(x, y).rvalue ** 2)
    assert r_squared(x, 3 * x - 1) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        r_squared(x[:2], y[:2])


def test_removing_the_targets_own_class_lowers_its_margin_in_small_and_large_models():
    """Physics: removing most of the target's class hurts its margin far more than removing
    the same number of random examples, for a narrow and a wide MLP alike."""
    d = load_digits_data(np.random.default_rng(0), n_train=300).flat()
    train = VisionTrainConfig(epochs=15, batch_size=50)
    rng = np.random.default_rng(3)
    t = 0
    n_same = int((d.y_train == d.y_test[t]).sum())
    names, keep = removal_masks(rng.normal(size=300), d.x_train, d.x_test[t], d.y_train, int(d.y_test[t]), rng,
                                RemovalConfig(fractions=(round(0.75 * n_same) / 300,), class_fractions=(0.75,),
                                              n_random=1))
    chosen = [names.index(f"random-{round(0.75 * n_same) / 300:g}-0"), names.index("class-0.75")]
    margins = {}
    for label, width in (("small", 0.25), ("large", 2.0)):
        cfg = RetrainConfig(model=VisionModelSpec(kind="mlp", mlp=MLPConfig(width_mult=width)), train=train,
                            n_seeds=2)
        margins[label] = removal_margins(cfg, d.x_train, d.y_train, keep[chosen], d.x_test[t], int(d.y_test[t]))
    for label, (random_removed, class_removed) in margins.items():
        assert class_removed < random_removed - 1.0, (label, margins)

"""Out-of-core TRAK: memmapped features, resuming a killed featurisation, block-wise scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from proxyscale.attribute import TRAK
from proxyscale.attribute import kernel as kernel_mod
from proxyscale.errors import StoreError


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 3, (50,), generator=g)
    return (x, y), (x[:6] * 0.5, y[:6])


class Killed(Exception):
    pass


class DyingLoader:
    """A DataLoader stand-in that dies after ``limit`` batches and counts what it yields."""

    def __init__(self, x, y, bs, limit=None):
        self.dataset, self.x, self.y, self.bs, self.limit = x, x, y, bs, limit

    def __iter__(self):
        for i, r in enumerate(range(0, len(self.x), self.bs)):
            if self.limit is not None and i == self.limit:
                raise Killed
            yield self.x[r:r + self.bs], self.y[r:r + self.bs]


def test_killed_featurisation_resumes_where_it_stopped(tmp_path, data, monkeypatch):
    (x, y), targets = data
    state = mlp().state_dict()
    full = TRAK(mlp(), k=10, batch_size=8)
    expected = np.array(full.featurize(state, (x, y)))

    first = TRAK(mlp(), k=10, batch_size=8, store_dir=tmp_path)
    with pytest.raises(Killed):
        first.featurize(state, DyingLoader(x, y, 8, limit=3))
    progress = json.loads((tmp_path / "model-0" / "progress.json").read_text())
    assert progress["done"] == [[0, 24]] and not progress["complete"]

    second = TRAK(mlp(), k=10, batch_size=8, store_dir=tmp_path)
    calls = []
    orig = second.batch_features
    monkeypatch.setattr(second, "batch_features", lambda *a: calls.append(1) or orig(*a))
    phi = second.featurize(state, DyingLoader(x, y, 8))
    assert len(calls) == 4  # 7 batches, 3 already done
    assert isinstance(phi, np.memmap) and phi.shape == (50, 10)
    np.testing.assert_allclose(np.array(phi), expected, rtol=1e-6, atol=1e-7)

    third = TRAK(mlp(), k=10, batch_size=8, store_dir=tmp_path)
    calls.clear()
    monkeypatch.setattr(third, "batch_features", lambda *a: calls.append(1) or orig(*a))
    third.featurize(state, (x, y))
    assert calls == []  # complete features are loaded, not recomputed
    np.testing.assert_allclose(third.score(targets), full.score(targets), rtol=1e-5, atol=1e-7)


def test_store_refuses_features_made_with_other_settings(tmp_path, data):
    train, _ = data
    TRAK(mlp(), k=10, store_dir=tmp_path).featurize(mlp().state_dict(), train)
    with pytest.raises(StoreError, match="other settings"):
        TRAK(mlp(), k=10, seed=1, store_dir=tmp_path).featurize(mlp().state_dict(), train)


def test_scores_written_blockwise_to_a_memmap(tmp_path, data, monkeypatch):
    train, targets = data
    trak = TRAK(mlp(), k=10, store_dir=tmp_path / "trak")
    trak.featurize(mlp().state_dict(), train, model_id=0)
    trak.featurize({k: v * 1.1 for k, v in mlp().state_dict().items()}, train, model_id=1)
    in_memory = trak.score(targets)
    monkeypatch.setattr(kernel_mod, "ROW_BLOCK", 7)
    seen = []
    orig = kernel_mod.ensemble_scores

    def tiny_blocks(solvers, phis, out, q=None):
        seen.append(type(out))
        return orig(solvers, phis, out, q, row_block=7, target_block=4)

    monkeypatch.setattr("proxyscale.attribute.trak.ensemble_scores", tiny_blocks)
    path = tmp_path / "scores.npy"
    on_disk = trak.score(targets, out=path)
    assert seen == [np.memmap]
    np.testing.assert_allclose(np.load(path, allow_pickle=False), in_memory, rtol=1e-6, atol=1e-8)
    assert np.array(on_disk).shape == (50, 6)
    assert list((tmp_path / "trak" / "model-1").glob("kernel-*.npy"))  # the factor is cached on disk

"""Projectors: seeded, streamed over row blocks, cached within a budget, norm-preserving."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxyscale.attribute.projectors import PROJECTORS, make_projector
from proxyscale.errors import ConfigError
from proxyscale.seeding import torch_gen


@pytest.mark.parametrize("kind", sorted(PROJECTORS))
def test_streamed_projection_equals_the_materialised_matrix(kind):
    g = torch.randn(5, 103)
    proj = make_projector(kind, 103, 16, seed=3, model_id=1, block_rows=20)
    assert len(proj.bounds) == 6  # 103 rows in blocks of 20
    full = proj.matrix()  # (p, k)
    torch.testing.assert_close(proj.project(g), g @ full, rtol=1e-5, atol=1e-5)
    again = make_projector(kind, 103, 16, seed=3, model_id=1, block_rows=20, cache_bytes=0)
    torch.testing.assert_close(again.matrix(), full)  # regenerated blocks are identical
    other = make_projector(kind, 103, 16, seed=3, model_id=2, block_rows=20)
    assert not torch.allclose(other.matrix(), full)  # each model gets its own matrix


def test_gaussian_blocks_come_from_hashed_seeds():
    proj = make_projector("gaussian", 30, 8, seed=11, model_id="m0", block_rows=10)
    # blocks are drawn as (k, rows) and used transposed
    parts = [torch.randn(8, 10, generator=torch_gen(11, "projector", "gaussian", "m0", i)).T / math.sqrt(8)
             for i in range(3)]
    torch.testing.assert_close(proj.matrix(), torch.cat(parts))


def test_entry_distributions():
    rad = make_projector("rademacher", 4000, 64, seed=0).matrix().numpy()
    assert set(np.unique(rad * 8).round(6)) == {-1.0, 1.0}
    assert abs((rad > 0).mean() - 0.5) < 0.01
    gau = make_projector("gaussian", 4000, 64, seed=0).matrix().numpy()
    assert abs(gau.std() * 8 - 1) < 0.01 and abs(gau.mean()) < 0.002
    sp = make_projector("sparse", 4000, 64, seed=0, nnz=4).matrix().numpy()
    assert ((sp != 0).sum(axis=1) == 4).all()  # exactly nnz slots per coordinate, one per segment
    assert set(np.unique(np.abs(sp[sp != 0])).round(6)) == {0.5}


@pytest.mark.parametrize("kind", sorted(PROJECTORS))
def test_projection_preserves_norms_and_inner_products(kind):
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(20, 3000, generator=gen)
    phi = make_projector(kind, 3000, 1024, seed=1).project(g)
    ratio = (phi.norm(dim=1) / g.norm(dim=1)).numpy()
    assert np.all(np.abs(ratio - 1) < 0.15)  # JL at k=1024: a few percent
    cos_g = torch.nn.functional.cosine_similarity(g[:10], g[10:])
    cos_p = torch.nn.functional.cosine_similarity(phi[:10], phi[10:])
    assert (cos_p - cos_g).abs().max() < 0.12


def test_cache_budget_controls_regeneration():
    g = torch.randn(4, 100)
    cached = make_projector("rademacher", 100, 32, block_rows=25)
    for _ in range(3):
        cached.project(g)
    assert cached.generated == 4  # 4 blocks, generated once
    half = make_projector("rademacher", 100, 32, block_rows=25, cache_bytes=2 * 25 * 32 * 4)
    for _ in range(3):
        half.project(g)
    assert half.generated == 4 + 2 * 2  # two blocks fit, the other two regenerate each batch


def test_bad_projector_settings():
    with pytest.raises(ConfigError, match="did you mean 'gaussian'"):
        make_projector("gausian", 10, 4)
    with pytest.raises(ConfigError, match="divisible"):
        make_projector("sparse", 10, 10, nnz=4)
    with pytest.raises(ConfigError, match=r"\(B, 10\)"):
        make_projector("gaussian", 10, 4).project(torch.zeros(2, 11))


@pytest.mark.parametrize("kind", sorted(PROJECTORS))
def test_projection_follows_the_gradients_device(kind):
    """Gradients on another device (``meta`` stands in for a GPU here) are projected there: the
    output and the cached blocks live on that device, each block generated once on the CPU
    (the same matrix on every device) and moved; CPU gradients keep the CPU result."""
    g = torch.randn(4, 50)
    cpu = make_projector(kind, 50, 16, seed=3, block_rows=20)
    assert torch.equal(cpu.project(g), make_projector(kind, 50, 16, seed=3, block_rows=20, cache_bytes=0).project(g))
    assert all(t.device.type == "cpu" for b in cpu._cache.values() for t in (b if isinstance(b, tuple) else (b,)))
    proj = make_projector(kind, 50, 16, seed=3, block_rows=20)
    for _ in range(2):
        out = proj.project(g.to("meta"))
        assert out.device.type == "meta" and out.shape == (4, 16) and out.dtype == torch.float32
    assert proj.generated == 3 and len(proj._cache) == 3  # 50 rows in blocks of 20, each made once
    assert all(t.device.type == "meta" for b in proj._cache.values() for t in (b if isinstance(b, tuple) else (b,)))

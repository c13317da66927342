"""TRAK equals a brute-force computation on tiny models (the physics test), and its forms agree."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxyscale.attribute import TRAK, grad_dot_scores, trak_scores
from proxyscale.errors import ConfigError, ProxyscaleError
from proxyscale.seeding import torch_gen


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 4))


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int = 11, d: int = 6) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.mix = torch.nn.Linear(d, d)
        self.out = torch.nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, V)
        h = self.emb(tokens)
        h = h + torch.tanh(self.mix(h.cumsum(1)))  # a little context so positions differ
        return self.out(h)


@pytest.fixture(scope="module")
def cls_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    return x, y, x[:5] + 0.1, y[:5]


def brute_margin(model, x, y) -> torch.Tensor:
    logits = model(x.unsqueeze(0))[0]
    others = torch.cat([logits[:y], logits[y + 1:]])
    return logits[y] - torch.log(torch.exp(others).sum())


def brute_lm(model, tokens, mask) -> torch.Tensor:
    p = torch.softmax(model(tokens.unsqueeze(0))[0, :-1].double(), -1)  # (L-1, V)
    pt = p[torch.arange(len(tokens) - 1), tokens[1:]]
    lo = torch.log(pt / (1 - pt))
    return (lo * mask).sum() / mask.sum()


def brute_features(model, state, data, fn, proj) -> np.ndarray:
    """Per-example autograd loop, then the explicit projection matrix, in float64."""
    model.load_state_dict(state)
    params = list(model.parameters())
    rows = []
    for i in range(len(data[0])):
        grads = torch.autograd.grad(fn(model, data[0][i], data[1][i]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).double().numpy())
    return np.stack(rows) @ proj


def gaussian_matrix(p: int, k: int, seed: int, model_id: int) -> np.ndarray:
    """The Gaussian projector's matrix, generated independently (one block when p*k is small)."""
    block = torch.randn(k, p, generator=torch_gen(seed, "projector", "gaussian", model_id, 0))  # drawn (k, rows)
    return (block.T / math.sqrt(k)).double().numpy()


def brute_scores(model, states, train, targets, fn, k, ratio, seed=0):
    p = sum(v.numel() for v in model.parameters())
    total = 0.0
    for m, state in enumerate(states):
        proj = gaussian_matrix(p, k, seed, m)
        phi = brute_features(model, state, train, fn, proj)
        phi_t = brute_features(model, state, targets, fn, proj)
        lam = ratio * np.mean(np.sum(phi ** 2, axis=1))
        total = total + phi @ np.linalg.inv(phi.T @ phi + lam * np.eye(k)) @ phi_t.T
    return total / len(states)


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("ratio", [0.5, 0.0])  # λ = 0 too: stable here (n = 40 ≫ k = 16)
def test_classification_scores_equal_brute_force(cls_data, ratio):
    x, y, xt, yt = cls_data
    model = mlp(0)
    states = [mlp(s).state_dict() for s in (1, 2)]
    ours = trak_scores(model, states, (x, y), (xt, yt), k=16, projector="gaussian", lambda_ratio=ratio,
                       batch_size=7)
    ref = brute_scores(model, states, (x, y), (xt, yt), brute_margin, k=16, ratio=ratio)
    assert ours.shape == (40, 5)
    assert rel_err(ours, ref) < 1e-5


def test_lm_scores_equal_brute_force():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 11, (12, 7), generator=g)
    mask = torch.zeros(12, 6)
    for i in range(12):
        mask[i, i % 4:] = 1.0  # varying prediction spans, as in padded_batch
    model = TinyLM()
    states = [TinyLM().state_dict(), TinyLM().state_dict()]
    ours = trak_scores(model, states, (tokens, mask), (tokens[:3], mask[:3]), task="lm", k=8,
                       projector="gaussian", batch_size=5)
    ref = brute_scores(model, states, (tokens, mask), (tokens[:3], mask[:3]), brute_lm, k=8, ratio=1.0)
    assert rel_err(ours, ref) < 1e-5


def test_without_q_the_scores_are_the_same_and_q_is_refused(cls_data):
    x, y, xt, yt = cls_data
    model = mlp(0)
    states = [mlp(s).state_dict() for s in (1, 2)]
    with_q = trak_scores(model, states, (x, y), (xt, yt), k=16)
    without = trak_scores(model, states, (x, y), (xt, yt), k=16, keep_q=False)
    np.testing.assert_array_equal(with_q, without)
    t = TRAK(model, k=16, keep_q=False)
    t.featurize(states[0], (x, y))
    with pytest.raises(ConfigError, match="keep_q=False"):
        t.score_candidates((xt, yt), (1.0,), (False, True))
    with pytest.raises(ConfigError, match="use_q / compat need"):
        TRAK(model, k=16, use_q=True, keep_q=False)


def test_nxn_form_equals_kxk_form(cls_data):
    x, y, xt, yt = cls_data
    model, states = mlp(0), [mlp(4).state_dict()]
    kw = dict(k=64, lambda_ratio=0.3)  # k > n: the n×n form is the natural one
    a = trak_scores(model, states, (x, y), (xt, yt), form="kxk", **kw)
    b = trak_scores(model, states, (x, y), (xt, yt), form="nxn", **kw)
    assert rel_err(b, a) < 1e-6
    assert np.abs(a).max() > 0


def featurized(model, states, data, **kw):
    """A TRAK ensemble featurised on `data` with model i's projection seeded by id i."""
    trak = TRAK(model, **kw)
    for i, s in enumerate(states):
        trak.featurize(s, data, model_id=i)
    return trak


def test_ensemble_is_mean_of_single_models_and_q_weighting(cls_data):
    x, y, xt, yt = cls_data
    model, states = mlp(0), [mlp(5).state_dict(), mlp(6).state_dict(), mlp(7).state_dict()]
    ensemble = featurized(model, states, (x, y), k=12, seed=9).score((xt, yt))
    singles = []
    for i, s in enumerate(states):
        one = TRAK(model, k=12, seed=9)
        one.featurize(s, (x, y), model_id=i)  # same id -> same projection as inside the ensemble
        singles.append(one.score((xt, yt)))
    assert rel_err(ensemble, np.mean(singles, axis=0)) < 1e-6
    assert rel_err(singles[0], singles[1]) > 1e-2  # the models really differ

    qtrak = featurized(model, states, (x, y), k=12, seed=9, use_q=True)
    q = qtrak.mean_q()
    probs = [torch.softmax(torch.func.functional_call(model, s, (x,)), -1)[torch.arange(40), y] for s in states]
    assert np.allclose(q, np.mean([1 - p.detach().numpy() for p in probs], axis=0), atol=1e-6)
    assert rel_err(qtrak.score((xt, yt)), ensemble * q[:, None]) < 1e-6


def test_score_candidates_equal_separate_runs(cls_data):
    # every (λ, Q, M) candidate equals a TRAK run configured that way on the first M models
    x, y, xt, yt = cls_data
    model, states = mlp(0), [mlp(5).state_dict(), mlp(6).state_dict(), mlp(7).state_dict()]
    trak = featurized(model, states, (x, y), k=12, seed=9)
    cands = trak.score_candidates((xt, yt), [0.1, 2.0], (False, True), n_models=[1, 3])
    assert [(c["lambda_ratio"], c["use_q"], c["n_models"]) for c, _ in cands] == [
        (r, q, m) for r in (0.1, 2.0) for q in (False, True) for m in (1, 3)]
    for c, scores in cands:
        ref = featurized(model, states[:c["n_models"]], (x, y), k=12, seed=9,
                         lambda_ratio=c["lambda_ratio"], use_q=c["use_q"])
        assert rel_err(scores, ref.score((xt, yt))) < 1e-6
    assert rel_err(cands[0][1], cands[4][1]) > 1e-3  # λ matters
    with pytest.raises(ConfigError, match="n_models"):
        trak.score_candidates((xt, yt), [1.0], n_models=[4])
    with pytest.raises(ConfigError, match="ratios"):
        trak.score_candidates((xt, yt), [])


def test_grad_dot_baselines(cls_data):
    x, y, xt, yt = cls_data
    model, states = mlp(0), [mlp(8).state_dict()]
    exact = grad_dot_scores(model, states, (x, y), (xt, yt))
    p = sum(v.numel() for v in model.parameters())
    g = brute_features(model, states[0], (x, y), brute_margin, np.eye(p))
    gt = brute_features(model, states[0], (xt, yt), brute_margin, np.eye(p))
    assert rel_err(exact, g @ gt.T) < 1e-5
    proj = grad_dot_scores(model, states, (x, y), (xt, yt), projected=True, k=4096)
    assert rel_err(proj, g @ gt.T) < 0.15  # JL: inner products roughly preserved at large k


def test_unregularised_kernel_that_is_singular_fails_helpfully(cls_data):
    x, y, xt, yt = cls_data
    with pytest.raises(ProxyscaleError, match="lambda_ratio"):
        trak_scores(mlp(0), [mlp(1).state_dict()], (x, y), (xt, yt), k=64, lambda_ratio=0.0, form="kxk")


def test_bad_settings_are_config_errors(cls_data):
    with pytest.raises(ConfigError, match="did you mean"):
        TRAK(mlp(0), task="clasification")
    with pytest.raises(ConfigError, match="unknown key"):
        TRAK(mlp(0), k=8, lamda_ratio=1.0)
    with pytest.raises(ConfigError, match="matches no parameter"):
        TRAK(mlp(0), param_filter=["3"])
    with pytest.raises(ConfigError, match="does not fit"):
        TRAK(mlp(0), k=8).featurize({"0.weight": torch.zeros(10, 6)}, cls_data[:2])


@pytest.mark.parametrize("compat", [False, True])
def test_gathered_batches_give_the_same_features(cls_data, monkeypatch, compat):
    # Force the gathering path (normally only for p×k matrices above 64 MB): 3 batches of 4 per matmul.
    from proxyscale.attribute import trak as trak_mod

    x, y, _, _ = cls_data
    state = mlp(0).state_dict()
    plain = TRAK(mlp(0), k=8, batch_size=4, compat=compat).featurize(state, (x, y))
    t = TRAK(mlp(0), k=8, batch_size=4, compat=compat)
    monkeypatch.setattr(trak_mod, "GROUP_ABOVE_BYTES", 0)
    monkeypatch.setattr(trak_mod, "PROJECT_BYTES", 12 * 4 * t.p)
    rows: list[int] = []
    proj = t.projector(0)
    real = proj.project
    monkeypatch.setattr(proj, "project", lambda g: rows.append(g.shape[0]) or real(g))
    gathered = t.featurize(state, (x, y))
    assert rows == [12, 12, 12, 4]  # 40 examples: three gathered groups, then the rest
    np.testing.assert_allclose(gathered, plain, rtol=1e-5, atol=1e-6)

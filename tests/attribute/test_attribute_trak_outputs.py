"""Output functions, Q terms and per-example gradients (all parameters or a subset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from proxyscale.attribute.grads import PerExampleGrads, checkpoint_tensors, select_params
from proxyscale.attribute.outputs import ClassificationMargin, LMLogOdds, get_output
from proxyscale.data.testset import Example, padded_batch
from proxyscale.errors import DataError


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_classification_margin_is_log_odds_and_stable():
    logits = torch.tensor([[2.0, -1.0, 0.5], [30.0, -20.0, -25.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 0, 2])
    f = ClassificationMargin().outputs(Identity(), {}, (logits, y))
    p = torch.softmax(logits.double(), -1)[torch.arange(3), y]
    np.testing.assert_allclose(f[[0, 2]].numpy(), torch.log(p / (1 - p))[[0, 2]].numpy(), rtol=1e-6)
    # a saturated softmax (p = 1 in float32) still gives the exact margin, not inf
    assert torch.isfinite(f[1]) and abs(f[1].item() - (30.0 - np.logaddexp(-20.0, -25.0))) < 1e-4
    q = ClassificationMargin().q_weights(Identity(), {}, (logits, y))
    np.testing.assert_allclose(q[[0, 2]].numpy(), (1 - p)[[0, 2]].numpy(), rtol=1e-5)
    exact = 1 / (1 + np.exp(30.0 - np.logaddexp(-20.0, -25.0)))  # ≈ 2e-22: 1 − p, not rounded to zero
    assert abs(q[1].item() / exact - 1) < 1e-4


def test_lm_log_odds_uses_only_prediction_positions():
    ex = [Example("a", ((1, 2, 3, 4),), (2,)), Example("b", ((4, 3, 2, 1, 0, 2),), (1,))]
    tokens, mask, _, _ = padded_batch(ex)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(5, 5, generator=g)

    class Bigram(torch.nn.Module):
        def forward(self, t):  # (B, L) -> (B, L, V)
            return table[t]

    batch = (torch.as_tensor(tokens), torch.as_tensor(mask))
    f = LMLogOdds().outputs(Bigram(), {}, batch)
    q = LMLogOdds().q_weights(Bigram(), {}, batch)
    for row, (c, s) in enumerate([((1, 2, 3, 4), 2), ((4, 3, 2, 1, 0, 2), 1)]):
        p = [torch.softmax(table[c[t - 1]].double(), -1)[c[t]].item() for t in range(s, len(c))]
        assert abs(f[row].item() - np.mean([np.log(pi / (1 - pi)) for pi in p])) < 1e-5
        assert abs(q[row].item() - np.mean([1 - pi for pi in p])) < 1e-6
    with pytest.raises(DataError, match="no prediction positions"):
        LMLogOdds().check_batch((batch[0], torch.zeros_like(batch[1])))


def test_lm_log_odds_picks_the_vmap_safe_attention_for_the_gpt():
    """Per-example gradients of this package's GPT never take the fused kernel's slow fallback
    (it has no vmap batching rule): without a warning, and equal to the explicit setting."""
    import warnings

    from proxyscale.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_layers=1, n_heads=2))
    tensors = checkpoint_tensors(model, model.state_dict())
    tokens = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(1))
    batch = (tokens, torch.ones(4, 7))
    names = select_params(model, None)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="There is a performance drop")  # the fallback warns
        auto = PerExampleGrads(model, LMLogOdds(), names)(tensors, batch)
    explicit = PerExampleGrads(model, LMLogOdds(fused_attention=False), names)(tensors, batch)
    torch.testing.assert_close(auto, explicit)
    assert LMLogOdds()._kwargs(model) == {"fused_attention": False}
    assert LMLogOdds()._kwargs(Identity()) == {}  # other models get no extra argument


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                               torch.nn.Tanh(), torch.nn.Linear(32, 5))


def test_subset_gradients_have_subset_size_and_match_full_gradients():
    model = mlp()
    x, y = torch.randn(6, 16), torch.randint(0, 5, (6,))
    tensors = checkpoint_tensors(model, model.state_dict())
    out = get_output("classification")
    full = PerExampleGrads(model, out, select_params(model))(tensors, (x, y))
    names = select_params(model, "4")
    assert names == ("4.weight", "4.bias")
    sub = PerExampleGrads(model, out, names)(tensors, (x, y))
    assert full.shape == (6, 16 * 32 + 32 + 32 * 32 + 32 + 32 * 5 + 5)
    assert sub.shape == (6, 32 * 5 + 5)
    torch.testing.assert_close(sub, full[:, -(32 * 5 + 5):])
    pred = select_params(model, lambda n: n.endswith("bias"))
    assert pred == ("0.bias", "2.bias", "4.bias")


def test_subset_really_skips_the_other_parameters_work():
    """Count the FLOPs: with only the last layer, the gradient costs the forward pass plus that
    layer's weight gradient — no backward through (or weight gradients of) earlier layers."""
    model = mlp()
    b = 8
    x, y = torch.randn(b, 16), torch.randint(0, 5, (b,))
    tensors = checkpoint_tensors(model, model.state_dict())
    out = get_output("classification")
    counts = {}
    for key, filt in (("all", None), ("last", "4")):
        g = PerExampleGrads(model, out, select_params(model, filt))
        with FlopCounterMode(display=False) as fc:
            g(tensors, (x, y))
        counts[key] = fc.get_total_flops()
    forward = 2 * b * (16 * 32 + 32 * 32 + 32 * 5)
    assert counts["last"] == forward + 2 * b * 32 * 5
    assert counts["all"] > counts["last"] + 2 * b * (16 * 32 + 32 * 32)  # weight grads of layers 0 and 2 at least

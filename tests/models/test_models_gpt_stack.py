"""stacked_forward: K stacked GPTs give each model's own GPT.forward output and gradients."""
from __future__ import annotations

import pytest
import torch
from torch.func import stack_module_state

from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.models.gpt_stack import stacked_forward


@pytest.mark.parametrize("mup", [False, True])
def test_equals_each_models_forward_and_gradients(mup):
    cfg = GPTConfig(vocab_size=37, context=12, d_model=16, n_layers=2, n_heads=4, mup=mup, mup_base_width=8)
    models = [GPT(cfg, generator=torch.Generator().manual_seed(s)).double() for s in range(3)]
    params, _ = stack_module_state(models)
    params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    idx = torch.randint(0, 37, (3, 5, 10), generator=torch.Generator().manual_seed(0))  # T < context
    out = stacked_forward(params, cfg, idx)
    assert out.shape == (3, 5, 10, 37)
    w = torch.randn(out.shape, dtype=torch.float64)
    (out * w).sum().backward()
    for k, m in enumerate(models):
        ref = m(idx[k])
        torch.testing.assert_close(out[k], ref, rtol=1e-10, atol=1e-10)
        (ref * w[k]).sum().backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(params[n].grad[k], p.grad, rtol=1e-9, atol=1e-10, msg=n)


def test_rejects_too_long_inputs():
    cfg = GPTConfig(vocab_size=11, context=4, d_model=8, n_layers=1, n_heads=2)
    params, _ = stack_module_state([GPT(cfg)])
    with pytest.raises(ValueError, match="exceeds the model context"):
        stacked_forward(params, cfg, torch.zeros(1, 2, 5, dtype=torch.long))

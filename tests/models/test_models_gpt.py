"""GPT module: exact parameter count, causality, attention paths, μP reduction, loading."""
from __future__ import annotations

import math

import pytest
import torch

from proxyscale.config import from_dict
from proxyscale.errors import ConfigError, StoreError
from proxyscale.models import PAPER_LM_LADDER, PAPER_VOCAB
from proxyscale.models.gpt import GPT, GPTConfig, load_gpt, model_config_dict, param_count

torch.set_num_threads(1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(97, 16, 32, 1, 4), (50, 33, 48, 3, 6), (10, 8, 8, 2, 1)])
@pytest.mark.parametrize("mup", [False, True])
def test_param_count_matches_module(shape, mup):
    V, T, d, L, H = shape
    cfg = GPTConfig(V, T, d, L, H, mup=mup, mup_base_width=d)
    model = GPT(cfg, _gen())
    n = sum(p.numel() for p in model.parameters())
    assert n == param_count(cfg) == V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d


def test_paper_sizes_follow_formula_and_round_to_stated_millions():
    # The formula on the real module (meta device: no memory) for each paper rung.
    stated = {"37M": 37, "80M": 80, "125M": 125, "350M": 350, "760M": 760}
    for rung in PAPER_LM_LADDER:
        cfg = rung.config(PAPER_VOCAB)
        with torch.device("meta"):
            model = GPT(cfg)
        n = sum(p.numel() for p in model.parameters())
        assert n == param_count(cfg)
        # 37M, 125M, 760M round exactly; 80M (82.1M) and 350M (356.0M) are nominal, within 3 %.
        assert abs(n / 1e6 - stated[rung.name]) / stated[rung.name] < 0.03, (rung.name, n)
    exact = {r.name: round(r.params(PAPER_VOCAB) / 1e6) for r in PAPER_LM_LADDER}
    assert exact == {"37M": 37, "80M": 82, "125M": 125, "350M": 356, "760M": 760}


def test_output_shape_and_tied_embeddings():
    cfg = GPTConfig(40, 12, 16, 2, 2)
    model = GPT(cfg, _gen())
    idx = torch.randint(0, 40, (3, 12), generator=_gen(1))
    logits = model(idx)
    assert logits.shape == (3, 12, 40)
    assert "lm_head.weight" not in model.state_dict()
    logits.sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_causal_future_tokens_do_not_change_past_logits():
    model = GPT(GPTConfig(30, 10, 16, 2, 4), _gen())
    a = torch.randint(0, 30, (2, 10), generator=_gen(2))
    b = a.clone()
    b[:, 6:] = (b[:, 6:] + 7) % 30
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :6], lb[:, :6], rtol=0, atol=1e-6)
    assert (la[:, 6:] - lb[:, 6:]).abs().max() > 1e-3


@pytest.mark.parametrize("mup", [False, True])
def test_fused_and_plain_attention_agree(mup):
    model = GPT(GPTConfig(30, 16, 32, 2, 4, mup=mup, mup_base_width=16), _gen())
    idx = torch.randint(0, 30, (2, 16), generator=_gen(3))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), model(idx, fused_attention=False), rtol=1e-5, atol=1e-5)


def test_mup_at_base_width_is_the_standard_model():
    sp = GPT(GPTConfig(30, 16, 32, 2, 4), _gen(5))
    mu = GPT(GPTConfig(30, 16, 32, 2, 4, mup=True, mup_base_width=32), _gen(5))
    idx = torch.randint(0, 30, (2, 16), generator=_gen(6))
    with torch.no_grad():
        torch.testing.assert_close(sp(idx), mu(idx), rtol=0, atol=0)


def test_mup_scales_init_attention_and_logits():
    cfg = GPTConfig(30, 16, 128, 2, 4, mup=True, mup_base_width=32, init_std=0.02)
    model = GPT(cfg, _gen(7))
    assert cfg.width_mult == 4.0 and cfg.output_mult == 0.25
    assert math.isclose(cfg.attn_scale, math.sqrt(8) / 32)  # sqrt(base head dim) / head dim
    fc_std = model.blocks[0].fc.weight.std().item()
    assert abs(fc_std - 0.02 / 2) < 0.001  # init_std / sqrt(width_mult)
    assert abs(model.wte.weight.std().item() - 0.02) < 0.002  # embeddings keep their init


def test_init_is_reproducible_from_the_generator():
    a = GPT(GPTConfig(30, 8, 16, 1, 2), _gen(11)).state_dict()
    b = GPT(GPTConfig(30, 8, 16, 1, 2), _gen(11)).state_dict()
    c = GPT(GPTConfig(30, 8, 16, 1, 2), _gen(12)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["wte.weight"], c["wte.weight"])


def test_config_errors_are_helpful():
    with pytest.raises(ConfigError, match="not divisible by n_heads"):
        GPTConfig(30, 8, 30, 1, 4)
    with pytest.raises(ConfigError, match="did you mean 'd_model'"):
        from_dict(GPTConfig, {"vocab_size": 3, "context": 4, "d_modle": 8, "n_layers": 1, "n_heads": 1})
    model = GPT(GPTConfig(30, 8, 16, 1, 2), _gen())
    with pytest.raises(ConfigError, match="exceeds the model context"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_load_gpt_round_trip(tmp_path):
    from proxyscale.store import save_weights, write_json

    cfg = GPTConfig(30, 8, 16, 1, 2, mup=True, mup_base_width=8)
    model = GPT(cfg, _gen(3))
    save_weights(tmp_path / "model.safetensors", model.state_dict())
    write_json(tmp_path / "model.json", model_config_dict(cfg))
    loaded = load_gpt(tmp_path)
    assert loaded.cfg == cfg
    idx = torch.randint(0, 30, (2, 8), generator=_gen(4))
    with torch.no_grad():
        assert torch.equal(model(idx), loaded(idx))
    with pytest.raises(StoreError, match="no trained model"):
        load_gpt(tmp_path / "missing")

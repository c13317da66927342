"""AdamW, clipping and the LR schedule, checked against torch's implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxyscale.config import from_dict, to_dict
from proxyscale.errors import ConfigError
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.train.optim import AdamW, TrainConfig, clip_grad_norms, lr_at, param_settings

torch.set_num_threads(1)


def test_adamw_matches_torch_adamw_with_groups():
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g),
              "h": torch.randn(4, 4, generator=g)}
    settings = {"w": (1.0, True), "b": (1.0, False), "h": (0.25, True)}
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-6)
    ours = {k: v.clone().requires_grad_() for k, v in params.items()}
    ref = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = AdamW(ours, settings, cfg)
    groups = [{"params": [ref[k]], "lr": 1e-2 * m, "weight_decay": 0.1 if d else 0.0} for k, (m, d) in settings.items()]
    ropt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.9), eps=1e-6, foreach=False)
    for _step in range(5):
        grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
        for k in params:
            ours[k].grad = grads[k].clone()
            ref[k].grad = grads[k].clone()
        opt.step(1e-2)
        ropt.step()
    for k in params:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-6, atol=1e-7)
        assert not torch.equal(ours[k], params[k])


def test_adamw_on_stacked_tensors_equals_separate_updates():
    g = torch.Generator().manual_seed(1)
    stacked = {"w": torch.randn(3, 4, 2, generator=g).requires_grad_()}
    singles = [{"w": stacked["w"][k].detach().clone().requires_grad_()} for k in range(3)]
    cfg = TrainConfig(lr=1e-2, weight_decay=0.5)
    opt = AdamW(stacked, {"w": (1.0, True)}, cfg)
    opts = [AdamW(s, {"w": (1.0, True)}, cfg) for s in singles]
    for _ in range(3):
        grad = torch.randn(3, 4, 2, generator=g)
        stacked["w"].grad = grad.clone()
        opt.step(5e-3)
        for k in range(3):
            singles[k]["w"].grad = grad[k].clone()
            opts[k].step(5e-3)
    for k in range(3):
        torch.testing.assert_close(stacked["w"][k], singles[k]["w"], rtol=0, atol=0)


def test_clip_matches_torch_and_is_per_model_when_stacked():
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(4, 3, generator=g) * 5, torch.randn(7, generator=g)]
    ref = [x.clone().requires_grad_() for x in grads]
    for r, x in zip(ref, grads):
        r.grad = x.clone()
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    ours = [x.clone() for x in grads]
    norm = clip_grad_norms(ours, 1.0)
    torch.testing.assert_close(norm, ref_norm)
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r.grad)
    # Stacked: model 0 large (clipped), model 1 small (untouched).
    st = [torch.stack([grads[0], grads[0] * 1e-3]), torch.stack([grads[1], grads[1] * 1e-3])]
    small = [x[1].clone() for x in st]
    norms = clip_grad_norms(st, 1.0, batch_dims=1)
    assert norms.shape == (2,)
    torch.testing.assert_close(st[0][0], ours[0])
    torch.testing.assert_close(st[0][1], small[0], rtol=0, atol=0)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays(schedule):
    cfg = TrainConfig(lr=1.0, warmup_frac=0.1, schedule=schedule, min_lr_frac=0.1)
    lrs = np.array([lr_at(cfg, s, 100) for s in range(100)])
    assert np.allclose(lrs[:10], np.arange(1, 11) / 10)  # linear warm-up to the peak at step 9
    assert lrs.max() == pytest.approx(1.0)
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    if schedule == "constant":
        assert np.allclose(lrs[10:], 1.0)
    else:
        assert lrs[-1] == pytest.approx(0.1)  # ends exactly at min_lr_frac · lr
        mid = lr_at(cfg, 10 + (99 - 10) // 2, 100)
        expected_mid = 0.55 if schedule == "cosine" else 1.0 - 0.9 * ((99 - 10) // 2) / 89
        assert mid == pytest.approx(expected_mid, abs=0.02)


def test_weight_decay_on_matrices_only_and_mup_lr_on_hidden():
    model = GPT(GPTConfig(20, 8, 64, 1, 2, mup=True, mup_base_width=16))
    s = param_settings(model)
    assert s["wte.weight"] == (1.0, True) and s["wpe.weight"] == (1.0, True)
    assert s["blocks.0.fc.weight"] == (0.25, True)
    assert s["blocks.0.fc.bias"] == (1.0, False) and s["ln_f.weight"] == (1.0, False)


def test_train_config_round_trips_and_rejects_bad_values():
    cfg = TrainConfig(lr=1e-3, betas=(0.9, 0.99), schedule="linear", snapshot_steps=(5, 10))
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="did you mean 'warmup_frac'"):
        from_dict(TrainConfig, {"warmup_fraction": 0.1})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(TrainConfig, {"schedule": "cosin"})
    with pytest.raises(ConfigError, match="lr must be > 0"):
        TrainConfig(lr=0.0)
    assert math.isclose(TrainConfig().lr, 6e-4) and TrainConfig().weight_decay == 4e-4

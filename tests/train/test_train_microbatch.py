"""Micro-batches with gradient accumulation, and activation checkpointing (SPEC §10)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from proxyscale.errors import ConfigError
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.store import load_weights, read_json
from proxyscale.train.batched import train_lm_batched
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig
from proxyscale.train.step import backward_passes, lm_loss

torch.set_num_threads(1)
MODEL = GPTConfig(vocab_size=32, context=16, d_model=32, n_layers=2, n_heads=4)


def batches(batch_size: int = 16, T: int = 16, V: int = 32):
    """Random token rows, a different batch every step (seeded by the step)."""
    return lambda step: np.random.default_rng([7, step]).integers(0, V, size=(batch_size, T + 1))


def _grads(model: GPT) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


def test_accumulated_gradient_equals_full_batch_gradient_in_float64():
    model = GPT(MODEL, generator=torch.Generator().manual_seed(0)).double()
    batch = torch.from_numpy(batches()(0))
    lm_loss(model(batch[:, :-1]), batch[:, 1:]).backward()
    full = _grads(model)
    share = backward_passes(model, batch, None, micro=4, global_rows=16)
    acc = _grads(model)
    for n in full:  # float64: only the order of additions differs
        rel = (acc[n] - full[n]).norm() / full[n].norm()
        assert rel < 1e-12, n
    with torch.no_grad():
        mean = lm_loss(model(batch[:, :-1]), batch[:, 1:])
    # the recorded loss is the batch mean (lm_loss averages in fp32, so fp32 rounding here)
    assert share.item() == pytest.approx(mean.item(), rel=1e-6)


def test_two_ranks_share_of_the_gradient_is_half_the_mean_gradient_times_two():
    """What each DDP rank computes before the all-reduce averages: rows r::2, scaled by R."""
    model = GPT(MODEL, generator=torch.Generator().manual_seed(0)).double()
    batch = torch.from_numpy(batches()(0))
    lm_loss(model(batch[:, :-1]), batch[:, 1:]).backward()
    full = _grads(model)
    parts, shares = [], []
    for r in range(2):
        shares.append(backward_passes(model, batch[r::2], None, micro=4, global_rows=16, ranks=2).item())
        parts.append(_grads(model))
    for n in full:
        avg = (parts[0][n] + parts[1][n]) / 2
        assert ((avg - full[n]).norm() / full[n].norm()) < 1e-12, n
    with torch.no_grad():
        assert sum(shares) == pytest.approx(lm_loss(model(batch[:, :-1]), batch[:, 1:]).item(), rel=1e-6)


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, batch_size=16, checkpoint_every=0, log_every=2, warmup_frac=0.1, device="cpu",
                precision="fp32")
    return TrainConfig(**{**base, **kw})


def test_micro_batched_run_ends_with_the_unsplit_runs_weights_and_losses(tmp_path):
    whole = train_lm(MODEL, _cfg(), batches(), 6, tmp_path / "whole", seed=1)
    split = train_lm(MODEL, _cfg(micro_batch_size=4), batches(), 6, tmp_path / "split", seed=1)
    a, b = (load_weights(tmp_path / d / "model.safetensors") for d in ("whole", "split"))
    # float32: the 4 passes sum the gradient in another order (relative error ~1e-7); AdamW's
    # g/sqrt(v) carries that to the update (lr 3e-3), so 6 steps differ by well under 1e-5
    # (measured 2e-6), while one step moves weights by about lr
    for n in a:
        torch.testing.assert_close(b[n], a[n], rtol=0, atol=1e-5)
    la, lb = np.load(tmp_path / "whole" / "losses.npy"), np.load(tmp_path / "split" / "losses.npy")
    np.testing.assert_allclose(lb, la, rtol=1e-6, atol=0)
    assert la[0] == pytest.approx(np.log(32), abs=0.2)  # the global batch's mean, not a pass's share
    assert split["tokens"] == whole["tokens"] == 6 * 16 * 16
    assert read_json(tmp_path / "split" / "train.json")["micro_batch_size"] == 4
    assert split["run_hash"] != whole["run_hash"]  # another summation order: another run


def test_one_pass_of_the_whole_batch_is_bitwise_the_unsplit_run(tmp_path):
    whole = train_lm(MODEL, _cfg(), batches(), 3, tmp_path / "whole", seed=1)
    one = train_lm(MODEL, _cfg(micro_batch_size=16), batches(), 3, tmp_path / "one", seed=1)
    assert one["final_loss"] == whole["final_loss"]
    a, b = (load_weights(tmp_path / d / "model.safetensors") for d in ("whole", "one"))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_activation_checkpointing_gives_the_same_gradients():
    model = GPT(MODEL, generator=torch.Generator().manual_seed(0))
    batch = torch.from_numpy(batches()(0))
    lm_loss(model(batch[:, :-1]), batch[:, 1:]).backward()
    plain = _grads(model)
    model.checkpoint_blocks = True
    calls = []
    block = model.blocks[0]
    block.attention = lambda x, fused, f=block.attention: calls.append(1) or f(x, fused)
    lm_loss(model(batch[:, :-1]), batch[:, 1:]).backward()
    remat = _grads(model)
    assert len(calls) == 2  # the block ran again in backward: its activations were not kept
    for n in plain:  # recomputation repeats the same fp32 ops
        torch.testing.assert_close(remat[n], plain[n], rtol=1e-6, atol=1e-7)


def test_activation_checkpointing_run_matches_and_records_its_setting(tmp_path):
    a = train_lm(MODEL, _cfg(), batches(), 3, tmp_path / "a", seed=2)
    b = train_lm(MODEL, _cfg(activation_checkpointing=True, micro_batch_size=8), batches(), 3, tmp_path / "b", seed=2)
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-6)
    assert b["train"]["activation_checkpointing"] is True and "activation_checkpointing" not in a["train"]


def test_stacked_training_refuses_micro_batches(tmp_path):
    with pytest.raises(ConfigError, match="micro_batch_size: 0"):
        train_lm_batched(MODEL, _cfg(micro_batch_size=4), [batches()], 2, [tmp_path / "x"], [0], mode="batched")

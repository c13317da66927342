"""train_lm: learns, resumes bit-for-bit, refuses mixed runs, stops on divergence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxyscale.errors import DataError, DivergedError, StoreError
from proxyscale.models.gpt import GPTConfig, load_gpt, param_count
from proxyscale.store import load_weights, read_json
from proxyscale.train import step
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

torch.set_num_threads(1)
MODEL = GPTConfig(vocab_size=32, context=16, d_model=32, n_layers=2, n_heads=4)


def cyclic_batches(batch_size: int = 8, T: int = 16, V: int = 32, stride: int = 5, seed: int = 0):
    """Rows follow x[t+1] = (x[t] + stride) mod V from a random start: learnable by a bigram."""
    def batch_fn(step: int) -> np.ndarray:
        start = np.random.default_rng([seed, step]).integers(0, V, size=(batch_size, 1))
        return (start + stride * np.arange(T + 1)) % V

    return batch_fn


def _cfg(**kw) -> TrainConfig:
    # fp32: "auto" is measured per machine (calibrate.py) and could pick bf16 on some CPUs.
    base = dict(lr=3e-3, batch_size=8, checkpoint_every=10, log_every=5, warmup_frac=0.1, device="cpu",
                precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def test_learns_a_bigram_process_and_writes_typed_outputs(tmp_path):
    m = train_lm(MODEL, _cfg(lr=1e-2), cyclic_batches(), 150, tmp_path / "run", seed=1)
    assert m["initial_loss"] > math.log(32) - 0.3  # starts near uniform
    assert m["final_loss"] < 0.5  # the next token is a deterministic function of the current one
    assert m["params"] == param_count(MODEL)
    assert m["tokens"] == 150 * 8 * 16 and m["flops"] == 6.0 * m["params"] * m["tokens"]
    assert m["tokens_per_s"] > 0 and len(m["loss_curve"]) == 20
    losses = np.load(tmp_path / "run" / "losses.npy", allow_pickle=False)
    assert losses.shape == (150,) and m["final_loss"] == pytest.approx(losses[-8:].mean())
    assert read_json(tmp_path / "run" / "train.json")["final_loss"] == m["final_loss"]
    assert not (tmp_path / "run" / "checkpoint").exists()  # removed once finished
    model = load_gpt(tmp_path / "run")
    x = torch.from_numpy(cyclic_batches(seed=9)(0))
    with torch.no_grad():
        pred = model(x[:, :-1]).argmax(-1)
    assert (pred[:, 2:] == x[:, 3:]).float().mean() > 0.9


def test_resume_after_kill_equals_uninterrupted_run_bitwise(tmp_path):
    cfg = _cfg(checkpoint_every=7)
    fresh = train_lm(MODEL, cfg, cyclic_batches(), 30, tmp_path / "fresh", seed=3)
    stopped = train_lm(MODEL, cfg, cyclic_batches(), 30, tmp_path / "resumed", seed=3, stop_after=17)
    assert stopped == {"stopped_at": 17}
    assert not (tmp_path / "resumed" / "train.json").exists()
    assert (tmp_path / "resumed" / "checkpoint" / "step-000014" / "optim.safetensors").is_file()
    resumed = train_lm(MODEL, cfg, cyclic_batches(), 30, tmp_path / "resumed", seed=3)
    assert resumed["final_loss"] == fresh["final_loss"]
    assert np.array_equal(np.load(tmp_path / "fresh" / "losses.npy"), np.load(tmp_path / "resumed" / "losses.npy"))
    a = load_weights(tmp_path / "fresh" / "model.safetensors")
    b = load_weights(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_a_noop_and_other_settings_are_refused(tmp_path):
    first = train_lm(MODEL, _cfg(), cyclic_batches(), 10, tmp_path, seed=0)

    def exploding(step: int) -> np.ndarray:
        raise AssertionError("a finished run must not train again")

    again = train_lm(MODEL, _cfg(log_every=3), exploding, 10, tmp_path, seed=0)  # cadence is not hashed
    assert again["final_loss"] == first["final_loss"]
    with pytest.raises(StoreError, match="different settings"):
        train_lm(MODEL, _cfg(lr=1e-3), cyclic_batches(), 10, tmp_path, seed=0)
    stop = tmp_path / "other"
    train_lm(MODEL, _cfg(checkpoint_every=4), cyclic_batches(), 10, stop, seed=0, stop_after=5)
    with pytest.raises(StoreError, match="different settings"):
        train_lm(MODEL, _cfg(checkpoint_every=4), cyclic_batches(), 10, stop, seed=1)


def test_divergence_raises_and_writes_no_model(tmp_path, monkeypatch):
    real = step.lm_loss  # the training step (train/step.py) computes the loss
    calls = {"n": 0}

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(step, "lm_loss", poisoned)
    with pytest.raises(DivergedError, match=r"diverged at step 3: loss=nan; lower the learning rate"):
        train_lm(MODEL, _cfg(), cyclic_batches(), 20, tmp_path, seed=0)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "train.json").exists()
    assert read_json(tmp_path / "diverged.json")["step"] == 3


def test_bad_batches_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="expected \\(8, T\\+1\\)"):
        train_lm(MODEL, _cfg(), lambda s: np.zeros((4, 17), dtype=np.int64), 5, tmp_path / "a", seed=0)
    with pytest.raises(DataError, match="token ids in \\[0, 32\\)"):
        train_lm(MODEL, _cfg(), lambda s: np.full((8, 17), 40), 5, tmp_path / "b", seed=0)
    with pytest.raises(DataError, match="context 16"):
        train_lm(MODEL, _cfg(), lambda s: np.zeros((8, 30), dtype=np.int64), 5, tmp_path / "c", seed=0)


def test_snapshots_and_progress(tmp_path):
    seen = []
    train_lm(MODEL, _cfg(snapshot_steps=(4, 8)), cyclic_batches(), 10, tmp_path, seed=0, progress=seen.append)
    snaps = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snaps == ["step-000004.safetensors", "step-000008.safetensors"]
    assert [s["step"] for s in seen] == [4, 5, 8, 10]
    assert not torch.equal(load_weights(tmp_path / "snapshots" / snaps[0])["wte.weight"],
                           load_weights(tmp_path / "model.safetensors")["wte.weight"])


def test_bf16_autocast_trains_and_keeps_fp32_weights(tmp_path):
    m = train_lm(MODEL, _cfg(precision="bf16", lr=1e-2), cyclic_batches(), 40, tmp_path, seed=0)
    assert m["final_loss"] < m["initial_loss"] - 1.0
    assert load_weights(tmp_path / "model.safetensors")["wte.weight"].dtype == torch.float32

"""GPU-side details checked on the CPU: prefetching keeps batch order, the fused AdamW update equals
the foreach one, and MFU's arithmetic and device table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from proxyscale.errors import DataError
from proxyscale.train import optim
from proxyscale.train.optim import AdamW, TrainConfig
from proxyscale.train.throughput import PEAK_BF16_TFLOPS, mfu, peak_tflops, prefetched

torch.set_num_threads(1)


def test_prefetched_batches_come_in_batch_fn_order():
    calls = []

    def fetch(step: int) -> torch.Tensor:
        calls.append(step)
        return torch.from_numpy(np.random.default_rng([3, step]).integers(0, 9, size=(4, 5)))

    got = list(prefetched(fetch, 2, 40, depth=3))
    assert len(got) == 38 and calls == list(range(2, 40))
    for step, batch in zip(range(2, 40), got):
        assert torch.equal(batch, torch.from_numpy(np.random.default_rng([3, step]).integers(0, 9, size=(4, 5))))


def test_a_failing_batch_raises_at_its_step_and_an_early_stop_ends_the_thread():
    def fetch(step: int) -> torch.Tensor:
        if step == 3:
            raise DataError("batch 3 is bad")
        return torch.tensor([step])

    seen = []
    with pytest.raises(DataError, match="batch 3 is bad"):
        for b in prefetched(fetch, 0, 10):
            seen.append(int(b))
    assert seen == [0, 1, 2]
    gen = prefetched(lambda s: torch.tensor([s]), 0, 1000, depth=1)
    assert int(next(gen)) == 0
    gen.close()  # a run stopped early: the thread must not keep reading
    import threading
    assert not [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_fused_adamw_equals_the_foreach_update(monkeypatch):
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (6, 5), "b": (5,), "e": (7, 6)}
    settings = {"w": (1.0, True), "b": (1.0, False), "e": (0.5, True)}
    init = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    grads = [{k: torch.randn(s, generator=g) for k, s in shapes.items()} for _ in range(4)]
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))

    def run(fused: bool) -> dict:
        monkeypatch.setattr(optim, "_fusable", lambda ps: fused)
        ps = {k: v.clone().requires_grad_() for k, v in init.items()}
        opt = AdamW(ps, settings, cfg)
        for gs in grads:
            for k in ps:
                ps[k].grad = gs[k].clone()
            opt.step(3e-3)
        return {k: v.detach() for k, v in ps.items()}

    fused, foreach = run(True), run(False)
    for k in fused:  # the same arithmetic in another kernel: float32 rounding only
        torch.testing.assert_close(fused[k], foreach[k], rtol=1e-6, atol=1e-7)
        assert not torch.equal(fused[k], init[k])


def test_mfu_is_six_p_tokens_over_the_peak_and_none_on_cpu():
    assert mfu(1_000_000, 50_000.0, 989.0) == pytest.approx(6 * 1e6 * 5e4 / 989e12)
    assert mfu(1_000_000, 50_000.0, 989.0, devices=2) == pytest.approx(6 * 1e6 * 5e4 / (2 * 989e12))
    assert mfu(10, 1.0, None) is None and peak_tflops(torch.device("cpu")) is None
    table = dict(PEAK_BF16_TFLOPS)
    assert table["H100"] == table["H200"] == 989.0 and table["A100"] == 312.0 and table["L4"] == 121.0


def test_train_json_records_tokens_per_s_and_mfu(tmp_path):
    from proxyscale.models.gpt import GPTConfig
    from proxyscale.store import read_json
    from proxyscale.train.loop import train_lm

    model = GPTConfig(vocab_size=32, context=8, d_model=16, n_layers=1, n_heads=2)
    cfg = TrainConfig(batch_size=4, device="cpu", precision="fp32", log_every=1)
    train_lm(model, cfg, lambda i: np.random.default_rng(i).integers(0, 32, size=(4, 9)), 3, tmp_path / "r", seed=0)
    meta = read_json(tmp_path / "r" / "train.json")
    assert meta["tokens_per_s"] > 0 and meta["mfu"] is None and meta["ranks"] == 1  # no peak for a CPU
    assert "6·params" in meta["mfu_flops"]

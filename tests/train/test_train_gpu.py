"""On a CUDA device: stacked training equals one-at-a-time, and precision 'auto' is bf16."""
from __future__ import annotations

import pytest
import torch
from test_train_batched import SEEDS, _fns
from test_train_loop import MODEL, _cfg

from proxyscale.store import read_json
from proxyscale.train.batched import train_lm_batched
from proxyscale.train.loop import train_lm

pytestmark = pytest.mark.gpu


def test_batched_equals_separate_runs_on_cuda(tmp_path):
    cfg = _cfg(device="cuda", checkpoint_every=0)
    bat = train_lm_batched(MODEL, cfg, _fns(), 30, [tmp_path / f"b{k}" for k in range(3)], SEEDS, mode="batched")
    for k, (f, s) in enumerate(zip(_fns(), SEEDS)):
        sep = train_lm(MODEL, cfg, f, 30, tmp_path / f"s{k}", seed=s)
        assert bat[k]["final_loss"] == pytest.approx(sep["final_loss"], abs=1e-3)


def test_auto_precision_is_bf16_on_cuda(tmp_path):
    m = train_lm(MODEL, _cfg(device="cuda", precision="auto"), _fns()[0], 10, tmp_path / "r", seed=0)
    assert m["precision_choice"]["precision"] == "bf16"
    assert read_json(tmp_path / "r" / "train.json")["device"].startswith("cuda")
    assert torch.isfinite(torch.tensor(m["final_loss"]))

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


def test_micro_batches_checkpointing_prefetch_and_mfu_on_cuda(tmp_path):
    """The CUDA path of SPEC §10: pinned, prefetched batches; micro-batches with activation
    checkpointing equal the whole batch up to rounding; MFU is recorded for a known GPU."""
    from proxyscale.train.throughput import peak_tflops

    cfg = _cfg(device="cuda", checkpoint_every=0, precision="fp32")
    whole = train_lm(MODEL, cfg, _fns()[0], 20, tmp_path / "w", seed=0)
    split = train_lm(MODEL, _cfg(device="cuda", checkpoint_every=0, precision="fp32", micro_batch_size=4,
                                 activation_checkpointing=True), _fns()[0], 20, tmp_path / "s", seed=0)
    assert split["final_loss"] == pytest.approx(whole["final_loss"], abs=1e-4)
    if peak_tflops(torch.device("cuda")) is not None:
        assert 0 < split["mfu"] < 1
    else:
        assert split["mfu"] is None


def test_a_one_rank_nccl_job_equals_the_plain_run(tmp_path, monkeypatch):
    """torchrun with NCCL on the GPUs there are (one rank each); more ranks than GPUs: one line."""
    import os
    import sys
    from pathlib import Path

    from _ddp_fns import train_cuda

    from proxyscale.config import to_dict
    from proxyscale.errors import ConfigError
    from proxyscale.run.ddp import launch_ranks
    from proxyscale.run.step import StepContext

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    cfg = _cfg(device="cuda", checkpoint_every=0, precision="fp32")
    plain = train_lm(MODEL, cfg, _fns()[0], 10, tmp_path / "plain", seed=0)
    ranks = min(2, torch.cuda.device_count())
    job = {"model": to_dict(MODEL), "train": to_dict(cfg), "n_steps": 10, "seed": 0}
    launch_ranks(StepContext("k", "t", "n", job, {}, tmp_path / "ddp", 2), train_cuda, ranks, "cuda")
    ddp = read_json(tmp_path / "ddp" / "train.json")
    assert ddp["ranks"] == ranks and ddp["final_loss"] == pytest.approx(plain["final_loss"], abs=1e-4)
    with pytest.raises(ConfigError, match="GPUs but"):
        launch_ranks(StepContext("k", "t", "n", job, {}, tmp_path / "x", 2), train_cuda,
                     torch.cuda.device_count() + 1, "cuda")

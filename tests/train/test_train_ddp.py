"""Data-parallel training of one model: 2 gloo ranks under torchrun on the CPU (SPEC §10)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _ddp_fns import batches, train_tiny

from proxyscale.config import to_dict
from proxyscale.errors import ConfigError, ProcessDied, StoreError
from proxyscale.models.gpt import GPTConfig
from proxyscale.run.ddp import check_gpus, failure_line, killed_ranks, launch_ranks, rank_failures
from proxyscale.run.step import StepContext
from proxyscale.store import load_weights, read_json
from proxyscale.train.distributed import FAULT_ENV, TIMEOUT_ENV, check_split
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

torch.set_num_threads(1)
MODEL = GPTConfig(vocab_size=32, context=16, d_model=32, n_layers=2, n_heads=4)
TRAIN = TrainConfig(lr=3e-3, batch_size=8, checkpoint_every=2, log_every=2, warmup_frac=0.1, device="cpu",
                    precision="fp32", micro_batch_size=2)
STEPS = 6


@pytest.fixture(autouse=True)
def _ranks_env(monkeypatch):
    """The ranks import this directory's helpers; a dead peer is noticed within seconds."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    monkeypatch.setenv(TIMEOUT_ENV, "60")


def _ranks(out: Path, ranks: int = 2, **extra) -> None:
    cfg = {"model": to_dict(MODEL), "train": to_dict(TRAIN), "n_steps": STEPS, "seed": 1, **extra}
    launch_ranks(StepContext("k", "t", "n", cfg, {}, out, threads=2), train_tiny, ranks, "cpu")


def _weights(d: Path) -> dict:
    return load_weights(d / "model.safetensors")


def _same(a: Path, b: Path) -> None:
    """Equal within float32 tolerance: the ranks' gradients are summed in another order (DDP
    all-reduces two partial sums), ~1e-7 relative; AdamW carries that into updates of size lr
    (3e-3), so 6 steps stay well under 1e-5 (as for micro-batches)."""
    wa, wb = _weights(a), _weights(b)
    for n in wa:
        torch.testing.assert_close(wb[n], wa[n], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(b / "losses.npy"), np.load(a / "losses.npy"), rtol=1e-6)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    train_lm(MODEL, TRAIN, batches(8), STEPS, out, seed=1)
    return out


def test_two_ranks_equal_one_rank_and_only_rank_0_writes(tmp_path, single):
    _ranks(tmp_path / "run")
    _same(single, tmp_path / "run")
    meta = read_json(tmp_path / "run" / "train.json")
    assert meta["ranks"] == 2 and meta["train_mode"] == "ddp" and meta["tokens"] == STEPS * 8 * 16
    assert meta["run_hash"] == read_json(single / "train.json")["run_hash"]  # R is not in the run's hash
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["losses.npy", "model.json",
                                                                     "model.safetensors", "train.json"]


def test_a_two_rank_checkpoint_resumes_on_one_rank(tmp_path, single):
    _ranks(tmp_path / "run", stop_after=4)
    assert not (tmp_path / "run" / "train.json").exists()
    assert (tmp_path / "run" / "checkpoint" / "step-000004" / "state.json").is_file()
    train_lm(MODEL, TRAIN, batches(8), STEPS, tmp_path / "run", seed=1)
    _same(single, tmp_path / "run")


@pytest.mark.slow  # 14 s; the other direction runs by default
def test_a_one_rank_checkpoint_resumes_on_two_ranks(tmp_path, single):
    assert train_lm(MODEL, TRAIN, batches(8), STEPS, tmp_path / "run", seed=1, stop_after=4) == {"stopped_at": 4}
    _ranks(tmp_path / "run")
    _same(single, tmp_path / "run")


def test_a_dead_rank_fails_in_one_line_and_leaves_no_process_or_half_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv(FAULT_ENV, "1:3")  # rank 1 is SIGKILLed when it reaches step 3
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    stale = tmp_path / "tmp" / "proxyscale-ranks-999999999-x"  # left by a launch that was killed
    stale.mkdir()
    (stale / ".proxyscale-ranks").touch()
    foreign = tmp_path / "tmp" / "proxyscale-ranks-999999998-mine"  # a look-alike without the marker
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not proxyscale's")
    with pytest.raises(StoreError) as err:
        _ranks(tmp_path / "run")
    line = str(err.value)
    assert isinstance(err.value, ProcessDied)  # the worker books it crashed: the executor retries it
    assert "\n" not in line and "rank 1 died (killed by SIGKILL" in line, line
    assert "ChildFailedError" in str(err.value.__cause__)  # torchrun's own report, kept for the traceback
    run = tmp_path / "run"
    assert not (run / "train.json").exists() and not (run / "model.safetensors").exists()
    assert [p.name for p in (run / "checkpoint").iterdir()] == ["step-000002"]  # whole checkpoints only
    assert not _children_named("-m proxyscale.run.ddp")
    # its own temp folder and the stale one removed; the look-alike kept as it was
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [foreign.name]
    assert (foreign / "keep.txt").read_text() == "not proxyscale's"


def _children_named(text: str) -> list[str]:
    """Command lines of live processes whose command line contains ``text`` (ours or orphaned)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if d.name.isdigit() and text in cmd and int(d.name) != os.getpid():
            found.append(cmd)
    return found


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line():
    with pytest.raises(ConfigError, match="batch_size 8 cannot be split evenly over 3 ranks"):
        check_split(8, 3, 0)
    with pytest.raises(ConfigError, match="is 4 rows per rank, not a multiple of micro_batch_size 3"):
        check_split(8, 2, 3)
    check_split(8, 2, 2)


def test_more_ranks_than_visible_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="2 data-parallel ranks need 2 GPUs but 1 are visible"):
        check_gpus(2, "cuda")
    assert check_gpus(2, "cpu") is False


def _report(root: tuple[int, int], other: tuple[int, int]) -> str:
    """torchrun's summary of a failed job (the shape torch 2.x prints): ``(rank, exit code)``s."""
    block = ("[{i}]:\n  time      : 2026-12-03_21:39:57\n  rank      : {r} (local_rank: {r})\n"
             "  exitcode  : {c} (pid: 5)\n")
    return ("...\nFailures:\n" + block.format(i=1, r=other[0], c=other[1]) + "-----\nRoot Cause (first observed "
            "failure):\n" + block.format(i=0, r=root[0], c=root[1]) + "=====\n")


def test_failure_lines_name_the_rank():
    out = ("...\nRoot Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n"
           "  exitcode  : -9 (pid: 5)\n")
    assert "rank 1 died (killed by SIGKILL" in failure_line(out, 2, 1)
    assert rank_failures(_report((1, -9), (0, -15))) == [(1, -9), (0, -15)]
    # torchrun stops the other ranks with SIGTERM after the first failure: not a killed rank
    assert killed_ranks(rank_failures(_report((1, 1), (0, -15)))) == []
    assert failure_line(_report((1, 1), (0, -15)), 2, 1) == \
        "data-parallel training (2 ranks) failed: rank 1 exited with 1; see the step's traceback for its output"
    # a peer noticed the killed rank's absence first (one timestamp): the killed rank is still named
    assert killed_ranks(rank_failures(_report((0, 1), (1, -9)))) == [(1, -9)]
    assert "rank 1 died (killed by SIGKILL" in failure_line(_report((0, 1), (1, -9)), 2, 1)
    assert failure_line("", 2, -9).startswith("data-parallel training (2 ranks) failed: torchrun died (killed by "
                                              "SIGKILL")
    assert failure_line("x\nproxyscale-rank-error: rank 0: diverged at step 3\n", 2, 1) == \
        "data-parallel training (2 ranks) failed: rank 0: diverged at step 3"


LAUNCHER = """
import sys
from pathlib import Path
from _ddp_fns import sleep_forever
from proxyscale.run.ddp import launch_ranks
from proxyscale.run.step import StepContext
launch_ranks(StepContext("k", "t", "n", {"marker": sys.argv[1]}, {}, Path(sys.argv[1]).parent, 2), sleep_forever, 2,
             "cpu")
"""


@pytest.mark.slow  # 17 s; the dead-rank test checks for leftovers by default
def test_killing_the_launching_worker_leaves_no_rank_behind(tmp_path):
    """The driver stops a worker with SIGTERM, then SIGKILL: torchrun and its ranks go with it."""
    import signal
    import subprocess
    import time

    marker = tmp_path / "up"
    (tmp_path / "tmp").mkdir()  # a killed launch leaves its temp folder (the next launch removes it)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(marker)],
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    try:
        deadline = time.monotonic() + 120
        while not all(Path(f"{marker}.{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(Path(f"{marker}.{r}").exists() for r in (0, 1)), "the ranks did not start"
        assert len(_children_named("-m proxyscale.run.ddp")) == 3  # torchrun and 2 ranks
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while _children_named("-m proxyscale.run.ddp") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _children_named("-m proxyscale.run.ddp")

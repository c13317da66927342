"""A data-parallel step (2 gloo ranks under torchrun) under the executor's failure rules: a rank
killed by a signal counts as the step's process dying (booked crashed, retried up to
``retries`` times, resuming from its last checkpoint), a rank that raises fails the step at once."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _ddp_steps import MODEL, STEPS, TRAIN, batches, config

from proxyscale.run.backends import make_backend
from proxyscale.run.executor import run_plan
from proxyscale.run.plan import Plan, Step
from proxyscale.store import Store, load_weights
from proxyscale.train.distributed import TIMEOUT_ENV
from proxyscale.train.loop import train_lm

HERE = Path(__file__).parent
KILLED = ("data-parallel training (2 ranks) failed: rank 1 died (killed by SIGKILL; out of memory or killed?); "
          "re-run to resume it from its last checkpoint")


@pytest.fixture(autouse=True)
def _ranks_env(monkeypatch):
    """The ranks import this directory's helpers; a dead peer is noticed within seconds."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))
    monkeypatch.setenv(TIMEOUT_ENV, "60")


def run_ranked(tmp_path: Path, retries: int, **fault) -> tuple[Store, str, object]:
    """One step of ``ranks: 2`` on the local pool; returns the store, its key and the summary."""
    store, plan = Store(tmp_path / "store"), Plan()
    key = plan.add(Step("t", "m", config(tmp_path / "log", **fault), fn="_ddp_steps:launch", ranks=2))
    backend = make_backend("local", 1)
    try:
        summary = run_plan(plan, store, backend, progress=False, retries=retries)
    finally:
        backend.shutdown()
    return store, key, summary


def starts(log: Path) -> list[list[str]]:
    """The checkpoints rank 0 found at each start of the step."""
    return [json.loads(ln) for ln in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    train_lm(MODEL, TRAIN, batches, STEPS, out, seed=1)
    return out


def test_a_killed_rank_is_retried_and_resumes_to_the_uninterrupted_result(tmp_path, single):
    store, key, summary = run_ranked(tmp_path, retries=1, die_at=3, once=str(tmp_path / "died"))
    assert summary.done == [key] and summary.retried == {key: 1} and not summary.failed
    assert store.record(key)["attempt"] == 2
    assert starts(tmp_path / "log") == [[], ["step-000002"]]  # the retry resumed from the last checkpoint
    got, want = load_weights(store.final_dir(key) / "model.safetensors"), load_weights(single / "model.safetensors")
    for name in want:  # 2 ranks sum gradients in another order: float32 tolerance, as for a resume
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(store.final_dir(key) / "losses.npy"), np.load(single / "losses.npy"),
                               rtol=1e-6)


@pytest.mark.slow  # about 20 s; the rule "(after N attempts)" is the executor's, checked in test_faults.py
def test_a_rank_killed_every_time_fails_in_one_line_after_the_retries(tmp_path):
    store, key, summary = run_ranked(tmp_path, retries=1, die_at=3)
    assert summary.failed == {key: KILLED + " (after 2 attempts)"} and summary.retried == {key: 1}
    assert starts(tmp_path / "log") == [[], ["step-000002"]]
    assert store.state(key) == "failed" and store.failure(key)["reason"] == KILLED + " (after 2 attempts)"
    assert "ChildFailedError" in store.failure(key)["detail"]  # torchrun's report, for the record


def test_without_retries_a_killed_rank_fails_at_once(tmp_path):
    store, key, summary = run_ranked(tmp_path, retries=0, die_at=3, once=str(tmp_path / "died"))
    assert summary.failed == {key: KILLED} and summary.retried == {} and not summary.done
    assert len(starts(tmp_path / "log")) == 1 and store.state(key) == "failed"
    assert store.failure(key)["reason"] == KILLED
    assert "ChildFailedError" in store.failure(key)["detail"]  # torchrun's report, for the record


def test_a_rank_that_raises_fails_the_step_without_a_retry(tmp_path):
    store, key, summary = run_ranked(tmp_path, retries=2, **{"raise": True})
    line = "data-parallel training (2 ranks) failed: rank 1: ValueError: planned failure in rank 1"
    assert summary.failed == {key: line} and summary.retried == {}
    assert len(starts(tmp_path / "log")) == 1 and store.failure(key)["reason"] == line

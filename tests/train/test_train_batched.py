"""train_lm_batched: K models at once equal K separate train_lm runs; resumable; per-model clipping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_loop import MODEL, _cfg, cyclic_batches

from proxyscale.errors import ConfigError, DivergedError
from proxyscale.store import load_weights, read_json
from proxyscale.train import batched
from proxyscale.train.batched import train_lm_batched
from proxyscale.train.loop import train_lm

torch.set_num_threads(1)
SEEDS = [0, 1, 2]


def _fns():
    # Different data per model (strides 3/5/7) so the models really differ.
    return [cyclic_batches(stride=s, seed=k) for k, s in enumerate((3, 5, 7))]


def test_equals_separate_runs(tmp_path):
    # grad_clip 0.3 so clipping is active and differs between models.
    cfg = _cfg(grad_clip=0.3, checkpoint_every=0)
    sep = [train_lm(MODEL, cfg, f, 40, tmp_path / f"s{k}", seed=s) for k, (f, s) in enumerate(zip(_fns(), SEEDS))]
    bat = train_lm_batched(MODEL, cfg, _fns(), 40, [tmp_path / f"b{k}" for k in range(3)], SEEDS, mode="batched")
    finals = [m["final_loss"] for m in sep]
    assert len(set(np.round(finals, 3))) == 3  # three genuinely different runs
    for k in range(3):
        assert bat[k]["final_loss"] == pytest.approx(sep[k]["final_loss"], abs=1e-4)
        np.testing.assert_allclose(np.load(tmp_path / f"b{k}" / "losses.npy"),
                                   np.load(tmp_path / f"s{k}" / "losses.npy"), atol=1e-4)
        a = load_weights(tmp_path / f"s{k}" / "model.safetensors")
        b = load_weights(tmp_path / f"b{k}" / "model.safetensors")
        for n in a:
            torch.testing.assert_close(b[n], a[n], rtol=0, atol=1e-4, msg=n)
        rec = read_json(tmp_path / f"b{k}" / "train.json")
        assert rec["batched_with"] == rec["group_size"] == 3 and rec["train_mode"] == "batched"
        # per model: its own tokens over the group's wall; the group: all three models' tokens
        assert rec["group_tokens_per_s"] == pytest.approx(3 * rec["tokens_per_s"])
        assert rec["compute_wall_s"] == pytest.approx(rec["wall_s"] / 3)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    cfg = _cfg(checkpoint_every=6)
    dirs_a = [tmp_path / f"a{k}" for k in range(3)]
    dirs_b = [tmp_path / f"b{k}" for k in range(3)]
    full = train_lm_batched(MODEL, cfg, _fns(), 20, dirs_a, SEEDS, mode="batched")
    assert train_lm_batched(MODEL, cfg, _fns(), 20, dirs_b, SEEDS, stop_after=15, mode="batched")[0] == {
        "stopped_at": 15}
    resumed = train_lm_batched(MODEL, cfg, _fns(), 20, dirs_b, SEEDS, mode="batched")
    for k in range(3):
        assert resumed[k]["final_loss"] == full[k]["final_loss"]
        a, b = load_weights(dirs_a[k] / "model.safetensors"), load_weights(dirs_b[k] / "model.safetensors")
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_partial_checkpoints_resume_from_common_step_and_finished_runs_are_skipped(tmp_path):
    cfg = _cfg(checkpoint_every=5)
    dirs = [tmp_path / f"m{k}" for k in range(3)]
    train_lm_batched(MODEL, cfg, _fns(), 20, dirs, SEEDS, stop_after=12, mode="batched")
    # Simulate a kill during the step-10 save: model 2 only has step 5.
    import shutil

    shutil.rmtree(dirs[2] / "checkpoint" / "step-000010")
    # Model 0 gets finished separately; the batched call must only train models 1 and 2.
    solo = train_lm(MODEL, cfg, _fns()[0], 20, dirs[0], seed=SEEDS[0])
    out = train_lm_batched(MODEL, cfg, _fns(), 20, dirs, SEEDS, mode="batched")
    assert out[0] == solo and "batched_with" not in out[0] and out[1]["batched_with"] == 2
    ref = train_lm(MODEL, cfg, _fns()[2], 20, tmp_path / "ref2", seed=SEEDS[2])
    assert out[2]["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)


def test_divergence_names_the_model(tmp_path, monkeypatch):
    real = batched.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        nll = real(*args, **kwargs)  # (K·B·T,) per-token losses of all 3 models
        if calls["n"] == 5:  # step 4: poison model 1 only
            bad = torch.ones(3, 1)
            bad[1] = float("nan")
            nll = (nll.view(3, -1) * bad).reshape(-1)
        return nll

    monkeypatch.setattr(batched.F, "cross_entropy", poisoned)
    with pytest.raises(DivergedError, match=r"m1: diverged at step 4"):
        train_lm_batched(MODEL, _cfg(), _fns(), 10, [tmp_path / f"m{k}" for k in range(3)], SEEDS, mode="batched")
    assert not any((tmp_path / f"m{k}" / "model.safetensors").exists() for k in range(3))


def test_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match="equally many"):
        train_lm_batched(MODEL, _cfg(), _fns(), 5, [tmp_path / "a"], SEEDS)
    with pytest.raises(ConfigError, match="distinct"):
        train_lm_batched(MODEL, _cfg(), _fns(), 5, [tmp_path / "a"] * 3, SEEDS)
    with pytest.raises(ConfigError, match="mode must be"):
        train_lm_batched(MODEL, _cfg(), _fns(), 5, [tmp_path / f"c{k}" for k in range(3)], SEEDS, mode="fast")


def test_sequential_mode_equals_separate_runs_and_records_the_group(tmp_path):
    cfg = _cfg(checkpoint_every=0)
    out = train_lm_batched(MODEL, cfg, _fns(), 12, [tmp_path / f"q{k}" for k in range(3)], SEEDS, mode="sequential")
    for k in range(3):
        ref = train_lm(MODEL, cfg, _fns()[k], 12, tmp_path / f"r{k}", seed=SEEDS[k])
        assert out[k]["final_loss"] == ref["final_loss"]  # the same code path: bitwise
        rec = read_json(tmp_path / f"q{k}" / "train.json")
        assert rec["train_mode"] == "single" and rec["batching"]["mode"] == "sequential"
        assert rec["group_size"] == 3
        # the group's throughput counts all three models' tokens over the group's wall time
        assert rec["group_tokens_per_s"] == pytest.approx(3 * rec["tokens"] / rec["group_wall_s"])


def test_auto_mode_measures_and_records_its_choice(tmp_path):
    n = batched.calibrate.MIN_STEPS_TO_MEASURE
    dirs = [tmp_path / f"a{k}" for k in range(3)]
    out = train_lm_batched(MODEL, _cfg(checkpoint_every=0, log_every=n), _fns(), n, dirs, SEEDS)
    for k in range(3):
        rec = read_json(tmp_path / f"a{k}" / "train.json")
        b = rec["batching"]
        assert b["reason"] == "measured" and b["K"] == 3 and b["mode"] in ("batched", "sequential")
        assert b["one_model_step_s"] > 0 and b["batched_step_s"] > 0
        assert b["mode"] == ("batched" if b["batched_speedup"] >= 1.0 else "sequential")
        assert rec["train_mode"] == ("batched" if b["mode"] == "batched" else "single")
        assert rec["precision_choice"] == {"precision": "fp32", "reason": "set in the config"}
        assert "model" in rec["cpu"] and rec["tokens_per_s"] > 0 and rec == out[k]


def test_auto_mode_does_not_measure_for_a_short_run(tmp_path):
    out = train_lm_batched(MODEL, _cfg(checkpoint_every=0), _fns(), 6, [tmp_path / f"a{k}" for k in range(3)], SEEDS)
    assert all(m["batching"]["mode"] == "batched" and "not measured" in m["batching"]["reason"] for m in out)


def test_the_stacking_probe_compares_core_seconds_at_each_ones_threads(monkeypatch):
    """One model is timed at its own thread count and the stack at the stack's; the speed-up is
    K·t_one·threads_one / (t_stack·threads_stack): 8 models at 0.1 s on 1 thread (two side by
    side on 2 cores) against a stack step of 0.5 s on both threads is 0.8, so one at a time."""
    seen: list[tuple[str, int]] = []

    def fake_medians(fns, steps=0):
        for name, fn in zip(("one", "stack"), fns):
            fn(0)
            seen.append((name, torch.get_num_threads()))
        return [0.1, 0.5]

    monkeypatch.setattr(batched.calibrate, "interleaved_medians", fake_medians)
    cfg = _cfg(checkpoint_every=0)
    before = torch.get_num_threads()
    rec = batched._measure_batching(MODEL, cfg, 8, torch.device("cpu"), None, (1, 2))
    assert seen == [("one", 1), ("stack", 2)] and torch.get_num_threads() == 1
    assert rec["batched_speedup"] == pytest.approx(0.8) and rec["mode"] == "sequential"
    assert (rec["one_model_threads"], rec["batched_threads"]) == (1, 2)
    seen.clear()
    rec = batched._measure_batching(MODEL, cfg, 8, torch.device("cpu"), None, (2, 2))
    assert rec["batched_speedup"] == pytest.approx(1.6) and rec["mode"] == "batched"
    torch.set_num_threads(before)

"""Run-start calibration: precision 'auto' on CPU and its record; kept across a resume."""
from __future__ import annotations

import pytest
import torch
from test_train_loop import MODEL, _cfg, cyclic_batches

from proxyscale.store import read_json
from proxyscale.store.layout import CALIBRATION_ENV
from proxyscale.train import calibrate
from proxyscale.train.loop import train_lm


@pytest.fixture(autouse=True)
def _no_store(monkeypatch):
    """These runs train outside any store: a store's shared records (another test's, pointed at
    by the environment) must not answer for the probes these tests fake."""
    monkeypatch.delenv(CALIBRATION_ENV, raising=False)


def test_cpu_without_fast_bf16_trains_fp32(monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: False)
    amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
    assert amp is None and rec["precision"] == "fp32" and "no fast bf16" in rec["reason"]


def test_short_runs_are_not_measured(monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: True)
    amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"), n_steps=10)
    assert amp is None and rec["precision"] == "fp32" and "not measured" in rec["reason"]


def test_explicit_precision_is_not_measured():
    amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="bf16"), torch.device("cpu"))
    assert amp is torch.bfloat16 and rec == {"precision": "bf16", "reason": "set in the config"}


def test_measured_choice_follows_its_rule(monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(calibrate, "_cache", {})
    amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
    assert rec["reason"] == "auto: measured" and rec["fp32_step_s"] > 0 and rec["bf16_step_s"] > 0
    ok = rec["bf16_speedup"] >= calibrate.BF16_MIN_SPEEDUP and rec["loss_rel_gap"] <= calibrate.BF16_LOSS_RTOL
    assert rec["precision"] == ("bf16" if ok else "fp32") and (amp is torch.bfloat16) == ok
    # bf16 autocast of a tiny model on a learnable stream: losses stay close to fp32
    assert 0 <= rec["loss_rel_gap"] < 0.05


def test_choice_is_recorded_and_kept_when_resuming(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: True)
    bf16 = {"precision": "bf16", "reason": "auto: measured", "bf16_speedup": 1.5}
    monkeypatch.setattr(calibrate, "_measure_precision", lambda *a: dict(bf16))
    monkeypatch.setattr(calibrate, "_cache", {})
    n = calibrate.MIN_STEPS_TO_MEASURE
    cfg = _cfg(precision="auto", checkpoint_every=n // 2, log_every=n)
    assert train_lm(MODEL, cfg, cyclic_batches(), n, tmp_path, seed=0, stop_after=n // 2 + 1) == {
        "stopped_at": n // 2 + 1}
    # the machine now measures otherwise; the resumed run keeps the choice its first steps used
    monkeypatch.setattr(calibrate, "_measure_precision", lambda *a: {"precision": "fp32", "reason": "auto: measured"})
    monkeypatch.setattr(calibrate, "_cache", {})
    m = train_lm(MODEL, cfg, cyclic_batches(), n, tmp_path, seed=0)
    assert m["precision_choice"] == read_json(tmp_path / "train.json")["precision_choice"]
    assert {k: m["precision_choice"][k] for k in bf16} == bf16 and m["precision_choice"]["measured"]["pid"] > 0


def test_cpu_info_lists_model_and_flags():
    calibrate.keep_freed_memory()
    info = calibrate.cpu_info()
    assert info["malloc_keeps_freed"] == calibrate.keep_freed_memory()  # recorded as applied
    assert info["model"] and isinstance(info["flags"], list) and info["threads"] >= 1
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()


def _fake_rounds(monkeypatch, rounds: list[tuple[float, float]]) -> list:
    """interleaved_times returning (fp32 s, bf16 s) per round, PROBE_STEPS pairs each; records calls."""
    calls: list = []

    def fake(fns, steps=calibrate.PROBE_STEPS, start=0, warmup=True):
        t32, t16 = rounds[len(calls)]
        calls.append((start, warmup))
        for i in range(steps + warmup):
            for fn in fns:
                fn(start + i)  # the steppers still run, so the losses are real
        return [[t32] * steps, [t16] * steps]
    monkeypatch.setattr(calibrate, "interleaved_times", fake)
    return calls


def test_a_clear_probe_is_one_round(monkeypatch):
    calls = _fake_rounds(monkeypatch, [(1.5, 1.0)])
    rec = calibrate._measure_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
    assert calls == [(0, True)] and rec["probe_rounds"] == 1 and rec["probe_steps"] == calibrate.PROBE_STEPS
    assert rec["bf16_speedup"] == 1.5


def test_a_probe_near_the_threshold_measures_a_second_round(monkeypatch):
    # first round 1.05x (could be noise either way), second 1.6x: decided on all pairs together
    calls = _fake_rounds(monkeypatch, [(1.05, 1.0), (1.6, 1.0)])
    rec = calibrate._measure_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
    assert calls == [(0, True), (calibrate.PROBE_STEPS + 1, False)]
    assert rec["probe_rounds"] == 2 and rec["probe_steps"] == 2 * calibrate.PROBE_STEPS
    assert rec["bf16_speedup"] == (1.05 + 1.6) / 2  # median of the pooled 12 pairs

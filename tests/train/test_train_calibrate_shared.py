"""Measured choices are made once per store and shared: every model of a shape gets the same one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import torch
from test_train_loop import MODEL, _cfg

from proxyscale.run.worker import execute
from proxyscale.store import Store
from proxyscale.store.layout import CALIBRATION_ENV
from proxyscale.train import calibrate


def _counting(calls: list, rec: dict, delay: float = 0.0):
    def measure() -> dict:
        calls.append(threading.get_ident())
        time.sleep(delay)
        return dict(rec)
    return measure


def test_one_measurement_per_store(tmp_path, monkeypatch):
    monkeypatch.setenv(CALIBRATION_ENV, str(tmp_path / "cal"))
    monkeypatch.setattr(calibrate, "_cache", {})
    calls: list = []
    a = calibrate.shared_choice("precision", {"shape": 1}, _counting(calls, {"precision": "bf16"}))
    monkeypatch.setattr(calibrate, "_cache", {})  # as another process would start
    b = calibrate.shared_choice("precision", {"shape": 1}, _counting(calls, {"precision": "fp32"}))
    assert len(calls) == 1 and a == b and a["precision"] == "bf16"
    # a different key is measured on its own
    c = calibrate.shared_choice("precision", {"shape": 2}, _counting(calls, {"precision": "fp32"}))
    assert len(calls) == 2 and c["precision"] == "fp32"
    files = sorted(p.name for p in (tmp_path / "cal").glob("*.json"))
    assert len(files) == 2 and all(f.startswith("precision-") for f in files)


def test_concurrent_askers_wait_for_the_first_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv(CALIBRATION_ENV, str(tmp_path / "cal"))
    monkeypatch.setattr(calibrate, "_cache", {})
    calls: list = []
    out: list = []
    measure = _counting(calls, {"mode": "batched"}, delay=0.3)
    ts = [threading.Thread(target=lambda: out.append(calibrate.shared_choice("batching", {"k": 8}, measure)))
          for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(calls) == 1 and len(out) == 3 and all(o["mode"] == "batched" for o in out)


def test_damaged_record_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv(CALIBRATION_ENV, str(tmp_path))
    monkeypatch.setattr(calibrate, "_cache", {})
    calls: list = []
    calibrate.shared_choice("precision", {"s": 1}, _counting(calls, {"precision": "fp32"}))
    (path,) = tmp_path.glob("precision-*.json")
    path.write_text("{not json")
    monkeypatch.setattr(calibrate, "_cache", {})
    rec = calibrate.shared_choice("precision", {"s": 1}, _counting(calls, {"precision": "fp32"}))
    assert len(calls) == 2 and rec["precision"] == "fp32" and json.loads(path.read_text())["key"] == {"s": 1}


def test_precision_auto_is_shared_between_processes(tmp_path):
    """Two processes choosing precision for the same shape at once: one measures, both agree."""
    log = tmp_path / "measured.txt"
    script = textwrap.dedent(f"""
        import os, sys, time, json, torch
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_train_loop import MODEL, _cfg
        from proxyscale.train import calibrate
        calibrate.cpu_has_fast_bf16 = lambda: True
        def fake(*a):
            with open({str(log)!r}, "a") as f:
                f.write(str(os.getpid()) + "\\n")
            time.sleep(0.5)
            return {{"precision": "bf16" if os.getpid() % 2 else "fp32", "reason": "auto: measured"}}
        calibrate._measure_precision = fake
        amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
        print(json.dumps(rec["precision"]))
    """)
    env = {**os.environ, CALIBRATION_ENV: str(tmp_path / "cal")}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(log.read_text().split()) == 1 and outs[0] == outs[1]


def test_worker_points_calibration_at_its_store(tmp_path, monkeypatch):
    monkeypatch.delenv(CALIBRATION_ENV, raising=False)
    store = Store(tmp_path / "store")
    seen = []
    monkeypatch.setattr("proxyscale.run.worker._execute", lambda *a: seen.append(os.environ.get(CALIBRATION_ENV)) or [])
    assert execute([], str(store.root), threads=torch.get_num_threads()) == []
    assert seen == [str(store.calibration_dir())] and store.calibration_dir() == store.root / ".calibration"
    assert CALIBRATION_ENV not in os.environ  # restored: a later store's choices are not written here


def test_precision_record_names_its_shared_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CALIBRATION_ENV, str(tmp_path))
    monkeypatch.setattr(calibrate, "_cache", {})
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(calibrate, "_measure_precision", lambda *a: {"precision": "fp32", "reason": "auto: measured"})
    amp, rec = calibrate.choose_precision(MODEL, _cfg(precision="auto"), torch.device("cpu"))
    assert amp is None and (tmp_path / rec["shared_record"]).is_file() and rec["measured"]["cpu"]

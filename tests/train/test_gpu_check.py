"""benchmarks/gpu_check.sh: its CPU dry-run path runs end to end and writes every section."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert rec["machine"]["dry_run"] is True and rec["machine"]["cpu"]["model"]
    assert rec["gpu_tests"]["skipped"] == "dry run"
    m = rec["mfu_125m"]
    assert m["params"] > 0 and m["step_s"] > 0 and 0 < m["mfu_vs_matmul"] and math.isfinite(m["achieved_tflops"])
    b = rec["batched_tiny"]
    assert b["K"] == 4 and math.isclose(b["speedup"], b["batched_tokens_per_s"] / b["one_at_a_time_tokens_per_s"],
                                        rel_tol=1e-9)
    assert rec["trak"]["finite"] and rec["trak"]["examples_per_s"] > 0 and rec["trak"]["n"] == 64
    (toy,) = rec["paper_rungs"]["rungs"]  # the paper rungs' path: micro-batches of the global batch
    assert (toy["batch"], toy["micro_batch"], toy["accumulation"], toy["steps"]) == (16, 4, 4, 3)
    from proxyscale.models.gpt import GPTConfig
    from proxyscale.models.memory import rank_memory
    assert toy["estimate_bytes"] == rank_memory(GPTConfig(128, 32, 32, 2, 2), 4, act_bytes=4).total
    assert toy["peak_bytes"] is None and toy["tokens_per_s"] > 0 and math.isfinite(toy["final_loss"])


def test_refuses_without_a_gpu_unless_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--dry-run" in r.stderr and not (tmp_path / "x.json").exists()

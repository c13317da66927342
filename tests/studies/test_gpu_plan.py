"""GPU planning of a small-to-large study: each rung's ranks and micro-batch resolved into the
steps, the paper spec planned as written and refused here for the hub and GPUs only, the
submission lines matching the Slurm backend's, and specs without `auto` keeping their keys."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_scaling_spec_cli import GOOD

from proxyscale.run.submit import slurm_command
from proxyscale.studies import load_study
from proxyscale.studies.scaling.plan import build_plan, rung_setups

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "proxyscale" / "configs"
PAPER = CONFIGS / "paper-lm.yaml"


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def paper(**gpu) -> dict:
    data = yaml.safe_load(PAPER.read_text())
    data["gpu"].update(gpu)
    return data


def test_paper_rungs_on_h100_and_l4():
    h100 = rung_setups(load_study(paper())[1])
    assert [(s.ranks, s.micro_batch, s.accumulation) for s in h100.values()] == \
        [(4, 64, 1), (4, 64, 1), (8, 32, 1), (8, 16, 2), (8, 8, 4)]
    big = h100["760M"]
    assert round(big.memory.total / 2**30, 1) == 41.2 and big.fits
    assert round(big.hours, 2) == 6.09  # 69.4 EFLOPs / (8 · 989 TFLOP/s · 0.4)
    l4 = rung_setups(load_study(paper(name="L4-24GB"))[1])["760M"]
    assert (l4.ranks, l4.micro_batch, l4.accumulation) == (8, 2, 16)


def test_resolved_choices_are_in_the_train_steps():
    plan = build_plan(load_study(paper())[1])
    step = next(s for s in plan if s.kind == "train" and s.name == "c4-760M-s0")
    assert step.config["ranks"] == 8 and step.config["train"]["micro_batch_size"] == 8
    sel = [s for s in plan if s.kind == "select_windows"]
    assert sorted(s.config["method"] for s in sel) == ["bot-dsdm", "classifier", "dsdm", "dsir"]
    assert {s.config["target"] for s in sel} == {"lambada:1000", "squad:1000"}


def test_paper_spec_plans_and_run_refuses_for_hub_and_gpus_only(tmp_path):
    r = cli("plan", str(PAPER), "--gpus", "64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "    760M    8     8     4    2.83    2.83    5.67    19.1    10.8    41.2  yes     6.09" in r.stdout
    # the path: a 125M DsDm proxy (1.32 h), DsDm scoring (75.7 h), a 760M model on its selection
    # (6.09 h on 8 ranks), its eval: 83.1 h
    assert "on 64 GPUs: about 83.1 h wall-clock" in r.stdout and "critical path (9 steps, 83.1 h" in r.stdout
    assert "dsdm_scores/125M (75.7 h) → window_train/bot-dsdm-lambada-760M-s0 (6.09 h)" in r.stdout
    assert "    train ×36: --cpus-per-task=" in r.stdout and ", 8 ranks per model" in r.stdout
    assert "GPU-h=48.7 precision=auto (not measured yet) stacking=single ranks=8 wall-h=6.09 micro_batch=8" in r.stdout
    r = cli("run", str(PAPER), "--store", str(tmp_path / "store"), cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: refusing to start: this plan needs the Hugging Face hub (6 sources and 6 "
                               "test sets stream from it; HF_HUB_OFFLINE is set)")
    if not Path("/dev/nvidiactl").exists():
        assert " and GPUs (no CUDA device here; its 175 pending steps sized for H100-80GB" in lines[0]
    assert not (tmp_path / "store").exists()


def test_submission_line_is_the_slurm_backends(tmp_path, monkeypatch):
    from proxyscale.run.backends.slurm import SlurmBackend

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    jobs = tmp_path / "runs" / "paper-lm" / "jobs"
    backend = SlurmBackend(1, jobs, ("--partition=gpu",))
    try:
        assert slurm_command(jobs, 16, ("--partition=gpu",), job="job-1") == backend.command(jobs / "job-1.json", 16)
    finally:
        backend.shutdown()
    assert slurm_command(jobs, 16, ("--partition=gpu",), job="job-1") == [
        "sbatch", "--wait", "--parsable", "--cpus-per-task=16", "--job-name=proxyscale",
        f"--output={jobs}/job-1.log", "--partition=gpu", f"{jobs}/run-job.sh", sys.executable, "-m",
        "proxyscale.run.worker", f"{jobs}/job-1.json"]


def test_specs_without_auto_keep_their_keys():
    """A spec without `auto` resolves to one rank and its own train config on every rung, so its
    steps are built exactly as before GPU planning existed (no `ranks`, no micro-batch in a key)."""
    from proxyscale.studies.fragments.gpu_plan import setups_for_steps

    spec = load_study(CONFIGS / "demo.yaml")[1]
    assert setups_for_steps(rung_setups(spec)) == {r.name: (1, spec.train) for r in spec.ladder.rungs}
    plan = build_plan(spec)
    models = [s for s in plan if s.kind in ("train", "window_train")]
    assert len(models) == 82 and not any("ranks" in s.config or "micro_batch_size" in s.config["train"]
                                         for s in models)


TINY = GOOD + "gpu: {name: toy, memory_gb: 0.01, peak_tflops: 1}\n"  # a 10 MB GPU


def test_run_refuses_a_step_that_does_not_fit_the_gpu_before_anything_runs(tmp_path):
    (tmp_path / "spec.yaml").write_text(TINY)
    r = cli("run", "spec.yaml", "--store", "st", cwd=tmp_path)
    # logits alone: 32 sequences × 128 tokens × V 512 × (2 + 12) bytes = 29,360,128 B = 0.0273 GiB
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == ""
    assert r.stderr.startswith("error: refusing to start: rung small (train/a-small-s0) needs about 0.0285 GiB per "
                               "rank at micro-batch 32 (")
    assert ("+ logits 0.0273 = 0.0285 GiB) but toy has 0.00931 GiB (0.00838 usable); set train.micro_batch_size: "
            "auto (or a smaller divisor), give the rung more ranks, or set train.activation_checkpointing: true"
            ) in r.stderr
    assert not (tmp_path / "st").exists()
    r = cli("plan", "spec.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "`proxyscale run` would refuse: rung small (train/a-small-s0)" in r.stdout
    assert "   small    1    32     1 2.24e-05 2.24e-05 4.48e-05 0.00104  0.0273  0.0285   NO" in r.stdout


MIXED = TINY.replace("gpu: {name: toy, memory_gb: 0.01, peak_tflops: 1}\n", "") \
    .replace("{name: small, d_model: 8, n_layers: 1}", "{name: small, d_model: 8, n_layers: 1, context: 32}") \
    .replace("n_layers: 1, n_heads: 2}", "n_layers: 1, n_heads: 2, context: 64}") + """
context: 32
pool: {sources: {a: 1, b: 1}, n_windows: 3000}
selections: {sel: {method: dsir, target: mixed, n_target: 10}}
"""


def test_a_pool_serves_rungs_of_different_contexts():
    """Pool windows have the longest rung context (64); the 32-token rung reads their first tokens.
    DsDm's proxies read whole windows, so a proxy rung must have the pool's context."""
    import pytest

    from proxyscale.errors import ConfigError

    plan = build_plan(load_study(yaml.safe_load(MIXED))[1])
    assert [s.config["context"] for s in plan if s.kind == "pool_windows"] == [64]
    assert sorted(s.config["model"]["context"] for s in plan if s.kind == "window_train") == [32, 64]
    dsdm = MIXED.replace("{method: dsir, target: mixed, n_target: 10}",
                         "{method: dsdm, target: mixed, proxy: small, n_target: 10}")
    with pytest.raises(ConfigError, match="selections.sel.proxy: DsDm's proxies read whole pool windows of 64 tokens"):
        load_study(yaml.safe_load(dsdm))

"""The paper-shaped part of the GPU check: the 37M and 125M rungs of configs/paper-lm.yaml at the
paper's global batch (256 sequences × the rung's context) through the micro-batch path.

For each rung the planner (``models.memory``) picks the largest micro-batch that fits the card
(H200 when the card's name says so, else H100-80GB) and gives its per-rank memory estimate;
``train_lm`` then trains 300 (37M) and 100 (125M) optimiser steps on random tokens (bf16 autocast, fused
attention, the accumulation of SPEC §10) and its record gives tokens/s and MFU. The section
reports the measured peak (``torch.cuda.max_memory_allocated``) against the estimate.
``dry=True``: the same code on the CPU with a toy rung, 3 steps, and the fp32 estimate.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from proxyscale.models.gpt import GPTConfig
from proxyscale.models.memory import GPUS, largest_micro_batch, rank_memory
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

V = 50368  # the paper spec's vocabulary
# rung -> (model, optimiser steps): a few hundred for 37M, fewer for 125M, ~3 min together on an H100
RUNGS = {"37M": (GPTConfig(V, 1024, 384, 10, 6), 300), "125M": (GPTConfig(V, 2048, 768, 12, 12), 100)}
BATCH = 256


def _gpu_type(device: torch.device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return GPUS["H200-141GB" if "H200" in name else "H100-80GB"]


def check_paper_rung(device: torch.device, name: str, cfg: GPTConfig, steps: int, batch: int) -> dict:
    """Train ``steps`` steps of ``cfg`` at ``batch`` sequences per step; measured against planned."""
    cuda = device.type == "cuda"
    micro = largest_micro_batch(cfg, batch, _gpu_type(device)) if cuda else max(1, batch // 4)
    est = rank_memory(cfg, micro, act_bytes=2 if cuda else 4)
    train = TrainConfig(batch_size=batch, micro_batch_size=micro, precision="bf16" if cuda else "fp32",
                        device=str(device), compile=cuda, checkpoint_every=0, log_every=max(1, steps // 4),
                        lr=6e-4, warmup_frac=0.02)
    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab_size, size=(4, batch, cfg.context + 1), dtype=np.int64)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        rec = train_lm(cfg, train, lambda i: data[i % 4], steps, out, seed=0)
    wall = time.perf_counter() - t0
    peak = float(torch.cuda.max_memory_allocated(device)) if cuda else None
    return {"rung": name, "params": rec["params"], "steps": steps, "batch": batch, "context": cfg.context,
            "micro_batch": micro, "accumulation": batch // micro, "wall_s": wall,
            "tokens_per_s": rec["tokens_per_s"], "mfu": rec.get("mfu"), "final_loss": rec["final_loss"],
            "estimate_bytes": est.total, "estimate": est.describe(), "peak_bytes": peak,
            "peak_over_estimate": None if peak is None else peak / est.total}


def check_paper_rungs(device: torch.device, dry: bool, scale: float = 1.0) -> dict:
    """Both rungs (or one toy rung when ``dry``); ``scale`` multiplies their step counts."""
    if dry:
        toy = GPTConfig(128, 32, 32, 2, 2)
        return {"rungs": [check_paper_rung(device, "toy", toy, 3, 16)]}
    return {"rungs": [check_paper_rung(device, n, cfg, max(1, round(steps * scale)), BATCH)
                      for n, (cfg, steps) in RUNGS.items()]}

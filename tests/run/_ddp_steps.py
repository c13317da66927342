"""Step functions of data-parallel executor tests: a step that trains a tiny GPT on 2 gloo ranks
under torchrun (importable by the spawned workers, Ray's workers and the ranks through PYTHONPATH)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from proxyscale.config import from_dict, to_dict
from proxyscale.models.gpt import GPTConfig
from proxyscale.run.ddp import launch_ranks
from proxyscale.train.distributed import FAULT_ENV, process_group
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

MODEL = GPTConfig(vocab_size=32, context=16, d_model=32, n_layers=2, n_heads=4)
TRAIN = TrainConfig(lr=3e-3, batch_size=8, checkpoint_every=2, log_every=2, warmup_frac=0.1, device="cpu",
                    precision="fp32", micro_batch_size=2)
STEPS = 6


def config(log: Path, **fault) -> dict:
    """A step config: the tiny model and schedule, the log of starts, and a fault (see :func:`rank`)."""
    return {"model": to_dict(MODEL), "train": to_dict(TRAIN), "n_steps": STEPS, "seed": 1, "log": str(log),
            **fault}


def batches(step: int) -> np.ndarray:
    """Random token rows, a different batch of 8 every step (seeded by the step)."""
    return np.random.default_rng([7, step]).integers(0, 32, size=(8, 17))


def launch(ctx) -> None:
    """The step: its training as 2 ranks on the CPU."""
    launch_ranks(ctx, rank, 2, "cpu")


def rank(ctx) -> None:
    """One rank. Rank 0 logs, at each start, the checkpoints it finds; rank 1 applies the fault:
    ``die_at`` (kill itself at that step; with ``once``, only while the marker file is absent)
    or ``raise`` (a ValueError before training)."""
    c, me = ctx.config, int(os.environ["RANK"])
    if me == 0:
        found = sorted(p.name for p in (ctx.out / "checkpoint").glob("step-*"))
        with open(c["log"], "a") as f:
            f.write(json.dumps(found) + "\n")
    if me == 1 and c.get("raise"):
        raise ValueError("planned failure in rank 1")
    if me == 1 and c.get("die_at") and not (c.get("once") and os.path.exists(c["once"])):
        if c.get("once"):
            Path(c["once"]).write_text("died once")
        os.environ[FAULT_ENV] = f"1:{c['die_at']}"
    with process_group("cpu") as ranks:
        train_lm(from_dict(GPTConfig, c["model"]), from_dict(TrainConfig, c["train"]), batches, c["n_steps"],
                 ctx.out, c["seed"], ranks=ranks)

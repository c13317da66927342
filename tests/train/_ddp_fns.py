"""Functions the data-parallel tests run in each torchrun rank (importable through PYTHONPATH)."""
from __future__ import annotations

import numpy as np

from proxyscale.config import from_dict
from proxyscale.models.gpt import GPTConfig
from proxyscale.train.distributed import process_group
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig


def batches(batch_size: int, T: int = 16, V: int = 32):
    """Random token rows, a different batch every step (seeded by the step)."""
    return lambda step: np.random.default_rng([7, step]).integers(0, V, size=(batch_size, T + 1))


def train_tiny(ctx) -> None:
    """train_lm of the model/train/n_steps/seed in ``ctx.config`` as one rank of the job."""
    c = ctx.config
    model, train = from_dict(GPTConfig, c["model"]), from_dict(TrainConfig, c["train"])
    with process_group("cpu") as ranks:
        train_lm(model, train, batches(train.batch_size), c["n_steps"], ctx.out, c["seed"], ranks=ranks,
                 stop_after=c.get("stop_after"))


def sleep_forever(ctx) -> None:
    """Join the job, say so, and wait to be stopped."""
    import time

    with process_group("cpu") as ranks:
        with open(ctx.config["marker"] + f".{ranks.rank}", "w") as f:
            f.write("up")
        while True:
            time.sleep(0.5)


def train_cuda(ctx) -> None:
    """train_tiny on CUDA (NCCL, one GPU per rank) with test_train_loop's batches."""
    from test_train_batched import _fns

    c = ctx.config
    model, train = from_dict(GPTConfig, c["model"]), from_dict(TrainConfig, c["train"])
    with process_group(train.device) as ranks:
        train_lm(model, train, _fns()[0], c["n_steps"], ctx.out, c["seed"], ranks=ranks)

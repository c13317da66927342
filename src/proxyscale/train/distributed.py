"""Data-parallel training of one model over R processes (``torch.distributed`` + DDP).

The processes are started by ``torchrun`` (``python -m torch.distributed.run``), which gives each
one ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`process_group` joins them (NCCL on CUDA, one GPU per process; gloo on CPU) and yields the
:class:`Ranks` that :func:`proxyscale.train.loop.train_lm` takes. With it, every rank builds the
same model from the same seed, reads the same global batch ``batch_fn(step)`` and keeps rows
``{i : i mod R = r}`` (SPEC §10), so the tokens of a step, their order and the result do not
depend on R; DistributedDataParallel averages the ranks' gradients, and clipping and AdamW then
run identically on every rank. Only rank 0 writes checkpoints, records and weights; a
checkpoint holds the whole model and optimiser state, so a run resumes under any R.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ConfigError
from .optim import resolve_device
from .split import check_split  # noqa: F401 - here too, beside the rank layout it guards

# "RANK:STEP": that rank kills itself (SIGKILL) when it reaches that step; tests use it to check
# that a dead rank fails the step in one line and leaves no process behind
FAULT_ENV = "PROXYSCALE_FAULT_RANK_STEP"
# seconds a rank waits for the others in a collective before giving up (default 600)
TIMEOUT_ENV = "PROXYSCALE_DDP_TIMEOUT_S"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the R data-parallel processes of one training run."""

    rank: int
    world: int
    device: torch.device

    @property
    def writer(self) -> bool:
        """Rank 0 alone writes into the run directory."""
        return self.rank == 0

    def rows(self, batch: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch: ``{i : i mod R = r}``."""
        return batch[self.rank::self.world]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` under DistributedDataParallel (gradients averaged over the ranks)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks (a new tensor on every rank)."""
        out = t.clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a small picklable value made by proxyscale itself)."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def fault(self, step: int) -> None:
        """The test hook of :data:`FAULT_ENV`."""
        if os.environ.get(FAULT_ENV) == f"{self.rank}:{step}":
            os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def process_group(device: str = "auto") -> Iterator[Ranks]:
    """Join the torchrun job of this process (environment variables as set by torchrun) and
    leave it at the end. ``device``: a TrainConfig.device; on CUDA each rank takes GPU
    ``LOCAL_RANK``."""
    import torch.distributed as dist

    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError) as e:
        raise ConfigError("not started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK unset); launch with "
                          "`python -m torch.distributed.run --nproc-per-node R ...`") from e
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=timeout)
    try:
        yield Ranks(rank, world, dev)
    finally:
        dist.destroy_process_group()

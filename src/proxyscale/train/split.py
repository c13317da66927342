"""How a global batch splits over data-parallel ranks and micro-batches: checked when a plan is
built, in a process that need not import torch (the driver), and again by each training run."""
from __future__ import annotations

from ..errors import ConfigError


def check_split(batch_size: int, world: int, micro: int) -> None:
    """Each of ``world`` ranks gets ``batch_size / world`` rows, split into passes of ``micro``."""
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} cannot be split evenly over {world} ranks; make batch_size a "
                          "multiple of the ranks or change the ranks")
    if micro and (batch_size // world) % micro:
        raise ConfigError(f"batch_size {batch_size} over {world} rank(s) is {batch_size // world} rows per rank, not "
                          f"a multiple of micro_batch_size {micro}; make batch_size a multiple of ranks × "
                          "micro_batch_size")

"""Each rung's ranks and micro-batch for the study's GPU, resolved before any step is built.

``ranks: auto`` (on a rung, or the ladder's default) and ``train.micro_batch_size: auto`` are
choices of the planner, not of the worker: the train step configs carry the resolved whole
numbers, so the keys say exactly what runs. A spec without ``auto`` resolves to what it says
(ranks 1, its micro-batch), and its keys do not change.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...errors import ConfigError
from ...models.ladder import GPTConfig
from ...models.memory import GpuType, RankMemory, choose_ranks, largest_micro_batch, rank_memory
from ...train.optim import TrainConfig


@dataclass(frozen=True)
class RungSetup:
    """How one rung's models train: GPUs per model, sequences per forward/backward pass on a
    rank, the peak memory of a rank (bf16 autocast) and the wall-clock hours of one run."""

    rung: str
    ranks: int
    micro_batch: int  # rows per pass on one rank (the rank's whole share when not split)
    memory: RankMemory
    hours: float
    gpu: GpuType
    train: TrainConfig  # the study's train config with the micro-batch the steps carry

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.gpu.usable_bytes

    @property
    def accumulation(self) -> int:
        return self.train.batch_size // (self.ranks * self.micro_batch)


def _ranks(rung: Any, ladder_ranks: Any, gpt: GPTConfig, train: TrainConfig, gpu: GpuType) -> int:
    asked = rung.ranks if rung.ranks is not None else ladder_ranks
    if asked == "auto":
        return choose_ranks(gpt, train.batch_size, gpu, checkpointing=train.activation_checkpointing)
    if train.batch_size % asked:
        raise ConfigError(f"rung '{rung.name}': ranks={asked} does not divide train.batch_size={train.batch_size}; "
                          f"every rank takes an equal share of the batch, so pick a divisor (or ranks: auto)")
    return int(asked)


def resolve_rung(rung: Any, ladder_ranks: Any, gpt: GPTConfig, train: TrainConfig, gpu: GpuType, *,
                 auto_micro_batch: bool, flops: float, mfu: float) -> RungSetup:
    """The rung's :class:`RungSetup` on ``gpu`` (``flops``: one run's training compute)."""
    ranks = _ranks(rung, ladder_ranks, gpt, train, gpu)
    rows = train.batch_size // ranks
    ckpt = train.activation_checkpointing
    if auto_micro_batch:
        micro = largest_micro_batch(gpt, rows, gpu, checkpointing=ckpt) or 1  # 1 that does not fit: refused later
        train = replace(train, micro_batch_size=micro)
    else:
        micro = train.micro_batch_size or rows
        if rows % micro:
            raise ConfigError(f"rung '{rung.name}': train.micro_batch_size={micro} does not divide a rank's share "
                              f"of the batch ({train.batch_size} / {ranks} ranks = {rows}); pick a divisor of "
                              f"{rows}, or micro_batch_size: auto")
    memory = rank_memory(gpt, micro, checkpointing=ckpt)
    hours = flops / (ranks * gpu.peak_tflops * 1e12 * mfu) / 3600.0
    return RungSetup(rung.name, ranks, micro, memory, hours, gpu, train)


def resolve_ladder(ladder: Any, vocab_size: int, context: int, train: TrainConfig, gpu: GpuType, *,
                   auto_micro_batch: bool, mfu: float, mup: bool = False) -> dict[str, RungSetup]:
    """Every rung's setup, in ladder order."""
    out = {}
    for rung in ladder.rungs:
        gpt = rung.gpt(vocab_size, context, mup)
        flops = ladder.budget(rung, vocab_size, context, train.batch_size).flops
        out[rung.name] = resolve_rung(rung, ladder.ranks, gpt, train, gpu, auto_micro_batch=auto_micro_batch,
                                      flops=flops, mfu=mfu)
    return out


def setups_for_steps(setups: dict[str, RungSetup]) -> dict[str, tuple[int, TrainConfig]]:
    """rung → (ranks, train config), what :func:`.lm_ladder.add_lm_ladder` takes."""
    return {name: (s.ranks, s.train) for name, s in setups.items()}

"""GPUs and the memory of one data-parallel rank training a GPT (SPEC §10); no torch.

**GPU table** (:data:`GPUS`): peak dense bf16 TFLOP/s and memory of the GPUs a study names in
its ``gpu:`` block; a GPU not in the table is given as ``{name, memory_gb, peak_tflops}``.
Memory is counted in decimal GB (``memory_gb · 10⁹`` bytes), the vendors' unit, which is a
little below what the devices report, and a step must fit within :data:`USABLE_FRACTION` of it
(the CUDA context, the allocator's fragmentation and NCCL buffers take the rest).

**Memory per rank** (:func:`rank_memory`), bytes, for ``P`` parameters, micro-batch ``m`` of
``T`` tokens, width ``d``, ``L`` layers, ``h`` heads, vocabulary ``V`` and activations of
``a`` bytes (2 under bf16 autocast, 4 in fp32):

- parameters ``4P`` (fp32 master weights), gradients ``4P``, AdamW's two moments ``8P``;
- activations kept for the backward pass: ``m·T·L·(34·d + 5·h·T)·a/2`` (Korthikanti et al.,
  2022, whose counts are for 2-byte activations); with a fused (flash) attention kernel the
  ``h·T²`` score matrices are never stored, leaving ``34·m·T·L·d·a/2``; with activation
  checkpointing each layer keeps only its input, ``m·T·d·a`` bytes, and one layer's full
  activations are live during its recomputation;
- logits: ``m·T·V·(a + 12)`` bytes. The loss is taken in fp32 and its backward holds, at its
  peak, the logits (``a`` bytes, still referenced by the training step), the fp32
  log-probabilities the loss saved, their gradient and the logits' fp32 gradient (``3·4``).
  SPEC §10's ``2 + 4`` counts only the first two; on CPU (fp32) the measured peaks need all four.

Measured against CPU peaks of real training steps (fp32) in ``benchmarks/bench_memory_model.py``:
measured / model 1.00–1.02 for activation- and logit-dominated shapes (docs/benchmarks.md). The
gradients' ``4P`` are counted although the training step frees them between steps: the
tied embedding's gradient exists from the first op of the backward pass, and the others
replace activations as it proceeds. The bf16 counts follow the same tensors at 2 bytes and are
not measured here (the benchmark's CUDA path does that on a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .ladder import GPTConfig, param_count

USABLE_FRACTION = 0.9  # headroom: a step must fit in 90 % of the GPU's memory
GPUS_PER_NODE = 8  # `ranks: auto` stays within one node


@dataclass(frozen=True)
class GpuType:
    """One GPU model: its name, memory (decimal GB) and peak dense bf16 TFLOP/s."""

    name: str
    memory_gb: float
    peak_tflops: float

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def usable_bytes(self) -> float:
        return USABLE_FRACTION * self.memory_bytes


GPUS: dict[str, GpuType] = {g.name: g for g in (
    GpuType("H100-80GB", 80, 989), GpuType("H200-141GB", 141, 989), GpuType("A100-40GB", 40, 312),
    GpuType("A100-80GB", 80, 312), GpuType("L4-24GB", 24, 121))}


def gpu_table() -> str:
    """The table in one line: ``H100-80GB (80 GB, 989 TFLOP/s), ...``."""
    return ", ".join(f"{g.name} ({g.memory_gb:g} GB, {g.peak_tflops:g} TFLOP/s)" for g in GPUS.values())


def lookup_gpu(name: str, memory_gb: Optional[float] = None, peak_tflops: Optional[float] = None) -> GpuType:
    """The GPU ``name`` from the table (``memory_gb`` / ``peak_tflops`` override its numbers),
    or a custom GPU when both numbers are given; else a one-line ConfigError listing the table."""
    known = GPUS.get(name)
    if known is None and (memory_gb is None or peak_tflops is None):
        raise ConfigError(f"gpu.name: unknown GPU '{name}'; name one of {gpu_table()}, or describe yours "
                          f"with gpu: {{name: ..., memory_gb: ..., peak_tflops: ...}}")
    mem = memory_gb if memory_gb is not None else known.memory_gb  # type: ignore[union-attr]
    peak = peak_tflops if peak_tflops is not None else known.peak_tflops  # type: ignore[union-attr]
    if not (mem > 0 and peak > 0):
        raise ConfigError(f"gpu '{name}': memory_gb and peak_tflops must be > 0, got {mem:g} and {peak:g}")
    return GpuType(name, float(mem), float(peak))


@dataclass(frozen=True)
class RankMemory:
    """Peak bytes of one rank, term by term."""

    params: float
    grads: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.logits

    def describe(self) -> str:
        """``params 3.04 + grads 3.04 + AdamW 6.08 + activations 41.1 + logits 6.19 = 59.5 GiB``."""
        parts = (("params", self.params), ("grads", self.grads), ("AdamW", self.optimizer),
                 ("activations", self.activations), ("logits", self.logits))
        return " + ".join(f"{n} {v / 2**30:.3g}" for n, v in parts) + f" = {self.total / 2**30:.3g} GiB"


def activation_bytes(cfg: GPTConfig, micro_batch: int, *, act_bytes: int = 2, checkpointing: bool = False,
                     fused_attention: bool = True) -> float:
    """Activations one rank keeps for the backward pass (see the module docstring)."""
    m, T, d, L, h = float(micro_batch), cfg.context, cfg.d_model, cfg.n_layers, cfg.n_heads
    per_layer = m * T * (34 * d + (0 if fused_attention else 5 * h * T)) * act_bytes / 2
    if checkpointing:
        return L * m * T * d * act_bytes + per_layer
    return L * per_layer


def logit_bytes(cfg: GPTConfig, micro_batch: int, act_bytes: int = 2) -> float:
    """The logits and what the loss keeps of them (see the module docstring)."""
    return float(micro_batch) * cfg.context * cfg.vocab_size * (act_bytes + 12)


def rank_memory(cfg: GPTConfig, micro_batch: int, *, act_bytes: int = 2, checkpointing: bool = False,
                fused_attention: bool = True) -> RankMemory:
    """Peak bytes of one data-parallel rank training ``cfg`` at ``micro_batch`` sequences per
    forward/backward pass (AdamW, fp32 master weights)."""
    p = float(param_count(cfg))
    return RankMemory(4 * p, 4 * p, 8 * p,
                      activation_bytes(cfg, micro_batch, act_bytes=act_bytes, checkpointing=checkpointing,
                                       fused_attention=fused_attention),
                      logit_bytes(cfg, micro_batch, act_bytes))


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending."""
    return [k for k in range(1, n + 1) if n % k == 0]


def largest_micro_batch(cfg: GPTConfig, rows: int, gpu: GpuType, *, checkpointing: bool = False) -> Optional[int]:
    """The largest divisor of ``rows`` (a rank's share of the batch) whose rank fits ``gpu``
    with headroom, or None when even one sequence does not."""
    fits = [m for m in divisors(rows)
            if rank_memory(cfg, m, checkpointing=checkpointing).total <= gpu.usable_bytes]
    return max(fits) if fits else None


def choose_ranks(cfg: GPTConfig, batch: int, gpu: GpuType, *, checkpointing: bool = False,
                 per_node: int = GPUS_PER_NODE) -> int:
    """GPUs per model for ``ranks: auto``: the fewest (a divisor of ``batch``, at most
    ``per_node``) at which a rank's share of the batch fits in one micro-batch, so no gradient
    is accumulated; the most allowed when none does. Data parallelism copies the whole model to
    every rank, so more ranks shorten a run but never shrink its fixed ``16·P`` bytes."""
    allowed = [r for r in divisors(batch) if r <= per_node]
    for r in allowed:
        if largest_micro_batch(cfg, batch // r, gpu, checkpointing=checkpointing) == batch // r:
            return r
    return allowed[-1]

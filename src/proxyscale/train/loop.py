"""Train one GPT language model: resumable, deterministic, typed outputs.

:func:`train_lm` writes into ``out_dir``::

    model.safetensors  model.json      final weights and their GPTConfig
    losses.npy                         the training loss of every step (float64)
    train.json                         metrics; written last, so its presence means "finished"
    snapshots/step-N.safetensors       model-only weights at TrainConfig.snapshot_steps
    checkpoint/                        while running (see checkpoint.py); removed when finished

Calling it again on the same directory resumes from the newest checkpoint and ends with the
same numbers as a run that was never stopped (bitwise on CPU); on a finished directory it just
returns the stored metrics. A non-finite loss raises :class:`DivergedError`, writes
``diverged.json`` and no model. The batch at step ``i`` is ``batch_fn(i)``: an integer array
(batch_size, T+1) whose first T columns are inputs and last T the next-token targets.
"""
from __future__ import annotations

import math
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from ..config import content_hash, to_dict
from ..errors import DataError, DivergedError, StoreError
from ..models.gpt import GPT, GPTConfig, model_config_dict, param_count
from ..models.ladder import train_flops
from ..seeding import torch_gen
from ..store import FORMAT_VERSION, read_json, save_weights, write_json, write_npy
from .calibrate import choose_precision, cpu_info, keep_freed_memory
from .checkpoint import latest_common_step, load_checkpoint, remove_checkpoints, save_checkpoint
from .optim import AdamW, TrainConfig, lr_at, param_settings, resolve_device
from .step import accumulate_step, lm_loss, train_step
from .throughput import mfu, peak_tflops, prefetched

if TYPE_CHECKING:
    from .distributed import Ranks

__all__ = ["BatchFn", "RunRecord", "lm_loss", "train_lm", "train_step"]  # lm_loss/train_step: from step.py

BatchFn = Callable[[int], np.ndarray]
_BOOKKEEPING = ("checkpoint_every", "keep_checkpoints", "log_every", "device", "compile")


def run_hash(model_cfg: GPTConfig, train_cfg: TrainConfig, n_steps: int, seed: int) -> str:
    """Hash of everything that changes the numbers (not logging/checkpoint cadence or device)."""
    train = {k: v for k, v in to_dict(train_cfg).items() if k not in _BOOKKEEPING}
    return content_hash({"model": to_dict(model_cfg), "train": train, "n_steps": n_steps, "seed": seed,
                         "format_version": FORMAT_VERSION})


def init_model(model_cfg: GPTConfig, seed: int) -> GPT:
    """The initial model of a run with root seed ``seed`` (the same in every training path)."""
    return GPT(model_cfg, generator=torch_gen(seed, "init"))


def to_batch(arr: np.ndarray, train_cfg: TrainConfig, model_cfg: GPTConfig, step: int,
             device: torch.device, ranks: Ranks | None = None, pin: bool = False) -> torch.Tensor:
    """Validate ``batch_fn``'s output and move it (this rank's rows of it) to ``device`` as
    int64 (B, T+1); ``pin``: through page-locked memory, so the copy to a GPU is asynchronous."""
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[0] != train_cfg.batch_size or not 2 <= a.shape[1] <= model_cfg.context + 1:
        raise DataError(f"batch_fn({step}) returned shape {a.shape}; expected ({train_cfg.batch_size}, T+1) "
                        f"with 1 <= T <= context {model_cfg.context}")
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= model_cfg.vocab_size:
        raise DataError(f"batch_fn({step}) must return integer token ids in [0, {model_cfg.vocab_size}); "
                        f"got dtype {a.dtype}, range [{a.min()}, {a.max()}] — check the tokenizer's vocab size")
    if ranks is not None:
        a = ranks.rows(a)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return (t.pin_memory() if pin else t).to(device, non_blocking=True)


def final_window(n_steps: int) -> int:
    """How many trailing steps ``final_loss`` averages: 5 % of the run, between 1 and 50."""
    return max(1, min(50, math.ceil(0.05 * n_steps)))


class RunRecord:
    """Bookkeeping of one run directory: losses so far, tokens, wall time, and its files."""

    def __init__(self, out_dir: Path, rhash: str, seed: int, writer: bool = True) -> None:
        self.out, self.rhash, self.seed = Path(out_dir), rhash, seed
        self.writer = writer  # False on data-parallel ranks other than 0: they write nothing
        self.losses: list[float] = []
        self.tokens = 0
        self.wall_before = 0.0
        self.precision: dict | None = None  # how precision 'auto' was resolved (kept across resumes)

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoint"

    def finished(self) -> dict | None:
        """Stored metrics if this directory holds a finished run of the same settings."""
        f = self.out / "train.json"
        if not f.is_file():
            return None
        metrics = read_json(f)
        if metrics.get("run_hash") != self.rhash:
            raise StoreError(f"{self.out}: holds a finished run with different settings "
                             f"(hash {metrics.get('run_hash')} != {self.rhash}); use a fresh directory")
        return metrics

    def restore(self, state: dict) -> None:
        self.losses = [float(v) for v in state["losses"]]
        self.tokens = int(state["tokens"])
        self.wall_before = float(state["wall_s"])
        self.precision = state.get("precision")

    def add(self, values: list[float], step0: int, lr: float, tokens: int) -> None:
        """Append per-step losses starting at step ``step0``; raise on the first non-finite one."""
        for i, v in enumerate(values):
            if not math.isfinite(v):
                self.fail(step0 + i, v, lr)
        self.losses.extend(values)
        self.tokens += tokens

    def fail(self, step: int, value: float, lr: float) -> None:
        msg = (f"diverged at step {step}: loss={value}; lower the learning rate (peak lr={lr:g}), "
               "lengthen the warm-up or tighten grad_clip")
        if self.writer:
            write_json(self.out / "diverged.json", {"format_version": FORMAT_VERSION, "step": step,
                                                     "loss": str(value), "run_hash": self.rhash, "reason": msg})
        raise DivergedError(f"{self.out}: {msg}")

    def checkpoint(self, step: int, model: dict, optim: dict, wall: float, keep: int) -> None:
        if not self.writer:
            return
        save_checkpoint(self.ckpt_root, step, model, optim, {
            "run_hash": self.rhash, "seed": self.seed, "losses": self.losses, "tokens": self.tokens,
            "wall_s": self.wall_before + wall,
            "precision": self.precision}, keep)

    def finish(self, model_cfg: GPTConfig, train_cfg: TrainConfig, weights: dict, wall: float,
               device: torch.device, extra: dict, share: int = 1) -> dict:
        """Write final weights, losses and metrics (train.json last); drop the checkpoints.

        ``share``: how many models were trained together in that wall time; ``compute_wall_s``
        charges this model its part (``wall_s`` stays the time it took)."""
        n = len(self.losses)
        P = param_count(model_cfg)
        k = final_window(n)
        edges = np.linspace(0, n, min(n, 20) + 1).astype(int)
        arr = np.asarray(self.losses, dtype=np.float64)
        metrics = {
            "format_version": FORMAT_VERSION, "run_hash": self.rhash, "seed": self.seed, "n_steps": n,
            "final_loss": float(arr[-k:].mean()), "final_loss_window": k, "initial_loss": float(arr[0]),
            "min_loss": float(arr.min()),
            "loss_curve": [{"step": int(b), "loss": float(arr[a:b].mean())} for a, b in zip(edges[:-1], edges[1:])],
            "params": P, "tokens": self.tokens, "tokens_per_param": self.tokens / P,
            "flops": train_flops(P, self.tokens), "wall_s": self.wall_before + wall,
            "compute_wall_s": (self.wall_before + wall) / share,
            "device": str(device), "model": to_dict(model_cfg), "train": to_dict(train_cfg),
            "precision_choice": self.precision, **extra,
        }
        if device.type == "cpu":
            metrics["cpu"] = cpu_info()
        if not self.writer:
            return metrics
        save_weights(self.out / "model.safetensors", weights)
        write_json(self.out / "model.json", model_config_dict(model_cfg))
        write_npy(self.out / "losses.npy", arr)
        write_json(self.out / "train.json", metrics)
        remove_checkpoints(self.ckpt_root)
        (self.out / "diverged.json").unlink(missing_ok=True)  # a stale record of an earlier attempt
        return metrics


def _checks_due(train_cfg: TrainConfig, done: int, n_steps: int) -> tuple[bool, bool]:
    """(flush losses now?, checkpoint now?) after ``done`` steps."""
    ckpt = train_cfg.checkpoint_every > 0 and done % train_cfg.checkpoint_every == 0 and done < n_steps
    flush = ckpt or done % train_cfg.log_every == 0 or done == n_steps or done in train_cfg.snapshot_steps
    return flush, ckpt


def train_lm(model_cfg: GPTConfig, train_cfg: TrainConfig, batch_fn: BatchFn, n_steps: int, out_dir: str | Path,
             seed: int, progress: Callable[[dict], None] | None = None, stop_after: int | None = None,
             ranks: Ranks | None = None) -> dict:
    """Train a GPT for ``n_steps`` AdamW steps on ``batch_fn(step)`` batches; see the module doc.

    Returns the metrics also written to ``train.json`` (final_loss, loss_curve, tokens, params,
    flops = 6·P·D, wall_s, tokens_per_s, ...). ``stop_after`` stops after that many steps
    without finishing (what a kill leaves behind) and returns ``{"stopped_at": step}``.
    ``train_cfg.micro_batch_size`` accumulates gradients over passes of that many rows;
    ``ranks`` (from :func:`.distributed.process_group`) trains data-parallel, rank 0 writing.
    """
    rec = RunRecord(Path(out_dir), run_hash(model_cfg, train_cfg, n_steps, seed), seed,
                    writer=ranks is None or ranks.writer)
    if n_steps < 1:
        raise DataError(f"n_steps must be >= 1, got {n_steps}")
    if (done := rec.finished()) is not None:
        return done
    device = ranks.device if ranks is not None else resolve_device(train_cfg.device)
    keep_freed_memory()
    model = init_model(model_cfg, seed).to(device)
    model.checkpoint_blocks = train_cfg.activation_checkpointing
    opt = AdamW(dict(model.named_parameters()), param_settings(model), train_cfg)
    start = _resume(rec, model, opt)
    amp = resolve_precision(rec, model_cfg, train_cfg, device, n_steps, ranks)
    one_step = _stepper(model, opt, train_cfg, amp, ranks)
    pending: list[torch.Tensor] = []
    tokens = call_tokens = 0
    t0 = time.perf_counter()
    with closing(_batches(batch_fn, train_cfg, model_cfg, device, ranks, start, n_steps)) as batches:
        for step, batch in zip(range(start, n_steps), batches):
            if ranks is not None:
                ranks.fault(step)
            pending.append(one_step(batch, lr_at(train_cfg, step, n_steps)))
            tokens += train_cfg.batch_size * (batch.shape[1] - 1)
            flush, ckpt = _checks_due(train_cfg, step + 1, n_steps)
            if flush:  # one device sync (and one all-reduce of the losses) per flush, not per step
                values = torch.stack(pending)
                rec.add((values if ranks is None else ranks.all_sum(values)).tolist(), step + 1 - len(pending),
                        train_cfg.lr, tokens)
                call_tokens += tokens
                pending, tokens = [], 0
                _after_flush(rec, train_cfg, step + 1, model, opt, time.perf_counter() - t0, ckpt, progress)
            if stop_after is not None and step + 1 >= stop_after and step + 1 < n_steps:
                return {"stopped_at": step + 1}
    wall = time.perf_counter() - t0
    return rec.finish(model_cfg, train_cfg, model.state_dict(), wall, device,
                      _speed(model_cfg, train_cfg, call_tokens / max(wall, 1e-9), device, ranks))


def _batches(batch_fn: BatchFn, train_cfg: TrainConfig, model_cfg: GPTConfig, device: torch.device,
             ranks: Ranks | None, start: int, stop: int) -> Iterator[torch.Tensor]:
    """The steps' batches on ``device``; on CUDA read, pinned and copied by a background thread
    while the step before trains (the same batches, in the same order)."""
    def fetch(step: int) -> torch.Tensor:
        return to_batch(batch_fn(step), train_cfg, model_cfg, step, device, ranks, pin=device.type == "cuda")

    if device.type == "cuda":
        return prefetched(fetch, start, stop)
    return (fetch(step) for step in range(start, stop))


def _speed(model_cfg: GPTConfig, train_cfg: TrainConfig, tokens_per_s: float, device: torch.device,
           ranks: Ranks | None) -> dict:
    """Throughput fields of train.json: tokens/s over all ranks and MFU (see throughput.py)."""
    world = 1 if ranks is None else ranks.world
    return {"tokens_per_s": tokens_per_s, "train_mode": "single" if ranks is None else "ddp", "ranks": world,
            "micro_batch_size": train_cfg.micro_batch_size,
            "mfu": mfu(param_count(model_cfg), tokens_per_s, peak_tflops(device), world),
            "mfu_flops": "6·params per token (no attention or recomputation FLOPs); bf16 dense peak"}


def _stepper(model: GPT, opt: AdamW, train_cfg: TrainConfig, amp: torch.dtype | None,
             ranks: Ranks | None) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``(batch, lr) -> loss``: one optimiser step, whole-batch (the original path, whose bits
    existing stores hold) or in micro-batches and/or over data-parallel ranks (SPEC §10)."""
    if ranks is None and not train_cfg.micro_batch_size:
        forward = torch.compile(model) if train_cfg.compile else model
        return lambda batch, lr: train_step(forward, opt, batch, lr, train_cfg.grad_clip, amp)
    from .split import check_split

    world = 1 if ranks is None else ranks.world
    check_split(train_cfg.batch_size, world, train_cfg.micro_batch_size)
    micro = train_cfg.micro_batch_size or train_cfg.batch_size // world
    wrapped = model if ranks is None else ranks.wrap(model)
    forward = torch.compile(wrapped) if train_cfg.compile else wrapped
    no_sync = getattr(wrapped, "no_sync", None)  # DDP: all-reduce only on the last pass
    return lambda batch, lr: accumulate_step(forward, opt, batch, lr, train_cfg.grad_clip, amp, micro,
                                             train_cfg.batch_size, world, no_sync)


def resolve_precision(rec: RunRecord, model_cfg: GPTConfig, train_cfg: TrainConfig,
                      device: torch.device, n_steps: int, ranks: Ranks | None = None) -> torch.dtype | None:
    """The run's autocast dtype: the one recorded in its checkpoint when resuming, else chosen
    now (``precision: auto`` is measured on CPU, see calibrate.py) and recorded in ``rec``;
    data-parallel ranks all take rank 0's choice."""
    if rec.precision is None:
        if ranks is None or ranks.writer:
            rec.precision = choose_precision(model_cfg, train_cfg, device, n_steps)[1]
        if ranks is not None:
            rec.precision = ranks.broadcast(rec.precision)
    return torch.bfloat16 if rec.precision["precision"] == "bf16" else None


def _resume(rec: RunRecord, model: GPT, opt: AdamW) -> int:
    """Load the newest checkpoint of ``rec`` into model and optimiser; returns its step (0: none)."""
    start = latest_common_step([rec.ckpt_root]) or 0
    if start:
        ck = load_checkpoint(rec.ckpt_root, start, rec.rhash)
        model.load_state_dict(ck.model)
        opt.load_state_tensors(ck.optim, start)
        rec.restore(ck.state)
    return start


def _after_flush(rec: RunRecord, train_cfg: TrainConfig, done: int, model: GPT, opt: AdamW, wall: float,
                 ckpt: bool, progress: Callable[[dict], None] | None) -> None:
    if done in train_cfg.snapshot_steps and rec.writer:
        save_weights(rec.out / "snapshots" / f"step-{done:06d}.safetensors", model.state_dict())
    if ckpt:
        rec.checkpoint(done, model.state_dict(), opt.state_tensors(), wall, train_cfg.keep_checkpoints)
    if progress is not None:
        k = min(train_cfg.log_every, len(rec.losses))
        progress({"step": done, "loss": float(np.mean(rec.losses[-k:])), "tokens": rec.tokens})

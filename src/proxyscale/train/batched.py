"""Train K same-shape GPTs at once (for tiny rungs, where one model cannot fill the cores).

The K models' parameters are stacked along a new leading axis (``torch.func.stack_module_state``)
and the forward pass (:func:`proxyscale.models.gpt_stack.stacked_forward`) is written on the
stacked tensors, so every matmul becomes one batched matmul and attention one fused kernel
call over K·B sequences. The loss is the *sum* of the K mean losses: the models share no
parameters, so its gradient with respect to model k's slice is exactly model k's own gradient.
Gradient clipping is per model (each model's global norm); AdamW is elementwise and runs
unchanged on the stacked tensors.

Each model behaves as if trained by :func:`proxyscale.train.train_lm` with its own seed,
batch function and directory: same initialisation, same files (and the same checkpoint format,
so either function can resume the other's run), same metrics. Results match separate runs up to
float rounding (batched and single matmuls round differently).
If any model diverges, :class:`DivergedError` names it and nothing is finished for any model.

Whether stacking wins depends on the shape and the CPU, so ``mode="auto"`` (the default) first
times a few throwaway steps of both ways (``calibrate.choose_batching``) and trains the K
models one after another with :func:`train_lm` when that is faster. Every model's
``train.json`` records the choice and its measurements (``batching``), the model's own
``tokens_per_s`` (its tokens over the wall time it was trained in) and the group's
(``group_tokens_per_s``: all K models' tokens over the group's wall time).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from ..config import to_dict
from ..errors import ConfigError, DataError
from ..models.gpt import GPTConfig
from ..models.gpt_stack import stacked_forward
from ..store import write_json
from . import calibrate
from .calibrate import choose_precision
from .checkpoint import latest_common_step, load_checkpoint
from .loop import BatchFn, RunRecord, _checks_due, init_model, resolve_precision, run_hash, to_batch, train_lm
from .optim import AdamW, TrainConfig, clip_grad_norms, lr_at, param_settings, resolve_device


class _Stack:
    """K models as stacked parameter tensors (K, ...)."""

    def __init__(self, model_cfg: GPTConfig, seeds: list[int], device: torch.device) -> None:
        models = [init_model(model_cfg, s) for s in seeds]
        params, _ = stack_module_state(models)
        self.cfg = model_cfg
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in params.items()}
        self.settings = param_settings(models[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, T, V) for inputs x (K, B, T)."""
        return stacked_forward(self.params, self.cfg, x)

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        return {n: p[k].detach() for n, p in self.params.items()}

    def optim_state(self, opt: AdamW, k: int) -> dict[str, torch.Tensor]:
        return {n: t[k] for n, t in opt.state_tensors().items()}


def _check_args(batch_fns: list, out_dirs: list, seeds: list, train_cfg: TrainConfig | None = None) -> None:
    if train_cfg is not None and (train_cfg.micro_batch_size not in (0, train_cfg.batch_size)
                                  or train_cfg.activation_checkpointing):
        raise ConfigError("stacked training runs each step's whole batch at once: set micro_batch_size: 0 and "
                          "activation_checkpointing: false, or train the models one at a time")
    if not (len(batch_fns) == len(out_dirs) == len(seeds)) or not seeds:
        raise ConfigError(f"train_lm_batched needs equally many batch_fns, out_dirs and seeds (>= 1); got "
                          f"{len(batch_fns)}, {len(out_dirs)}, {len(seeds)}")
    if len({str(Path(d).resolve()) for d in out_dirs}) != len(out_dirs):
        raise ConfigError("train_lm_batched: out_dirs must be distinct")


def _resume(stack: _Stack, opt: AdamW, recs: list[RunRecord]) -> int:
    """Load the newest step all K runs have a checkpoint for; returns it (0: start fresh)."""
    start = latest_common_step([r.ckpt_root for r in recs]) or 0
    if not start:
        return 0
    cks = [load_checkpoint(r.ckpt_root, start, r.rhash) for r in recs]
    with torch.no_grad():
        for n, p in stack.params.items():
            p.copy_(torch.stack([ck.model[n] for ck in cks]))
    opt.load_state_tensors({k: torch.stack([ck.optim[k] for ck in cks]) for k in cks[0].optim}, start)
    for r, ck in zip(recs, cks):
        r.restore(ck.state)
    return start


def _step(stack: _Stack, opt: AdamW, batch: torch.Tensor, lr: float, grad_clip: float,
          amp: torch.dtype | None) -> torch.Tensor:
    """One update of all K models on batch (K, B, T+1); returns the K losses (K,)."""
    x, y = batch[..., :-1], batch[..., 1:]  # (K, B, T)
    with torch.autocast(batch.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = stack.forward(x)  # (K, B, T, V)
    K = logits.shape[0]
    # One cross-entropy over all K models (indexing logits[k] would make autograd zero-fill a
    # full-size gradient per model); mean over each model's own tokens, as lm_loss does.
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="none")
    losses = nll.view(K, -1).mean(dim=1)  # (K,)
    losses.sum().backward()
    params = list(stack.params.values())
    clip_grad_norms([p.grad for p in params], grad_clip, batch_dims=1)
    opt.step(lr)
    for p in params:
        p.grad = None
    return losses.detach()


def train_lm_batched(model_cfg: GPTConfig, train_cfg: TrainConfig, batch_fns: list[BatchFn], n_steps: int,
                     out_dirs: list[str | Path], seeds: list[int],
                     progress: Callable[[dict], None] | None = None, stop_after: int | None = None,
                     mode: Literal["auto", "batched", "sequential"] = "auto") -> list[dict]:
    """Train K models (one per batch_fn/out_dir/seed) together; returns each one's metrics.

    Runs already finished in their directory are skipped (their stored metrics are returned);
    the rest resume from their newest common checkpoint. ``stop_after`` as in ``train_lm``.
    ``mode``: "batched" stacks them, "sequential" trains them one after another, "auto"
    measures which is faster here (see the module doc).
    """
    _check_args(batch_fns, out_dirs, seeds, train_cfg)
    if n_steps < 1:
        raise DataError(f"n_steps must be >= 1, got {n_steps}")
    recs = [RunRecord(Path(d), run_hash(model_cfg, train_cfg, n_steps, s), s) for d, s in zip(out_dirs, seeds)]
    results: list[dict | None] = [r.finished() for r in recs]
    todo = [i for i, m in enumerate(results) if m is None]
    if todo:
        calibrate.keep_freed_memory()
        choice = _choose_mode(model_cfg, train_cfg, len(todo), mode, n_steps)
        run = _train_stack if choice["mode"] == "batched" else _train_sequential
        out = run(model_cfg, train_cfg, [batch_fns[i] for i in todo], n_steps, [recs[i] for i in todo],
                  progress, stop_after, choice)
        if out is None:
            return [{"stopped_at": stop_after}] * len(recs)
        for i, m in zip(todo, out):
            results[i] = m
    return results  # type: ignore[return-value]


def _choose_mode(model_cfg: GPTConfig, train_cfg: TrainConfig, K: int, mode: str, n_steps: int) -> dict:
    if mode not in ("auto", "batched", "sequential"):
        raise ConfigError(f"train_lm_batched: mode must be 'auto', 'batched' or 'sequential', got {mode!r}")
    if mode != "auto":
        return {"mode": mode, "reason": "requested", "K": K}
    device = resolve_device(train_cfg.device)
    if n_steps < calibrate.MIN_STEPS_TO_MEASURE:  # the probes would cost more than a wrong choice
        return {"mode": "batched", "reason": f"run shorter than {calibrate.MIN_STEPS_TO_MEASURE} steps, not measured",
                "K": K}
    amp = choose_precision(model_cfg, train_cfg, device, n_steps)[0]
    rec = choose_batching(model_cfg, train_cfg, K, device, amp)
    assert rec is not None  # may_measure: always a record
    return rec


def _train_sequential(model_cfg: GPTConfig, train_cfg: TrainConfig, batch_fns: list[BatchFn], n_steps: int,
                      recs: list[RunRecord], progress: Callable[[dict], None] | None, stop_after: int | None,
                      choice: dict) -> list[dict] | None:
    """The K models one after another (when that measured faster than stacking them)."""
    t0 = time.perf_counter()
    out = [train_lm(model_cfg, train_cfg, f, n_steps, r.out, r.seed, progress, stop_after)
           for f, r in zip(batch_fns, recs)]
    if stop_after is not None and any("stopped_at" in m for m in out):
        return None
    wall = time.perf_counter() - t0
    group = {"batching": choice, "group_size": len(recs), "group_wall_s": wall,
             "group_tokens_per_s": sum(m["tokens"] for m in out) / max(wall, 1e-9)}
    for m, r in zip(out, recs):  # add the group's view to each record (train.json is rewritten atomically)
        m.update(group)
        write_json(r.out / "train.json", m)
    return out


def _train_stack(model_cfg: GPTConfig, train_cfg: TrainConfig, batch_fns: list[BatchFn], n_steps: int,
                 recs: list[RunRecord], progress: Callable[[dict], None] | None,
                 stop_after: int | None, choice: dict) -> list[dict] | None:
    device = resolve_device(train_cfg.device)
    stack = _Stack(model_cfg, [r.seed for r in recs], device)
    opt = AdamW(stack.params, stack.settings, train_cfg)
    start = _resume(stack, opt, recs)
    amp = resolve_precision(recs[0], model_cfg, train_cfg, device, n_steps)
    for r in recs[1:]:
        r.precision = recs[0].precision
    pending: list[torch.Tensor] = []
    tokens = call_tokens = 0
    t0 = time.perf_counter()
    for step in range(start, n_steps):
        batch = torch.stack([to_batch(f(step), train_cfg, model_cfg, step, device) for f in batch_fns])
        pending.append(_step(stack, opt, batch, lr_at(train_cfg, step, n_steps), train_cfg.grad_clip, amp))
        tokens += batch.shape[1] * (batch.shape[2] - 1)
        flush, ckpt = _checks_due(train_cfg, step + 1, n_steps)
        if flush:
            _flush(stack, opt, recs, train_cfg, torch.stack(pending).cpu().numpy(), step + 1, tokens,
                   time.perf_counter() - t0, ckpt, progress)
            call_tokens += tokens
            pending, tokens = [], 0
        if stop_after is not None and step + 1 >= stop_after and step + 1 < n_steps:
            return None
    wall = time.perf_counter() - t0
    extra = {"tokens_per_s": call_tokens / max(wall, 1e-9), "batched_with": len(recs), "train_mode": "batched",
             "batching": choice, "group_size": len(recs), "group_wall_s": wall,
             "group_tokens_per_s": len(recs) * call_tokens / max(wall, 1e-9)}
    return [r.finish(model_cfg, train_cfg, stack.model_state(k), wall, device, extra, share=len(recs))
            for k, r in enumerate(recs)]


def _flush(stack: _Stack, opt: AdamW, recs: list[RunRecord], train_cfg: TrainConfig, losses: np.ndarray,
           done: int, tokens: int, wall: float, ckpt: bool, progress: Callable[[dict], None] | None) -> None:
    """Record losses (steps × K) of every model, then snapshots/checkpoints/progress."""
    for k, r in enumerate(recs):
        r.add(losses[:, k].tolist(), done - losses.shape[0], train_cfg.lr, tokens)
    for k, r in enumerate(recs):
        if done in train_cfg.snapshot_steps:
            from ..store import save_weights

            save_weights(r.out / "snapshots" / f"step-{done:06d}.safetensors", stack.model_state(k))
        if ckpt:
            r.checkpoint(done, stack.model_state(k), stack.optim_state(opt, k), wall, train_cfg.keep_checkpoints)
    if progress is not None:
        k = min(train_cfg.log_every, len(recs[0].losses))
        progress({"step": done, "loss": [float(np.mean(r.losses[-k:])) for r in recs], "tokens": recs[0].tokens})


def choose_batching(model_cfg: GPTConfig, train_cfg: TrainConfig, K: int, device: torch.device,
                    amp: torch.dtype | None, may_measure: bool = True,
                    stack_threads: int | None = None) -> dict | None:
    """``{"mode": "batched" | "sequential", ...timings}`` for training K models of this shape
    (None: not measured yet and ``may_measure`` False). One model is timed at the current torch
    threads and the stack at ``stack_threads`` (default: the same), the counts each would run at."""
    if K < 2:
        return {"mode": "sequential", "reason": "one model"}
    threads = torch.get_num_threads()
    stack_threads = stack_threads or threads
    # Keyed by machine and threads: which is faster depends on them (the bits differ by rounding
    # only, and the decision is part of each train step's key, see decide_stacking).
    info = calibrate.cpu_info()
    key = {"model": to_dict(model_cfg), "batch_size": train_cfg.batch_size, "K": K, "device": str(device),
           "amp": str(amp), "threads": threads, "cpu": info["model"], "flags": info["flags"]}
    if stack_threads != threads:  # (absent when equal, so records measured before stay valid)
        key["stack_threads"] = stack_threads
    return calibrate.shared_choice(
        "batching", key, lambda: _measure_batching(model_cfg, train_cfg, K, device, amp, (threads, stack_threads)),
        may_measure)


def decide_stacking(model_cfg: GPTConfig, train_cfg: TrainConfig, n_steps: int, K: int, threads: int,
                    measure: bool, stack_threads: int | None = None) -> str:
    """Whether a group of same-shape models is trained stacked, resolved before the run's step
    keys are computed: "stacked", "single" (one model at a time, each its own step), or "auto"
    when it takes a measurement that ``measure`` (False in a dry run) forbids.

    ``train_cfg.precision`` must be resolved already. The probes run at the thread counts the
    steps will get: ``threads`` for one model alone, ``stack_threads`` (default: the same) for a
    stack of ``K`` (the plan's largest: a stacked model's bits may depend on its stack's size,
    so the plan fixes the stacks, see studies/fragments/lm_ladder.py)."""
    if K < 2:
        return "single"
    if n_steps < calibrate.MIN_STEPS_TO_MEASURE:  # the probes would cost more than a wrong choice
        return "stacked"
    if train_cfg.precision == "auto":
        return "auto"
    amp = torch.bfloat16 if train_cfg.precision == "bf16" else None
    with calibrate.torch_threads(threads):
        rec = choose_batching(model_cfg, train_cfg, K, resolve_device(train_cfg.device), amp, measure, stack_threads)
    return "auto" if rec is None else ("stacked" if rec["mode"] == "batched" else "single")


def _measure_batching(model_cfg: GPTConfig, train_cfg: TrainConfig, K: int, device: torch.device,
                      amp: torch.dtype | None, threads: tuple[int, int] | None = None) -> dict:
    """Time one model's step at ``threads[0]`` and the K-stack's at ``threads[1]``, interleaved.

    The speed-up compares core-seconds per model step, ``K·t_one·threads[0] / (t_stack·threads[1])``:
    models trained alone at fewer threads than the machine's cores run side by side, so what
    counts is the work each core does, not one step's latency."""
    t_single, t_stack = threads or (torch.get_num_threads(),) * 2
    single = calibrate._single_stepper(model_cfg, train_cfg, device, amp)
    stack = _Stack(model_cfg, list(range(K)), device)
    opt = AdamW(stack.params, stack.settings, train_cfg)

    def one(i: int) -> None:
        torch.set_num_threads(t_single)
        single(i)

    def batched(i: int) -> None:
        torch.set_num_threads(t_stack)
        _step(stack, opt, calibrate._probe_batch(model_cfg, train_cfg.batch_size, i, (K,)).to(device), train_cfg.lr,
              train_cfg.grad_clip, amp)

    try:
        t_one, t_bat = calibrate.interleaved_medians([one, batched])
    finally:
        torch.set_num_threads(t_single)
    speedup = K * t_one * t_single / (t_bat * t_stack)
    return {"mode": "batched" if speedup >= 1.0 else "sequential", "reason": "measured", "K": K,
            "one_model_step_s": t_one, "batched_step_s": t_bat, "batched_speedup": speedup,
            "one_model_threads": t_single, "batched_threads": t_stack, "probe_steps": calibrate.PROBE_STEPS}

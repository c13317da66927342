"""Resumable training checkpoints: safetensors for tensors, JSON for everything else.

Layout, inside a run directory::

    checkpoint/step-000120/model.safetensors   model weights
    checkpoint/step-000120/optim.safetensors   AdamW moments (exp_avg.*, exp_avg_sq.*)
    checkpoint/step-000120/state.json          step, run hash, per-step losses, wall time

A checkpoint is written into a hidden temporary directory and renamed into place, so a
``step-*`` directory is always complete; a killed writer leaves only a ``.tmp-*`` directory,
which is ignored and cleaned up. The newest ``keep`` checkpoints are kept (more than one, so
that K models trained together always share a complete step even if a kill lands mid-save).
Training draws no random numbers after initialisation (data order is ``batch_fn(step)``), so
the step counter is the whole RNG state.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import StoreError
from ..store import FORMAT_VERSION, load_weights, read_json, save_weights, write_json

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    step: int
    model: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]
    state: dict


def checkpoint_steps(root: Path) -> list[int]:
    """Steps of the complete checkpoints under ``root``, ascending."""
    if not root.is_dir():
        return []
    steps = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / "state.json").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def save_checkpoint(root: Path, step: int, model: dict[str, torch.Tensor], optim: dict[str, torch.Tensor],
                    state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step}-", dir=root))
    try:
        save_weights(tmp / "model.safetensors", model)
        save_weights(tmp / "optim.safetensors", optim)
        write_json(tmp / "state.json", {"format_version": FORMAT_VERSION, "step": step, **state})
        final = root / f"step-{step:06d}"
        if final.exists():  # left by a run killed between this rename and the pruning below
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_steps(root)[:-keep]:
        shutil.rmtree(root / f"step-{old:06d}", ignore_errors=True)
    for junk in root.glob(".tmp-step-*"):
        shutil.rmtree(junk, ignore_errors=True)
    return final


def load_checkpoint(root: Path, step: int, run_hash: str) -> Checkpoint:
    """Load checkpoint ``step``; refuses one written by a run with different settings."""
    d = root / f"step-{step:06d}"
    state = read_json(d / "state.json")
    if state.get("run_hash") != run_hash:
        raise StoreError(f"{d}: this checkpoint belongs to a run with different settings "
                         f"(hash {state.get('run_hash')} != {run_hash}); train into a fresh directory "
                         "or delete the old one")
    if state.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{d}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}; "
                         "delete it and retrain")
    return Checkpoint(step=int(state["step"]), model=load_weights(d / "model.safetensors"),
                      optim=load_weights(d / "optim.safetensors"), state=state)


def latest_common_step(roots: list[Path]) -> int | None:
    """The newest step for which every root has a complete checkpoint (None if there is none)."""
    common: set[int] | None = None
    for r in roots:
        s = set(checkpoint_steps(r))
        common = s if common is None else common & s
    return max(common) if common else None


def remove_checkpoints(root: Path) -> None:
    """Delete a finished run's checkpoints (the final weights live beside them)."""
    shutil.rmtree(root, ignore_errors=True)

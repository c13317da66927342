"""Step kinds: a kind binds a name to its function, its typed config and its code version.

A study (or a shared plan fragment) declares its kinds where their functions live::

    @step_kind("train", version=1, config=TrainStepConfig, batch="train_batch")
    def train_step(ctx: StepContext) -> None: ...

The plan validates every step's config against the kind's dataclass when the step is added (so a
typo anywhere in a spec fails before any step runs), the kind's version enters the step hash (so
changing one kind's code re-runs that kind and what depends on it, nothing else), and the worker
imports the function by its ``module:qualname`` reference (no central table of kinds).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import from_dict
from ..registry import Registry
from ..store import write_json
from ..store.checks import PROGRESS_FILE


@dataclass(frozen=True)
class StepKind:
    """One kind of step. ``fn``/``batch_fn`` are ``module:qualname`` references; ``config`` is a
    dataclass that validates (and types) the step's config."""

    name: str
    fn: str
    version: int = 1
    config: Optional[type] = None
    batch_fn: Optional[str] = None

    def validate(self, config: dict[str, Any], where: str) -> Any:
        """The typed config (a ConfigError naming ``where`` when it does not fit)."""
        return from_dict(self.config, config, where) if self.config is not None else config


STEP_KINDS: Registry[StepKind] = Registry("step kind")


def ref(fn: Callable) -> str:
    """The ``module:qualname`` reference a worker process imports."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(reference: str) -> Callable:
    mod, _, name = reference.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def step_kind(name: str, *, version: int = 1, config: Optional[type] = None,
              batch: Optional[str] = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as step kind ``name``. ``batch`` names a function of the
    same module that runs several steps of this kind at once (given a list of contexts)."""
    def deco(fn: Callable) -> Callable:
        batch_ref = f"{fn.__module__}:{batch}" if batch else None
        STEP_KINDS.add(name, StepKind(name, ref(fn), version, config, batch_ref))
        return fn
    return deco


@dataclass
class StepContext:
    """What a step function gets: its config (plain data, as hashed), its inputs' finished
    directories, where to write, and its threads. ``cfg`` is the config typed by its kind."""

    key: str
    kind: str
    name: str
    config: dict[str, Any]
    inputs: dict[str, Path]
    out: Path
    threads: int = 1
    config_type: Optional[type] = None
    _progress_at: float = field(default=0.0, repr=False)
    _started: Optional[tuple[float, float]] = field(default=None, repr=False)

    def progress(self, done: float, total: float, unit: str = "steps", per_unit: float = 0.0) -> None:
        """Say how far the step is (``done`` of ``total`` ``unit``; ``per_unit`` tokens each, for a
        tokens/s figure). Written at most once a second; the driver's progress bar reads it."""
        now = time.time()
        if now - self._progress_at < 1.0 and done < total:
            return
        if self._started is None:
            self._started = (now, done)
        t0, d0 = self._started
        rate = (done - d0) * per_unit / (now - t0) if now > t0 and per_unit else None
        self._progress_at = now
        write_json(self.out / PROGRESS_FILE, {"done": done, "total": total, "unit": unit, "tokens_per_s": rate})

    def tracked(self, batch_fn: Callable[[int], Any], n_steps: int, per_step_tokens: float = 0.0) -> Callable:
        """``batch_fn`` (called with the step index) that also reports progress."""
        def fn(i: int) -> Any:
            self.progress(i, n_steps, "steps", per_step_tokens)
            return batch_fn(i)
        return fn

    @cached_property
    def cfg(self) -> Any:
        if self.config_type is None:
            return self.config
        return from_dict(self.config_type, self.config, f"{self.kind}/{self.name}")

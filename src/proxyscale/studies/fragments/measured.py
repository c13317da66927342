"""Measured training choices resolved while a plan is built, so they are part of the step keys.

``precision: auto`` and whether a group of same-shape small models is stacked are decided by
timed probes (:mod:`proxyscale.train.calibrate`). Both change a model's bits, so the driver
resolves them *before* the keys are computed and writes the resolved choice into each train
step's config: a different choice is a different key, and a store's steps never mix choices.

The driver builds its plan inside :func:`measured_choices` for its store: ``proxyscale run``
may measure (once per store, under the shared calibration's lock; the records live in
``<store>/.calibration/``), while ``plan``, ``status``, ``report`` and ``verify`` only read
the records, so a store whose calibration exists resolves to the same keys on every later run.
A choice that still needs a measurement stays ``auto`` (``proxyscale plan`` says "not measured
yet"). Outside any such block only the rules that need no measurement apply (short runs: fp32,
stacked); anything else stays ``auto`` and the worker measures it as before.
"""
from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Hashable, Iterator, Optional, Sequence

from ...models.ladder import GPTConfig
from ...run.executor import available_cores, step_threads
from ...store import Store
from ...store.layout import CALIBRATION_ENV
from ...train.optim import TrainConfig


@dataclass(frozen=True)
class _Measuring:
    calibration: Optional[str]  # the store's calibration folder (None: no store, rules only)
    measure: bool  # may run probes and write records (a real run); False: read the records only


_active: ContextVar[Optional[_Measuring]] = ContextVar("proxyscale_measuring", default=None)


@contextlib.contextmanager
def _calibration_env(path: Optional[str]) -> Iterator[None]:
    before = os.environ.pop(CALIBRATION_ENV, None)
    if path is not None:
        os.environ[CALIBRATION_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(CALIBRATION_ENV, None)
        if before is not None:
            os.environ[CALIBRATION_ENV] = before


@contextlib.contextmanager
def measured_choices(store: Store, *, measure: bool) -> Iterator[None]:
    """Build plans in this block with the measured choices of ``store`` (measuring the missing
    ones only when ``measure``; a dry run reads and never writes)."""
    token = _active.set(_Measuring(str(store.calibration_dir()), measure))
    try:
        yield
    finally:
        _active.reset(token)


def stack_slots() -> int:
    """The cores a plan's stacks are sized for (:func:`proxyscale.run.executor.stack_sizes`):
    this machine's, recorded in the store's calibration by its first run, so that a store resumed
    where fewer or more cores are free keeps its stacks, hence its keys. A dry run on a store
    without the record (or no store) uses this machine's cores and writes nothing."""
    from ...train.calibrate import shared_choice

    ctx = _active.get()
    if ctx is None or ctx.calibration is None:
        return available_cores()
    with _calibration_env(ctx.calibration):
        rec = shared_choice("stack_slots", {"what": "cores the stacks of same-shape models are sized for"},
                            lambda: {"slots": available_cores()}, ctx.measure)
    return available_cores() if rec is None else int(rec["slots"])


def train_choices(model: GPTConfig, train: TrainConfig, n_steps: int, stack: int,
                  flops: float, one_step: bool = False) -> tuple[TrainConfig, str]:
    """``(train config with its precision resolved, stacking)`` for one rung's training runs.

    ``stack``: the largest stack of same-shape models (1: none); ``flops``: one run's cost. A
    model alone runs at the threads its cost gets, a stack at those of its K-fold cost
    (:func:`stack_threads`); the probes run at those counts. ``one_step``: ``flops`` is the cost
    of one step that trains all its models, stacked or not, at its threads (LM attribution).
    ``stacking`` is "stacked", "single" or "auto" (not measured yet); a precision not measured
    yet stays "auto"."""
    from ...train.batched import decide_stacking
    from ...train.calibrate import decide_precision, torch_threads

    ctx = _active.get() or _Measuring(None, measure=False)
    threads = step_threads(flops, available_cores())
    with _calibration_env(ctx.calibration), torch_threads(threads):
        resolved = replace(train, precision=decide_precision(model, train, n_steps, ctx.measure))
        stacking = decide_stacking(model, resolved, n_steps, stack, threads, ctx.measure,
                                   threads if one_step else stack_threads(flops, stack))
    return resolved, stacking


def stack_threads(flops: float, size: int) -> int:
    """Threads of a stack of ``size`` models of ``flops`` each: those of its total cost, as the
    executor gives them (:func:`proxyscale.run.executor.threads_for`)."""
    return step_threads(flops * max(1, size), available_cores())


def plan_stacks(members: Sequence[Hashable], max_batch: int,
                flops: float = 0.0) -> dict[Hashable, tuple[int, int, int]]:
    """``member -> (stack number, stack size, place in the stack)`` for a group of same-shape
    models with one budget (``flops`` each), in order. The sizes follow from the group's size,
    ``max_batch`` and the cores the store's stacks are sized for (:func:`stack_slots`), never
    from ``-j`` or from what is ready when: the executor runs each stack as one batch, and a
    resumed stack's unfinished members run together again. Stacks whose cost earns them several
    threads are sized for the fewer stacks that then run side by side. A group of one is no
    stack (``{}``)."""
    from ...run.executor import stack_sizes

    if len(members) < 2:
        return {}
    slots = stack_slots()
    sizes = stack_sizes(len(members), max_batch, slots)
    threads = stack_threads(flops, max(sizes))
    if threads > 1:
        sizes = stack_sizes(len(members), max_batch, max(1, slots // threads))
    out, i = {}, 0
    for j, size in enumerate(sizes):
        for index in range(size):
            out[members[i]] = (j, size, index)
            i += 1
    return out

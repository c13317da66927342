"""A study's wall-clock on N GPUs: list scheduling over the plan's step DAG.

Each step asks for a number of GPUs for a number of hours (a study kind says how many:
:meth:`proxyscale.studies.base.Study.step_resources`); a step asking for none (data, n-grams,
analysis) runs beside the GPU steps and is not timed. Steps start as soon as their inputs are
done and enough GPUs are free, the ready step with the longest remaining path first (ties: plan
order); a smaller ready step may start beside a larger one that has to wait. The makespan is
never below the critical path (the longest chain of dependencies, whatever N is) nor below
the total GPU-hours / N.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError
from .plan import Plan


@dataclass(frozen=True)
class Schedule:
    """When each step starts and ends (hours), the makespan and the critical path."""

    gpus: int
    start: dict[str, float]
    end: dict[str, float]
    critical_path: list[str]
    critical_hours: float
    gpu_hours: float

    @property
    def makespan(self) -> float:
        return max(self.end.values(), default=0.0)


def _bottom_levels(plan: Plan, hours: Mapping[str, float]) -> dict[str, float]:
    """Longest path (hours) from each step to the end of the plan, its own hours included."""
    deps = plan.dependents()
    level: dict[str, float] = {}
    for s in reversed(list(plan)):  # dependencies come first in a plan, so dependents are done here
        level[s.key] = hours.get(s.key, 0.0) + max((level[d] for d in deps[s.key]), default=0.0)
    return level


def critical_path(plan: Plan, hours: Mapping[str, float]) -> tuple[list[str], float]:
    """The longest chain of dependent steps by hours (first in plan order on a tie)."""
    level = _bottom_levels(plan, hours)
    deps = plan.dependents()
    order = {s.key: i for i, s in enumerate(plan)}
    roots = [s.key for s in plan if not s.inputs]
    if not roots:
        return [], 0.0
    key = max(roots, key=lambda k: (level[k], -order[k]))
    path = [key]
    while deps[key]:
        key = max(deps[key], key=lambda k: (level[k], -order[k]))
        path.append(key)
    return path, level[path[0]]


def list_schedule(plan: Plan, hours: Mapping[str, float], gpus: Mapping[str, int], n_gpus: int) -> Schedule:
    """Pack the plan's steps on ``n_gpus`` GPUs (``hours`` / ``gpus`` per step key; missing: 0)."""
    if n_gpus < 1:
        raise ConfigError(f"--gpus {n_gpus}: give a number of GPUs ≥ 1")
    too_big = [s for s in plan if gpus.get(s.key, 0) > n_gpus]
    if too_big:
        s = max(too_big, key=lambda s: gpus[s.key])
        raise ConfigError(f"--gpus {n_gpus}: step {s.kind}/{s.name} asks for {gpus[s.key]} GPUs at once; give "
                          f"--gpus {gpus[s.key]} or more (or fewer ranks for its rung)")
    level = _bottom_levels(plan, hours)
    order = {s.key: i for i, s in enumerate(plan)}
    waiting = {s.key: len(set(s.inputs.values())) for s in plan}
    deps = plan.dependents()
    ready = [k for k, n in waiting.items() if n == 0]
    running: list[tuple[float, int, str]] = []
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    free, now = n_gpus, 0.0
    while ready or running:
        ready.sort(key=lambda k: (-level[k], order[k]))
        for k in list(ready):
            if gpus.get(k, 0) <= free:
                ready.remove(k)
                free -= gpus.get(k, 0)
                start[k], end[k] = now, now + hours.get(k, 0.0)
                heapq.heappush(running, (end[k], order[k], k))
        now, _, k = heapq.heappop(running)
        free += gpus.get(k, 0)
        for d in deps[k]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    path, crit = critical_path(plan, hours)
    total = sum(hours.get(s.key, 0.0) * gpus.get(s.key, 0) for s in plan)
    return Schedule(n_gpus, start, end, path, crit, total)


def describe_schedule(plan: Plan, sched: Schedule) -> str:
    """The lines ``plan --gpus N`` prints."""
    names = {s.key: f"{s.kind}/{s.name}" for s in plan}
    timed = [k for k in sched.critical_path if sched.end[k] > sched.start[k]]
    chain = " → ".join(f"{names[k]} ({sched.end[k] - sched.start[k]:,.3g} h)" for k in timed)
    return "\n".join([
        f"on {sched.gpus} GPUs: about {sched.makespan:,.1f} h wall-clock ({sched.makespan / 24:,.1f} days); "
        f"{sched.gpu_hours:,.1f} GPU-hours in all, {sched.gpu_hours / max(sched.makespan * sched.gpus, 1e-12):.0%} "
        f"of the GPUs' time busy",
        f"lower bounds: critical path {sched.critical_hours:,.1f} h, GPU-hours / GPUs "
        f"{sched.gpu_hours / sched.gpus:,.1f} h",
        f"critical path ({len(sched.critical_path)} steps, {sched.critical_hours:,.1f} h; steps without GPUs "
        f"untimed): {chain or '-'}"])

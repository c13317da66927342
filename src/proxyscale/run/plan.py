"""A plan is a DAG of content-hashed steps.

A step's key is ``<kind>/<name>-<hash>``; the hash covers its kind, its resolved config, the keys
(hence hashes) of its inputs, the store format version and its kind's code version
(:mod:`proxyscale.run.step`), so changing one field or one kind's code re-runs only what depends
on it, and re-running a finished study is a no-op.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from ..config import content_hash
from ..errors import ConfigError
from ..store import FORMAT_VERSION
from .step import STEP_KINDS, ref

# Step names become directory names in the store: letters, digits, '-', '_', '.'; no leading '.'
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as a file name in the store, else a ConfigError saying why."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or len(name) > 200:
        raise ConfigError(f"{what} '{name}' cannot name files in the store: use letters, digits, '-', '_' and '.', "
                          "not starting with '.' (at most 200 characters)")
    return name


@dataclass(frozen=True)
class Step:
    """One unit of work. ``inputs`` maps a role name to the key of the step it reads."""

    kind: str
    name: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    batch_key: str | None = None  # steps with equal batch keys may run together in one worker
    cost: float = 1.0  # relative cost estimate, for progress and scheduling (FLOPs where known)
    info: dict[str, Any] = field(default_factory=dict)  # not hashed: what `plan` prints
    gpus: float = 0.0  # not hashed: GPUs one run of the step asks the ray backend for
    ranks: int = 1  # not hashed: processes one run of the step starts (data-parallel training)
    # Filled from the step kind when the step is added to a plan (see :meth:`Plan.add`):
    fn: str | None = None  # "module:function" the worker runs
    batch_fn: str | None = None  # "module:function" running several steps of this kind at once
    config_type: str | None = None  # "module:Class" typing the config in the worker
    version: int = 0  # the kind's code version (hashed)

    @property
    def hash(self) -> str:
        return content_hash({"kind": self.kind, "config": self.config, "inputs": self.inputs,
                             "format": FORMAT_VERSION, "code": self.version})

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}-{self.hash}"

    def to_payload(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "config": self.config, "inputs": self.inputs,
                "key": self.key, "fn": self.fn, "batch_fn": self.batch_fn, "config_type": self.config_type,
                "gpus": self.gpus, "ranks": self.ranks}


def bind(step: Step) -> Step:
    """``step`` with its kind's function, batch function, config type and code version, its
    config validated against the kind's dataclass (errors name the step)."""
    check_name(step.name, f"step {step.kind}/{step.name}: the name (from a source, distribution, test set or "
                          "study name)")
    if step.fn is not None:
        return step
    kind = STEP_KINDS.get(step.kind)
    kind.validate(step.config, f"step {step.kind}/{step.name}: config")
    return replace(step, fn=kind.fn, batch_fn=kind.batch_fn, version=kind.version,
                   config_type=ref(kind.config) if kind.config is not None else None)


class Plan:
    """Steps in insertion order (dependencies first) with lookup by key."""

    def __init__(self) -> None:
        self._steps: dict[str, Step] = {}

    def add(self, step: Step) -> str:
        """Add ``step`` (bound to its kind, its config validated) and return its key."""
        step = bind(step)
        for role, dep in step.inputs.items():
            if dep not in self._steps:
                raise ConfigError(f"step {step.kind}/{step.name}: input '{role}' refers to an unknown step {dep}")
        self._steps.setdefault(step.key, step)
        return step.key

    @classmethod
    def union(cls, plans: Iterable["Plan"]) -> "Plan":
        """One plan holding every step of ``plans``, in their order (a step they share once)."""
        out = cls()
        for plan in plans:
            for step in plan:
                out.add(step)
        return out

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps.values())

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, key: str) -> Step:
        return self._steps[key]

    def of_kind(self, kind: str) -> list[Step]:
        return [s for s in self if s.kind == kind]

    def dependents(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {k: set() for k in self._steps}
        for key, s in self._steps.items():  # the stored key: hashing a big config again costs (SPEC §9 suites)
            for dep in s.inputs.values():
                out[dep].add(key)
        return out

    def downstream(self, keys: Iterable[str]) -> set[str]:
        """All steps that (transitively) depend on ``keys``."""
        todo = list(keys)
        if not todo:  # the executor asks after every finished step, mostly with nothing failed
            return set()
        deps = self.dependents()
        seen: set[str] = set()
        while todo:
            for d in deps[todo.pop()]:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

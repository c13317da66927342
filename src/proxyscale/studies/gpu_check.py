"""Checks of a plan against the study's GPU and what this machine can reach, before any step runs.

- :func:`gpu_fit_refusal`: a pending GPT training step whose rank would not fit the named GPU
  (the memory model of :mod:`proxyscale.models.memory`, at the step's micro-batch) is refused in
  one line naming its rung, the estimate, the GPU's memory and what to change.
- :func:`availability_refusal`: a plan that streams from the Hugging Face hub where the hub
  cannot be reached is refused in one line naming it — and GPUs, when the plan also does not
  fit this CPU machine — rather than with the first error a step or a source check would meet.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from typing import Any, Iterable, Mapping, Optional

from ..models.ladder import GPTConfig
from ..models.memory import GpuType, rank_memory
from ..run.plan import Plan, Step

HUB_HOST = ("huggingface.co", 443)
GPT_KEYS = ("vocab_size", "context", "d_model", "n_layers", "n_heads")


def _gpt(step: Step) -> Optional[GPTConfig]:
    model = step.config.get("model")
    if isinstance(model, Mapping) and all(k in model for k in GPT_KEYS):
        return GPTConfig(**{k: int(model[k]) for k in GPT_KEYS})
    return None


def step_fit(step: Step, gpu: GpuType) -> Optional[str]:
    """Why one training step's rank would not fit ``gpu`` (one line), or None (fits, or not a
    GPT training step)."""
    cfg, train = _gpt(step), step.config.get("train")
    if cfg is None or not isinstance(train, Mapping) or "batch_size" not in train:
        return None
    ranks = int(step.config.get("ranks", 1))
    micro = int(train.get("micro_batch_size") or int(train["batch_size"]) // ranks)
    mem = rank_memory(cfg, micro, checkpointing=bool(train.get("activation_checkpointing", False)))
    if mem.total <= gpu.usable_bytes:
        return None
    rung = step.config.get("rung", step.name)
    return (f"rung {rung} ({step.kind}/{step.name}) needs about {mem.total / 2**30:.3g} GiB per rank at micro-batch "
            f"{micro} ({mem.describe()}) but {gpu.name} has {gpu.memory_bytes / 2**30:.3g} GiB "
            f"({gpu.usable_bytes / 2**30:.3g} usable); set train.micro_batch_size: auto (or a smaller divisor), "
            f"give the rung more ranks, or set train.activation_checkpointing: true")


def gpu_fit_refusal(pending: Iterable[Step], gpu: GpuType) -> Optional[str]:
    """The first pending step that would not fit ``gpu``, as :func:`step_fit` words it."""
    return next((why for why in (step_fit(s, gpu) for s in pending) if why), None)


def hub_steps(plan: Plan, pending: Iterable[Step]) -> tuple[list[str], list[str]]:
    """(sources, test sets) that pending steps stream from the hub."""
    sources, tests = set(), set()
    for s in pending:
        c = s.config
        if s.kind == "shard" and isinstance(c.get("spec"), Mapping) and c["spec"].get("kind") == "hf":
            sources.add(c["source"])
        elif s.kind == "testset" and c.get("hub") is not None:
            tests.add(c["name"])
    return sorted(sources), sorted(tests)


def hub_unreachable() -> Optional[str]:
    """Why the Hugging Face hub cannot be read from here, or None: the ``datasets`` extra is
    missing, ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, or huggingface.co does not
    answer a TCP connection within 3 s."""
    if importlib.util.find_spec("datasets") is None:
        return "the `datasets` extra is not installed"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    try:
        with socket.create_connection(HUB_HOST, timeout=3):
            return None
    except OSError as e:
        return f"{HUB_HOST[0]} is not reachable ({type(e).__name__})"


def availability_refusal(plan: Plan, pending: list[Step], est: Any, gpu: Optional[GpuType],
                         gpus_too: bool = True) -> Optional[str]:
    """One line naming the hub (and GPUs) a plan needs and this machine lacks, or None when its
    pending steps read no hub data or the hub can be reached (a plan too big for this machine is
    then refused by its estimate, which names it). ``est``: the plan's
    :class:`~proxyscale.studies.preflight.Estimate` here (one it refuses on a CPU machine needs
    GPUs); ``gpus_too=False`` (``--force``): the hub only."""
    sources, tests = hub_steps(plan, pending)
    why = hub_unreachable() if sources or tests else None
    if why is None:
        return None
    missing = [f"the Hugging Face hub ({len(sources)} sources and {len(tests)} test sets stream from it; {why})"]
    if gpus_too and not est.device.startswith("cuda") and est.refusal() is not None:
        sized = f" sized for {gpu.name}" if gpu is not None else ""
        missing.append(f"GPUs (no CUDA device here; its {est.n_steps} pending steps{sized} need {est.flops:.3g} "
                       f"FLOPs, beyond this CPU)")
    return (f"this plan needs {' and '.join(missing)}; run it on a GPU machine or cluster with that access "
            f"(`proxyscale plan` shows its GPUs, hours and submission)")

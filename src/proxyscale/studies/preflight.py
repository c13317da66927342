"""The whole plan is checked before any step runs: its sources can be read, and it fits the machine.

:func:`preflight` is what ``proxyscale run`` (and ``plan``, which only reports) calls after the
spec is loaded and the plan built. It

1. checks every source the pending data steps will read (:func:`proxyscale.data.checks.check_source`),
   and sizes no step could meet (:func:`check_plan_bounds`: a pool of more windows than its
   sources hold, a target part of more examples than its test set builds),
2. estimates the pending steps' compute and the peak memory of one worker (:func:`estimate`), and
3. refuses the run (``--force`` overrides) when the estimate does not fit:

   - **memory**: the peak of one worker exceeds this machine's memory (RAM, or the cgroup limit
     when lower; GPU memory on a CUDA machine);
   - **time, on CPU only**: the pending FLOPs would take more than :data:`CPU_HOURS_CEILING`
     hours at :data:`CPU_FLOPS_PER_CORE` per core. That rate is optimistic on purpose — measured
     on this project's 2-core AMD EPYC machine, a 4.2M-parameter GPT trains at 58 % of the
     55.8 GFLOP/s fp32 matmul rate, about 16 GFLOP/s per core (docs/benchmarks.md), and smaller
     models run slower — so a refused plan would take longer than the ceiling on any such CPU.
     On a CUDA machine only memory is checked.

Memory of a GPT step (fp32): weights ``4·P`` bytes, plus gradients and AdamW's two moments when
training (``16·P`` in all); activations ``24·B·T·d`` floats per layer kept for the backward
pass; logits ``B·T·V`` floats (times 4 in training: logits, their fp32 copy, log-softmax,
gradient); and, where attention runs as plain ops (batched training under vmap), ``B·h·T²``
scores per layer (times 2). Against the measured peak memory of real training steps (above an
imported torch) it is within 10 % for GPTs of 0.4M–20M parameters and about 0.1 GiB low for
the smallest, whose allocator overhead dominates (docs/reliability.md). A batched training step holds
``min(max_batch, group)`` models at once. Other steps (TRAK, selection, n-grams) are not
modelled; their memory is bounded by settings of their own.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ..errors import ConfigError, DataError
from ..models.ladder import GPTConfig, param_count
from ..models.memory import GpuType
from ..run.describe import fmt_flops
from ..run.plan import Plan, Step

CPU_FLOPS_PER_CORE = 16e9
CPU_HOURS_CEILING = 24.0
DATA_KINDS = ("tokenizer", "shard", "testset")  # the steps that read sources
GPT_KEYS = ("vocab_size", "context", "d_model", "n_layers", "n_heads")


@dataclass(frozen=True)
class Estimate:
    """What the pending steps of a plan need, and what this machine has."""

    n_steps: int
    flops: float
    peak_bytes: float
    peak_step: str
    device: str
    memory_bytes: float
    flops_per_s: Optional[float]  # assumed throughput (CPU), None on CUDA

    @property
    def hours(self) -> Optional[float]:
        return self.flops / self.flops_per_s / 3600 if self.flops_per_s else None

    def refusal(self) -> Optional[str]:
        """Why this plan should not run here, or None."""
        if self.peak_bytes > self.memory_bytes:
            return (f"step {self.peak_step} needs about {_gib(self.peak_bytes)} of memory but this machine has "
                    f"{_gib(self.memory_bytes)} ({self.device})")
        if self.hours is not None and self.hours > CPU_HOURS_CEILING:
            return (f"the {self.n_steps} pending steps need {fmt_flops(self.flops)} FLOPs, about {self.hours:,.0f} h "
                    f"on this CPU at {fmt_flops(self.flops_per_s)}FLOP/s (more than {CPU_HOURS_CEILING:g} h)")
        return None

    def describe(self) -> str:
        """The lines ``proxyscale plan`` prints."""
        time = f", about {self.hours:,.2g} h at {fmt_flops(self.flops_per_s)}FLOP/s" if self.hours is not None else ""
        peak = (f"peak memory of one worker {_gib(self.peak_bytes)} ({self.peak_step})" if self.peak_bytes else
                "no step's memory is modelled")
        return (f"resource estimate ({self.n_steps} pending steps): {fmt_flops(self.flops)} FLOPs{time}; {peak}; "
                f"this machine: {_gib(self.memory_bytes)} ({self.device})")


def _gib(n: float) -> str:
    """``n`` bytes in GiB, TiB, PiB or EiB (beyond that, in bytes)."""
    if n >= 2.0**70:
        return f"{n:.3g} bytes"
    unit, scale = next((u, s) for u, s in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30))
                       if n >= s or u == "GiB")
    return f"{n / scale:,.3g} {unit}"


def gpt_memory(model: Mapping[str, Any], batch_size: int, *, training: bool, plain_attention: bool) -> float:
    """Peak bytes of one GPT step of ``batch_size`` sequences (see the module docstring)."""
    cfg = GPTConfig(**{k: int(model[k]) for k in GPT_KEYS})
    V, T, d, L, h = cfg.vocab_size, cfg.context, cfg.d_model, cfg.n_layers, cfg.n_heads
    tokens = float(batch_size) * T
    weights = 4.0 * param_count(cfg) * (4 if training else 1)
    acts = tokens * d * 24 * 4 * (L if training else 1)
    logits = tokens * V * 4 * (4 if training else 2)
    attn = float(batch_size) * h * T * T * 4 * (2 * L if training else 2) if plain_attention else 0.0
    return weights + acts + logits + attn


def _gpt_of(step: Step) -> Optional[Mapping[str, Any]]:
    model = step.config.get("model")
    return model if isinstance(model, Mapping) and all(k in model for k in GPT_KEYS) else None


def step_memory(step: Step, plan: Plan, group: int = 1) -> float:
    """Peak bytes of one worker running ``step`` (with ``group`` batched models), 0 if not modelled."""
    model, train = _gpt_of(step), step.config.get("train")
    if model is not None and isinstance(train, Mapping) and "batch_size" in train:
        rows = int(train.get("micro_batch_size") or train["batch_size"])  # one pass holds one micro-batch
        return group * gpt_memory(model, rows, training=True, plain_attention=group > 1)
    source = plan[step.inputs["model"]] if "model" in step.inputs else None
    model = _gpt_of(source) if source is not None else None
    if model is not None and "batch_size" in step.config:
        return gpt_memory(model, int(step.config["batch_size"]), training=False, plain_attention=False)
    return 0.0


def machine(device: Optional[str] = None) -> tuple[str, float, Optional[float]]:
    """(device, memory bytes, assumed FLOP/s or None): CUDA if torch sees one, else this CPU."""
    if device is None:
        device = "cuda" if _has_cuda() else "cpu"
    if device == "cuda":
        import torch

        return "cuda", float(torch.cuda.get_device_properties(0).total_memory), None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return f"cpu, {cores} cores", _ram_bytes(), CPU_FLOPS_PER_CORE * cores


def _has_cuda() -> bool:
    """Whether torch sees a CUDA device; torch (seconds to import) is asked only when it is
    already loaded or an NVIDIA driver is present, so planning on a CPU machine stays quick."""
    if "torch" not in sys.modules and not Path("/dev/nvidiactl").exists():
        return False
    import torch

    return torch.cuda.is_available()


def _ram_bytes() -> float:
    ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:  # a container's cgroup v2 limit, when lower
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(ram, float(limit)) if limit.isdigit() else ram
    except OSError:
        return ram


def estimate(plan: Plan, pending: Iterable[Step], *, max_batch: int = 8, device: Optional[str] = None) -> Estimate:
    """Compute and peak memory of the ``pending`` steps of ``plan`` on this machine."""
    steps = list(pending)
    groups: dict[str, int] = {}
    for s in steps:
        if s.batch_key is not None:
            groups[s.batch_key] = groups.get(s.batch_key, 0) + 1
    peak, peak_step = 0.0, "-"
    for s in steps:
        m = step_memory(s, plan, min(max_batch, groups.get(s.batch_key, 1)) if s.batch_key else 1)
        if m > peak:
            peak, peak_step = m, f"{s.kind}/{s.name}"
    name, memory, rate = machine(device)
    flops = math.fsum(float(s.cost) for s in steps)
    return Estimate(len(steps), flops, peak, peak_step, name, memory, rate)


def check_plan_sources(plan: Plan, pending: Iterable[Step]) -> None:
    """Check every source that a pending data step will read (before any step runs)."""
    from ..data.checks import check_source
    from .fragments.data import source_spec

    corpus = next((s.config for s in plan if s.kind == "corpus"), {})
    seen: set[str] = set()
    for step in pending:
        if step.kind not in DATA_KINDS:
            continue
        for name, spec in sorted(_sources_of(step).items()):
            if name not in seen:
                seen.add(name)
                check_source(source_spec(name, spec), corpus, f"sources.{name}")


def check_plan_bounds(plan: Plan, pending: Iterable[Step]) -> None:
    """Refuse sizes a pending step could never meet (a ConfigError saying what to set): a pool
    of more windows than its sources hold, a target part of more examples than its test set."""
    for step in pending:
        if step.kind == "pool_windows":
            _check_pool(plan, step)
        elif step.kind == "target_part":
            _check_target(plan, step)
        elif step.kind == "testset":
            _check_titles(step)


def _check_pool(plan: Plan, step: Step) -> None:
    """Distinct windows ≤ tokens / context, and tokens ≤ 2 × text bytes (every token covers at
    least one byte; one end-of-text token per non-empty document). Bounded only when every
    source's size is known from its files (local .txt / .jsonl)."""
    from .fragments.data import source_spec

    c = step.config
    names = sorted(s for s, w in c["mixture"].items() if w > 0)
    sizes = [_text_bytes(source_spec(n, plan[step.inputs[f"shard:{n}"]].config["spec"])) for n in names]
    if any(b is None for b in sizes):
        return
    total = sum(b for b in sizes if b is not None)
    most = 2 * total // int(c["context"]) + 1
    if int(c["n_windows"]) > most:
        raise ConfigError(f"pool.n_windows={int(c['n_windows']):,}: the pool's sources ({', '.join(names)}) hold "
                          f"{total:,} bytes of text, at most {most:,} windows of {c['context']} tokens; set "
                          f"pool.n_windows to at most {most:,} (or add sources)")


def _text_bytes(spec: Any) -> Optional[int]:
    """Bytes of a local source's .txt/.jsonl files (None: unknown without building it)."""
    from ..data.sources import local_files

    if spec.kind != "local":
        return None
    files = [p for p, _ in local_files(spec)]
    if any(p.suffix == ".parquet" for p in files):
        return None  # compressed: its file size does not bound its text
    return sum(p.stat().st_size for p in files)


def _check_target(plan: Plan, step: Step) -> None:
    """``target_part`` needs ``n_target`` + 2 examples of its test set (which builds at most
    ``n_examples``)."""
    c, ts = step.config, plan[step.inputs["testset"]].config
    need, most = int(c["n_target"]) + 2, int(ts["n_examples"])
    if need > most:
        raise ConfigError(f"n_target={c['n_target']:,}: the target set '{ts['name']}' builds at most {most:,} examples "
                          f"and {need:,} are needed (n_target + 2 holdout); lower n_target to at most "
                          f"{max(most - 2, 0):,} or raise that test set's n_examples")


def _titled(spec: Any) -> bool:
    """Whether a source's documents can carry titles: an embedded dictionary domain, or a
    ``title_field`` named in the spec."""
    from ..data.corpus import ALL_DOMAINS

    if spec.kind == "embedded":
        recipe = ALL_DOMAINS.get(spec.domain)
        return bool(recipe and recipe.titled)
    return spec.title_field is not None


def _check_titles(step: Step) -> None:
    """A ``qa`` test set asks "Term: <title>" of dictionary entries: one whose sources can carry
    no title would build no example, and fail only in its worker."""
    from .fragments.data import source_spec

    c = step.config
    if c.get("kind") != "qa" or c.get("hub") is not None:
        return
    specs = {n: source_spec(n, raw) for n, raw in sorted(c.get("source_specs", {}).items())}
    if specs and not any(_titled(s) for s in specs.values()):
        raise ConfigError(f"test set '{c['name']}' is kind qa (\"Term: <title>\" of dictionary entries), but its "
                          f"sources ({', '.join(specs)}) have no titles; use an embedded 'dictionary' or 'computing' "
                          "domain, set title_field on a source, or choose another kind (lm, cloze)")


def _sources_of(step: Step) -> Mapping[str, Any]:
    c = step.config
    if step.kind == "shard":
        return {c["source"]: c["spec"]}
    return c.get("sources" if step.kind == "tokenizer" else "source_specs", {})


def pending_steps(plan: Plan, store: Any = None) -> list[Step]:
    return [s for s in plan if store is None or not store.is_done(s.key)]


def preflight(plan: Plan, store: Any = None, *, max_batch: int = 8, force: bool = False,
              device: Optional[str] = None, gpu: Optional[GpuType] = None) -> Estimate:
    """What ``run`` does before any step: refuse a step that would not fit the study's ``gpu``
    and a plan needing the hub or GPUs this machine lacks (:mod:`.gpu_check`; ``force``
    overrides the GPU parts, not the hub), check the sources (a DataError, whatever ``force``
    says) and the resource estimate of the steps not yet done in ``store`` (a ConfigError with
    the estimate when the plan does not fit, unless ``force``)."""
    from .gpu_check import availability_refusal, gpu_fit_refusal

    pending = pending_steps(plan, store)
    why = gpu_fit_refusal(pending, gpu) if gpu is not None and not force else None
    if why:
        raise ConfigError(f"refusing to start: {why}")
    est = estimate(plan, pending, max_batch=max_batch, device=device)
    why = availability_refusal(plan, pending, est, gpu, gpus_too=not force)
    if why:
        raise ConfigError(f"refusing to start: {why}")
    check_plan_sources(plan, pending)
    check_plan_bounds(plan, pending)
    why = est.refusal()
    if why and not force:
        raise ConfigError(f"refusing to start: {why}; shrink the study or pass --force to run anyway")
    return est


def preflight_text(plan: Plan, store: Any = None, *, max_batch: int = 8, device: Optional[str] = None,
                   gpu: Optional[GpuType] = None) -> str:
    """What ``plan`` prints: the estimate, and whether ``run`` would start or why it would refuse
    (a dry run reports a bad source here rather than failing, so that a study whose data is yet
    to be made can still be planned). The hub is not contacted: a plan reading it says so."""
    from .gpu_check import gpu_fit_refusal, hub_steps

    pending = pending_steps(plan, store)
    est = estimate(plan, pending, max_batch=max_batch, device=device)
    why = gpu_fit_refusal(pending, gpu) if gpu is not None else None
    if why:
        return f"{est.describe()}\n`proxyscale run` would refuse: {why}"
    sources, tests = hub_steps(plan, pending)
    if sources or tests:  # not contacted here: `run` refuses where the hub cannot be reached
        needs = [f"the Hugging Face hub ({len(sources)} sources, {len(tests)} test sets)"]
        needs += ["GPUs (it does not fit this CPU machine)"] if est.refusal() and not est.device.startswith("cuda") \
            else []
        return (f"{est.describe()}\n`proxyscale run` needs {' and '.join(needs)}; it refuses where they are "
                "missing")
    try:
        check_plan_sources(plan, pending)
        check_plan_bounds(plan, pending)
    except (DataError, ConfigError) as e:
        return f"{est.describe()}\n`proxyscale run` would refuse: {e}"
    why = est.refusal()
    verdict = f"`proxyscale run` would refuse: {why}; pass --force to run anyway" if why else \
        "`proxyscale run` would start: the sources are readable and the estimate fits this machine"
    return f"{est.describe()}\n{verdict}"

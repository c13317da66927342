"""The GPU side of ``proxyscale plan`` for a small-to-large study: each rung's GPUs per model,
micro-batch, memory per rank (term by term) and wall-clock hours, and each step's GPUs and
hours for the study's schedule on N GPUs (:mod:`proxyscale.run.schedule`)."""
from __future__ import annotations

from ...run.plan import Plan
from .plan import rung_setups
from .spec import StudySpec

GPU_KINDS = ("train", "window_train", "eval", "dsdm_scores")  # the steps that run on GPUs


def rung_lines(spec: StudySpec) -> list[str]:
    """The per-rung table: ranks, micro-batch, accumulation, memory per rank, fit, hours."""
    gpu = spec.gpu.type
    lines = [f"per rank on {gpu.name} ({gpu.memory_gb:g} GB = {gpu.memory_bytes / 2**30:.1f} GiB, "
             f"{gpu.usable_bytes / 2**30:.1f} GiB usable; bf16 autocast, fp32 master weights + AdamW, fused "
             f"attention{', activation checkpointing' if spec.train.activation_checkpointing else ''}):",
             f"  {'rung':>6} {'GPUs':>4} {'micro':>5} {'accum':>5} {'params':>7} {'grads':>7} {'AdamW':>7} "
             f"{'activ.':>7} {'logits':>7} {'total':>7} {'fits':>4} {'h/run':>8}"]
    for s in rung_setups(spec).values():
        m = s.memory
        gib = [f"{v / 2**30:>7.3g}" for v in (m.params, m.grads, m.optimizer, m.activations, m.logits, m.total)]
        lines.append(f"  {s.rung:>6} {s.ranks:>4} {s.micro_batch:>5} {s.accumulation:>5} {' '.join(gib)} "
                     f"{'yes' if s.fits else 'NO':>4} {s.hours:>8.3g}")
    lines.append("  (GiB per rank; h/run: wall-clock of one model on its GPUs = FLOPs / (GPUs · peak · MFU))")
    return lines


def step_resources(spec: StudySpec, plan: Plan) -> tuple[dict[str, float], dict[str, int]]:
    """(hours, GPUs) of each GPU step: a train step on its ranks, every other GPU step on one;
    hours = FLOPs / (GPUs · peak · MFU). Other steps ask for no GPU."""
    rate = spec.gpu.type.peak_tflops * 1e12 * spec.gpu.mfu * 3600.0
    hours, gpus = {}, {}
    for s in plan:
        if s.kind in GPU_KINDS:
            gpus[s.key] = int(s.config.get("ranks", 1))
            hours[s.key] = s.cost / (gpus[s.key] * rate)
    return hours, gpus

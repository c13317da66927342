"""``proxyscale plan`` for a small-to-large study: every step with its budget, then the ladder
table with compute ratios and GPU-hours."""
from __future__ import annotations

from collections import Counter

from ...run.describe import fmt_flops as _fmt
from ...run.plan import Plan
from ...store import Store
from .gpus import rung_lines
from .plan import rung_budget
from .spec import StudySpec


def gpu_hours(spec: StudySpec, flops: float) -> float:
    return flops / (spec.gpu.type.peak_tflops * 1e12 * spec.gpu.mfu) / 3600.0


def ladder_table(spec: StudySpec) -> list[dict]:
    """One row per rung: params, tokens, FLOPs, compute ratio to the reference, GPU-hours per run."""
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    n_dists = len(spec.distributions) + len(spec.selections)
    rows = []
    for r in spec.ladder.rungs:
        b = rung_budget(spec, r)
        rows.append({"rung": r.name, "d_model": r.d_model, "n_layers": r.n_layers, **b.as_dict(),
                     "ratio": ref.flops / b.flops, "runs": len(spec.ladder.seeds(r)) * n_dists,
                     "gpu_h_per_run": gpu_hours(spec, b.flops)})
    return rows


def _choice(value: str) -> str:
    """A measured training choice as the plan shows it (see studies/fragments/measured.py)."""
    return "auto (not measured yet)" if value == "auto" else value


def describe_plan(spec: StudySpec, plan: Plan, store: Store | None = None) -> str:
    """Every step with its parameters, tokens, FLOPs and estimated GPU-hours; then the totals."""
    lines = [f"study '{spec.name}': {len(plan)} steps "
             f"({', '.join(f'{n} {k}' for k, n in Counter(s.kind for s in plan).items())})", ""]
    for s in plan:
        state = f"[{store.state(s.key)}] " if store is not None else ""
        extra = ""
        if s.kind == "train":
            i, ranks, gpu_h = s.info, s.config.get("ranks", 1), gpu_hours(spec, s.info["flops"])
            extra = (f"  params={i['params']:,} tokens={i['tokens']:,} steps={i['n_steps']:,} "
                     f"FLOPs={_fmt(i['flops'])} GPU-h={gpu_h:.3g}"
                     f" precision={_choice(s.config['train']['precision'])}"
                     f" stacking={_choice(s.config.get('stacking', 'single'))}"
                     f" ranks={ranks} wall-h={gpu_h / ranks:.3g}"
                     f" micro_batch={s.config['train'].get('micro_batch_size') or 'all'}")
        lines.append(f"  {state}{s.key}{extra}")
    rows = ladder_table(spec)
    total = sum(r["flops"] * r["runs"] for r in rows)
    ref = next(r for r in rows if r["rung"] == spec.ladder.reference)
    lines += ["", f"ladder (tokens/param = {spec.ladder.tokens_per_param:g}; GPU-hours at "
              f"{spec.gpu.mfu:.0%} MFU of {spec.gpu.type.peak_tflops:g} TFLOP/s, {spec.gpu.name}):",
              f"  {'rung':>10} {'params':>14} {'tokens':>16} {'FLOPs/run':>10} {'runs':>5} "
              f"{'GPU-h/run':>10} {'ref/proxy':>10} {'saved':>8}"]
    for r in rows:
        saved = 1 - 1 / r["ratio"] if r["rung"] != ref["rung"] else 0.0
        lines.append(f"  {r['rung']:>10} {r['params']:>14,} {r['tokens']:>16,} {_fmt(r['flops']):>10} "
                     f"{r['runs']:>5} {r['gpu_h_per_run']:>10.3g} {r['ratio']:>9.1f}x {saved:>8.2%}")
    lines += ["", *rung_lines(spec)]
    lines += ["", f"total training compute: {_fmt(total)} FLOPs = {gpu_hours(spec, total):,.1f} GPU-hours",
              f"reference runs alone: {_fmt(ref['flops'] * ref['runs'])} FLOPs = "
              f"{gpu_hours(spec, ref['flops'] * ref['runs']):,.1f} GPU-hours; each proxy rung saves "
              "the fraction shown of the reference's compute per distribution"]
    return "\n".join(lines)

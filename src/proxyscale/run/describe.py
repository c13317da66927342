"""Text for ``proxyscale plan`` (a dry run) and ``proxyscale status``."""
from __future__ import annotations

from collections import Counter

from ..store import Store
from .plan import Plan
from .spec import StudySpec
from .study import rung_budget


def _fmt(x: float) -> str:
    for unit, scale in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def gpu_hours(spec: StudySpec, flops: float) -> float:
    return flops / (spec.gpu.peak_tflops * 1e12 * spec.gpu.mfu) / 3600.0


def ladder_table(spec: StudySpec) -> list[dict]:
    """One row per rung: params, tokens, FLOPs, compute ratio to the reference, GPU-hours per run."""
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    rows = []
    for r in spec.ladder.rungs:
        b = rung_budget(spec, r)
        seeds = spec.ladder.reference_seeds if r.name == spec.ladder.reference else spec.ladder.proxy_seeds
        rows.append({"rung": r.name, "d_model": r.d_model, "n_layers": r.n_layers, **b,
                     "ratio": ref["flops"] / b["flops"], "runs": len(seeds) * len(spec.distributions),
                     "gpu_h_per_run": gpu_hours(spec, b["flops"])})
    return rows


def describe_plan(spec: StudySpec, plan: Plan, store: Store | None = None) -> str:
    """Every step with its parameters, tokens, FLOPs and estimated GPU-hours; then the totals."""
    lines = [f"study '{spec.name}': {len(plan)} steps "
             f"({', '.join(f'{n} {k}' for k, n in Counter(s.kind for s in plan).items())})", ""]
    for s in plan:
        state = f"[{store.state(s.key)}] " if store is not None else ""
        extra = ""
        if s.kind == "train":
            i = s.info
            extra = (f"  params={i['params']:,} tokens={i['tokens']:,} steps={i['n_steps']:,} "
                     f"FLOPs={_fmt(i['flops'])} GPU-h={gpu_hours(spec, i['flops']):.3g}")
        lines.append(f"  {state}{s.key}{extra}")
    rows = ladder_table(spec)
    total = sum(r["flops"] * r["runs"] for r in rows)
    ref = next(r for r in rows if r["rung"] == spec.ladder.reference)
    lines += ["", f"ladder (tokens/param = {spec.ladder.tokens_per_param:g}; GPU-hours at "
              f"{spec.gpu.mfu:.0%} MFU of {spec.gpu.peak_tflops:g} TFLOP/s, {spec.gpu.name}):",
              f"  {'rung':>10} {'params':>14} {'tokens':>16} {'FLOPs/run':>10} {'runs':>5} "
              f"{'GPU-h/run':>10} {'ref/proxy':>10} {'saved':>8}"]
    for r in rows:
        saved = 1 - 1 / r["ratio"] if r["rung"] != ref["rung"] else 0.0
        lines.append(f"  {r['rung']:>10} {r['params']:>14,} {r['tokens']:>16,} {_fmt(r['flops']):>10} "
                     f"{r['runs']:>5} {r['gpu_h_per_run']:>10.3g} {r['ratio']:>9.1f}x {saved:>8.2%}")
    lines += ["", f"total training compute: {_fmt(total)} FLOPs = {gpu_hours(spec, total):,.1f} GPU-hours",
              f"reference runs alone: {_fmt(ref['flops'] * ref['runs'])} FLOPs = "
              f"{gpu_hours(spec, ref['flops'] * ref['runs']):,.1f} GPU-hours; each proxy rung saves "
              "the fraction shown of the reference's compute per distribution"]
    return "\n".join(lines)


def describe_status(plan: Plan, store: Store) -> tuple[str, Counter]:
    """Per-kind counts of done / running / failed / pending steps, and the failures' reasons."""
    states = {s.key: store.state(s.key) for s in plan}
    by_kind: dict[str, Counter] = {}
    for s in plan:
        by_kind.setdefault(s.kind, Counter())[states[s.key]] += 1
    total = Counter(states.values())
    lines = [f"{'kind':>10} {'done':>6} {'running':>8} {'failed':>7} {'pending':>8}"]
    for kind, c in by_kind.items():
        lines.append(f"{kind:>10} {c['done']:>6} {c['running']:>8} {c['failed']:>7} {c['pending']:>8}")
    lines.append(f"{'all':>10} {total['done']:>6} {total['running']:>8} {total['failed']:>7} {total['pending']:>8}")
    for k, st in states.items():
        if st == "failed":
            f = store.failure(k) or {}
            lines.append(f"failed: {k}: {f.get('reason', '?')}")
    return "\n".join(lines), total

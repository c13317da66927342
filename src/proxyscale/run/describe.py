"""Text for ``proxyscale plan`` (a dry run) and ``proxyscale status``, for any study's plan."""
from __future__ import annotations

from collections import Counter

from ..store import Store
from .plan import Plan


def fmt_flops(x: float) -> str:
    for unit, scale in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def describe_steps(title: str, plan: Plan, store: Store | None = None) -> str:
    """A plan's header line and one line per step (with its state in ``store``, if given)."""
    lines = [f"{title}: {len(plan)} steps "
             f"({', '.join(f'{n} {k}' for k, n in Counter(s.kind for s in plan).items())})", ""]
    for s in plan:
        state = f"[{store.state(s.key)}] " if store is not None else ""
        lines.append(f"  {state}{s.key}  cost≈{s.cost:.3g} FLOPs")
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

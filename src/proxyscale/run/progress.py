"""The driver's progress bar: FLOPs done over the plan's FLOPs, with what the running steps
report of themselves."""
from __future__ import annotations

import sys

from ..store import Store, read_json
from ..store.checks import PROGRESS_FILE
from .plan import Plan, Step


class Progress:
    """A tqdm bar in FLOPs: finished steps count their cost, running ones the share they report
    (``StepContext.progress``), so the ETA is the plan's remaining FLOPs over the measured rate."""

    def __init__(self, plan: Plan, todo: set[str], enabled: bool) -> None:
        self.bar, self.done_cost, self.postfix = None, 0.0, ""
        if enabled and todo:
            from tqdm import tqdm

            total = sum(plan[k].cost for k in todo)
            self.bar = tqdm(total=total, unit="FLOP", unit_scale=True, smoothing=0, desc=f"{len(todo)} steps",
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def grow(self, cost: float) -> None:
        if self.bar is not None:
            self.bar.total += cost

    def update(self, step: Step, state: str, n_done: int, n_todo: int) -> None:
        self.done_cost += step.cost
        self.postfix = f"{n_done}/{n_todo} {step.kind}/{step.name} {state}"
        self._move(self.done_cost)

    def tick(self, running: list[Step], store: Store) -> None:
        """Fold in how far the running steps say they are."""
        if self.bar is None:
            return
        partial, lines = 0.0, []
        for step in running:
            try:
                p = read_json(store.partial_dir(step.key) / PROGRESS_FILE)
                frac = min(1.0, max(0.0, p["done"] / p["total"])) if p["total"] else 0.0
            except (OSError, ValueError, KeyError, TypeError):
                continue
            partial += step.cost * frac
            rate = f" {p['tokens_per_s'] / 1e3:.0f}k tok/s" if p.get("tokens_per_s") else ""
            lines.append(f"{step.name} {100 * frac:.0f}%{rate}")
        self._move(self.done_cost + partial, "; ".join(lines[:2]))

    def _move(self, n: float, running: str = "") -> None:
        if self.bar is not None:
            self.bar.update(max(0.0, n - self.bar.n))
            self.bar.set_postfix_str(self.postfix + (f" | {running}" if running else ""))

    def note(self, line: str) -> None:
        """A one-line message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

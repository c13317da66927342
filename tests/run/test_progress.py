"""Progress from inside steps: a running step's share moves the bar, so its ETA is FLOPs over rate."""
from __future__ import annotations

from proxyscale.run.plan import Plan, Step
from proxyscale.run.progress import Progress
from proxyscale.run.step import StepContext
from proxyscale.store import Store, read_json


def test_a_running_step_reports_its_share_and_rate(tmp_path):
    plan = Plan()
    a = plan.add(Step("t", "a", {}, cost=100.0, fn="m:f"))
    b = plan.add(Step("t", "b", {}, cost=300.0, fn="m:f"))
    store = Store(tmp_path)
    ctx = StepContext(b, "t", "b", {}, {}, store.partial_dir(b))
    ctx.out.mkdir(parents=True)
    fn = ctx.tracked(lambda i: i * 2, n_steps=4, per_step_tokens=1000)
    assert [fn(i) for i in range(2)] == [0, 2]  # batches pass through unchanged
    first = read_json(ctx.out / "_progress.json")
    assert first["done"] == 0 and first["total"] == 4 and first["tokens_per_s"] is None
    ctx._progress_at = 0.0  # let the next report through (they are at most one a second)
    fn(3)
    assert read_json(ctx.out / "_progress.json")["done"] == 3
    assert read_json(ctx.out / "_progress.json")["tokens_per_s"] > 0

    bar = Progress(plan, {a, b}, enabled=True)
    bar.update(plan[a], "done", 1, 2)
    bar.tick([plan[b]], store)
    assert bar.bar.n == 100 + 300 * 3 / 4
    assert "b 75%" in bar.bar.postfix and "tok/s" in bar.bar.postfix
    bar.close()

"""The Study protocol: a third study kind defined here, in the test module (no library file
edited), registered, and run end to end through the executor (spawned workers) into a report;
per-kind code versions; typed step configs that fail at plan time."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from proxyscale import api
from proxyscale.errors import ConfigError
from proxyscale.report.section import Section
from proxyscale.run.executor import ExecutorSpec
from proxyscale.run.plan import Plan, Step
from proxyscale.run.step import STEP_KINDS, StepContext, step_kind
from proxyscale.store import Store, read_json, write_json
from proxyscale.studies import STUDIES, Study, load_study, register_study


@dataclass(frozen=True)
class ToySpec:
    """Square some numbers, then sum the squares."""

    name: str
    kind: Literal["toy"] = "toy"
    seed: int = 0
    values: tuple[int, ...] = (1, 2, 3)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)


@dataclass(frozen=True)
class SquareStep:
    value: int


@dataclass(frozen=True)
class SumStep:
    label: str


@step_kind("toy_square", config=SquareStep)
def square_step(ctx: StepContext) -> None:
    c: SquareStep = ctx.cfg  # typed by the kind's config dataclass, in the worker process
    log = ctx.out.parent.parent.parent.parent / "toy-runs.log"  # <store>/steps/<kind>/.partial/<leaf>
    with open(log, "a") as f:
        f.write(f"{ctx.kind} {c.value}\n")
    write_json(ctx.out / "value.json", {"value": c.value ** 2})


@step_kind("toy_sum", config=SumStep)
def sum_step(ctx: StepContext) -> None:
    total = sum(read_json(p / "value.json")["value"] for p in ctx.inputs.values())
    write_json(ctx.out / "total.json", {"label": ctx.cfg.label, "total": total})


class ToyStudy(Study):
    kind = "toy"
    spec_type = ToySpec
    analysis_kind = "toy_sum"
    title = "toy study"

    def plan(self, spec: ToySpec) -> Plan:
        plan = Plan()
        inputs = {f"v{i}": plan.add(Step("toy_square", f"v{v}", {"value": v})) for i, v in enumerate(spec.values)}
        plan.add(Step("toy_sum", spec.name, {"label": spec.name}, inputs))
        return plan

    def report_parts(self, analysis_dir: Path):
        total = read_json(analysis_dir / "total.json")["total"]
        return [Section("Sum of squares", f"<p>sum of squares: {total}</p>", f"sum of squares: {total}")], \
            {"total.txt": str(total)}


register_study(ToyStudy(), replace=True)


def _runs(store: Path) -> list[str]:
    log = store / "toy-runs.log"
    return log.read_text().split("\n")[:-1] if log.is_file() else []


def test_a_third_study_kind_runs_end_to_end_through_the_executor(tmp_path):
    spec = tmp_path / "toy.yaml"
    spec.write_text("name: toy-one\nkind: toy\nvalues: [1, 2, 3]\nexecutor: {workers: 2}\n")
    report = api.run_study(spec, tmp_path / "store", workers=2, progress=False)
    html = report.read_text()
    assert "sum of squares: 14" in html and "toy study: toy-one" in html
    assert (report.parent / "total.txt").read_text() == "14"
    assert sorted(_runs(tmp_path / "store")) == ["toy_square 1", "toy_square 2", "toy_square 3"]
    text, failed = api.status_text(spec, tmp_path / "store")
    assert failed == 0 and "toy_square" in text
    assert "toy study 'toy-one': 4 steps" in api.plan_text(spec)
    api.run_study(spec, tmp_path / "store", workers=2, progress=False)  # finished: a no-op
    assert len(_runs(tmp_path / "store")) == 3


def test_studies_run_together_share_their_steps_and_each_gets_its_report(tmp_path, monkeypatch):
    """Two studies as one plan: one executor run of both plans' steps (a square both need once),
    each sum is right, and each study gets its own report; executor settings other than
    ``workers`` must agree."""
    from proxyscale.run import executor

    plans = []
    real_run_plan = executor.run_plan
    monkeypatch.setattr(executor, "run_plan",
                        lambda plan, *args, **kw: plans.append(plan) or real_run_plan(plan, *args, **kw))
    a = {"name": "toy-a", "kind": "toy", "values": [1, 2, 3], "executor": {"workers": 2}}
    b = {"name": "toy-b", "kind": "toy", "values": [2, 3, 4]}
    reports = api.run_studies([a, b], tmp_path / "store", workers=2, progress=False)
    assert [sorted(s.name for s in p) for p in plans] == [["toy-a", "toy-b", "v1", "v2", "v3", "v4"]]
    assert [(r.parent / "total.txt").read_text() for r in reports] == ["14", "29"]
    assert sorted(_runs(tmp_path / "store")) == ["toy_square 1", "toy_square 2", "toy_square 3", "toy_square 4"]
    with pytest.raises(ConfigError, match=r"^studies toy-a and toy-c run together but their executor settings "
                                          r"differ$"):
        api.run_studies([a, {**b, "name": "toy-c", "executor": {"max_batch": 2}}], tmp_path / "store", progress=False)
    with pytest.raises(ConfigError, match="at least one study"):
        api.run_studies([], tmp_path / "store")


def test_a_kinds_code_version_reruns_that_kind_and_its_dependents_only(tmp_path, monkeypatch):
    spec = {"name": "toy-two", "kind": "toy", "values": [4]}
    api.run_study(spec, tmp_path / "store", workers=1, progress=False)
    study, s = load_study(spec)
    before = {st.kind: st.key for st in study.plan(s)}
    kind = STEP_KINDS.get("toy_sum")
    monkeypatch.setitem(STEP_KINDS._items, "toy_sum", dataclasses.replace(kind, version=kind.version + 1))
    after = {st.kind: st.key for st in study.plan(s)}
    assert after["toy_square"] == before["toy_square"] and after["toy_sum"] != before["toy_sum"]
    store = Store(tmp_path / "store")
    assert store.is_done(after["toy_square"]) and not store.is_done(after["toy_sum"])


def test_step_configs_are_checked_when_the_plan_is_built():
    with pytest.raises(ConfigError, match=r"toy_square/vx: config.value: expected an integer"):
        Plan().add(Step("toy_square", "vx", {"value": "x"}))
    with pytest.raises(ConfigError, match=r"unknown key 'vlaue' \(did you mean 'value'\?\)"):
        Plan().add(Step("toy_square", "vx", {"vlaue": 1}))
    with pytest.raises(ConfigError, match=r"unknown step kind 'toy_squares' \(did you mean 'toy_square'\?\)"):
        Plan().add(Step("toy_squares", "vx", {"value": 1}))


def test_unknown_kinds_get_a_hint_and_the_known_kinds():
    with pytest.raises(ConfigError, match=r"unknown study kind 'toi' \(did you mean 'toy'\?\); known: .*attribution"):
        load_study({"name": "x", "kind": "toi"})
    assert {"scaling", "attribution", "toy"} <= set(STUDIES.names())


def test_a_typo_in_a_shipped_study_fails_before_any_step(tmp_path):
    demo = Path(api.DEMO_SPEC).read_text().replace("  lr: 0.003", "  lrr: 0.003")
    assert "lrr" in demo
    p = tmp_path / "demo.yaml"
    p.write_text(demo)
    with pytest.raises(ConfigError, match=r"train: unknown key 'lrr' \(did you mean 'lr'\?\)"):
        api.plan_text(p)

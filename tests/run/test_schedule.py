"""List scheduling of a plan's step DAG on N GPUs (run/schedule.py)."""
from __future__ import annotations

import pytest

from proxyscale.errors import ConfigError
from proxyscale.run.plan import Plan, Step
from proxyscale.run.schedule import describe_schedule, list_schedule

FN = "nowhere:step"  # a bound step (fn set) needs no registered kind: the schedule never runs it


def diamond(d_gpus: int) -> tuple[Plan, dict, dict, dict]:
    """A (1 GPU, 2 h) → B (1 GPU, 3 h) and C (1 GPU, 1 h) → D (``d_gpus``, 1 h)."""
    plan = Plan()
    k = {}
    k["A"] = plan.add(Step("toy", "A", {"value": 1}, {}, fn=FN))
    k["B"] = plan.add(Step("toy", "B", {"value": 2}, {"a": k["A"]}, fn=FN))
    k["C"] = plan.add(Step("toy", "C", {"value": 3}, {"a": k["A"]}, fn=FN))
    k["D"] = plan.add(Step("toy", "D", {"value": 4}, {"b": k["B"], "c": k["C"]}, fn=FN))
    hours = {k["A"]: 2.0, k["B"]: 3.0, k["C"]: 1.0, k["D"]: 1.0}
    gpus = {k["A"]: 1, k["B"]: 1, k["C"]: 1, k["D"]: d_gpus}
    return plan, k, hours, gpus


def test_four_steps_on_two_gpus_and_on_one():
    plan, k, hours, gpus = diamond(2)
    s = list_schedule(plan, hours, gpus, 2)  # A 0–2; B 2–5 beside C 2–3; D waits for both GPUs: 5–6
    assert (s.start[k["B"]], s.start[k["C"]], s.start[k["D"]], s.makespan) == (2.0, 2.0, 5.0, 6.0)
    assert s.critical_path == [k["A"], k["B"], k["D"]] and s.critical_hours == 6.0
    assert s.gpu_hours == 2 + 3 + 1 + 2
    text = describe_schedule(plan, s)
    assert "on 2 GPUs: about 6.0 h wall-clock" in text
    assert "toy/A (2 h) → toy/B (3 h) → toy/D (1 h)" in text
    plan, k, hours, gpus = diamond(1)
    s = list_schedule(plan, hours, gpus, 1)  # one GPU: B (longer remaining path) before C: A, B, C, D
    assert [s.start[k[x]] for x in "ABCD"] == [0.0, 2.0, 5.0, 6.0] and s.makespan == 7.0


def test_a_step_wider_than_the_cluster_is_one_line():
    plan, _, hours, gpus = diamond(4)
    with pytest.raises(ConfigError, match="--gpus 2: step toy/D asks for 4 GPUs at once; give --gpus 4"):
        list_schedule(plan, hours, gpus, 2)

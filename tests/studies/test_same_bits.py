"""Same spec, same bits: scheduling (-j, max_batch) never changes a step's files, and a measured
training choice (precision auto, stacking) is part of the train steps' keys."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bad_inputs import make_workspace, tiny_spec  # noqa: E402

# The only fields of step files that say how a run went rather than what it computed: wall times
# and speeds (train.json; eval copies them into train_metrics.json, the analysis into
# analysis.json's meta.compute for the report's "Compute spent"). Files that hold any of them are
# compared without them. (Which models share a worker is fixed by the plan, so group_size and the
# batching record are compared too.)
RAN = {"wall_s", "compute_wall_s", "group_wall_s", "tokens_per_s", "group_tokens_per_s"}
RAN_FILES = {"train.json", "train_metrics.json", "analysis.json"}


def _without_ran(x):
    if isinstance(x, dict):
        return {k: _without_ran(v) for k, v in x.items() if k not in RAN}
    if isinstance(x, list):
        return [_without_ran(v) for v in x]
    return x


def _steps(store: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(store)): json.loads(p.read_text()) for p in store.glob("steps/*/*/_step.json")}


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("bits"))
    spec = tiny_spec(ws / "data")
    spec["distributions"]["doc"] = {"doc": 1}  # each rung: a group of 3 same-shape models
    spec["executor"] = {"workers": 1, "max_batch": 2}  # each rung: a stack of two and a stack of one
    runs = {"j1": (spec, "1"), "j2": (spec, "2")}
    for name, (s, j) in runs.items():
        (ws / f"{name}.yaml").write_text(yaml.safe_dump(s))
        r = subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", str(ws / f"{name}.yaml"), "--store",
                            str(ws / name), "-j", j, "--no-progress"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return ws / "j1", ws / "j2"


def test_j1_and_j2_give_the_same_bits_for_every_step(two_stores):
    """Both stores stack each rung's 3 models as the plan fixed them (max_batch 2: a stack of two
    and a stack of one), one worker after another (-j 1) or two at once (-j 2): every step's every
    file is the same, byte for byte, except the fields that record wall times."""
    a, b = (_steps(s) for s in two_stores)
    assert len(a) == 20 and a.keys() == b.keys()
    trains = [k for k in a if k.startswith("steps/train/")]
    assert len(trains) == 6 and {a[k]["config"]["stacking"] for k in trains} == {"stacked"}
    assert {a[k]["config"]["train"]["precision"] for k in trains} == {"fp32"}  # short runs: fp32 by rule
    for store in (a, b):
        assert sorted(store[k]["group_size"] for k in trains) == [1, 1, 2, 2, 2, 2]
        assert sorted((store[k]["config"]["stack_size"], store[k]["config"]["stack_index"]) for k in trains) == \
            [(1, 0)] * 2 + [(2, 0)] * 2 + [(2, 1)] * 2
    assert {a[k]["threads"] for k in a} == {1} == {b[k]["threads"] for k in b}
    compared = 0
    for key in a:
        fa, fb = a[key]["files"], b[key]["files"]
        assert fa.keys() == fb.keys(), key
        for name in fa:
            if Path(name).name in RAN_FILES:
                ja, jb = (json.loads((s / key / name).read_text()) for s in two_stores)
                assert _without_ran(ja) == _without_ran(jb), f"{key}/{name}"
            else:
                assert fa[name]["sha256"] == fb[name]["sha256"], f"{key}/{name}"
                compared += 1
    assert compared >= 40  # weights, losses, per-example losses, tables ...


def test_only_the_listed_files_differ_between_the_stores(two_stores):
    """The timing fields are real (they differ between the runs), and only the listed files hold them."""
    a, b = (_steps(s) for s in two_stores)
    differ = {Path(n).name for k in a for n, f in a[k]["files"].items() if f["sha256"] != b[k]["files"][n]["sha256"]}
    assert differ == RAN_FILES

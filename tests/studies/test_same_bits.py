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
RAN = {"wall_s", "compute_wall_s", "group_wall_s", "tokens_per_s", "group_tokens_per_s", "windows_per_s", "mfu",
       "featurize_s"}
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
    return _run_twice(ws, spec)


def _run_twice(ws: Path, spec: dict) -> tuple[Path, Path]:
    """``proxyscale run`` of ``spec`` into two stores, with ``-j 1`` and ``-j 2``."""
    (ws / "spec.yaml").write_text(yaml.safe_dump(spec))
    for j in ("1", "2"):
        r = subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", str(ws / "spec.yaml"), "--store",
                            str(ws / f"j{j}"), "-j", j, "--no-progress"], capture_output=True, text=True, timeout=300)
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
    assert _same_files(two_stores) >= 40  # weights, losses, per-example losses, tables ...


def _same_files(stores: tuple[Path, Path], ran_files: set[str] = RAN_FILES) -> int:
    """Asserts that both stores hold the same steps with the same files, byte for byte (the
    files in RAN_FILES: the same but for the timing fields); returns how many files were
    compared byte for byte."""
    (a, b), compared = (_steps(s) for s in stores), 0
    assert a.keys() == b.keys()
    for key in a:
        fa, fb = a[key]["files"], b[key]["files"]
        assert fa.keys() == fb.keys(), key
        for name in fa:
            if Path(name).name in ran_files:
                ja, jb = (json.loads((s / key / name).read_text()) for s in stores)
                assert _without_ran(ja) == _without_ran(jb), f"{key}/{name}"
            else:
                assert fa[name]["sha256"] == fb[name]["sha256"], f"{key}/{name}"
                compared += 1
    return compared


def test_only_the_listed_files_differ_between_the_stores(two_stores):
    """The timing fields are real (they differ between the runs), and only the listed files hold them."""
    a, b = (_steps(s) for s in two_stores)
    differ = {Path(n).name for k in a for n, f in a[k]["files"].items() if f["sha256"] != b[k]["files"][n]["sha256"]}
    assert differ == RAN_FILES


@pytest.fixture(scope="module")
def selection_stores(tmp_path_factory):
    """A spec with a pool and two selections (DSIR; DsDm on three L1d4 proxies), run with -j 1 and -j 2."""
    ws = make_workspace(tmp_path_factory.mktemp("selbits"))
    spec = tiny_spec(ws / "data")
    spec["distributions"] = {"mix": {"prose": 1, "doc": 1}}
    spec["ladder"]["proxy_seeds"] = [0, 1]  # L1d4: four window models (two selections × two seeds)
    spec["pool"] = {"sources": {"prose": 1, "doc": 1}, "n_windows": 200}
    spec["selections"] = {"dsir": {"method": "dsir", "target": "mixed", "n_target": 5,
                                   "settings": {"min_example_length": 0}},
                          "dsdm": {"method": "dsdm", "target": "mixed", "n_target": 5, "proxy": "L1d4"}}
    spec["dsdm"] = {"models": 3, "k": 16, "batch_size": 8}
    spec["executor"] = {"workers": 1, "max_batch": 2}
    return _run_twice(ws, spec)


def test_window_models_are_stacked_by_the_plan_and_give_the_same_bits(selection_stores):
    """The models trained on pool windows (DsDm's proxies, the ladder's models on a selection)
    follow the train steps' rules: precision and stacking resolved in the config, stacks of at
    most max_batch fixed by the plan (sized for the store's recorded cores), one batch per stack;
    with -j 1 and -j 2 every step's every file is the same, byte for byte."""
    from proxyscale.run.executor import stack_sizes

    a, b = (_steps(s) for s in selection_stores)
    record = next((selection_stores[0] / ".calibration").glob("stack_slots-*.json"))
    cores = json.loads(record.read_text())["choice"]["slots"]  # what the plan sized the stacks for
    windows = {k: v for k, v in a.items() if k.startswith("steps/window_train/")}
    names = {k.split("/")[-1].rsplit("-", 1)[0]: v for k, v in windows.items()}
    assert sorted(names) == ["dsdm-L1d4-s0", "dsdm-L1d4-s1", "dsdm-L1d8-s0", "dsir-L1d4-s0", "dsir-L1d4-s1",
                             "dsir-L1d8-s0", "proxy-L1d4-m0", "proxy-L1d4-m1", "proxy-L1d4-m2"]
    assert {v["config"]["train"]["precision"] for v in windows.values()} == {"fp32"}  # short runs: fp32 by rule
    for prefix, n in (("proxy-L1d4", 3), ("L1d4-s", 4), ("L1d8-s", 2)):
        group = sorted((v["config"].get("stack_size", 1), v["config"].get("stack_index", 0),
                        v["config"].get("stacking", "single"), v["group_size"])
                       for k, v in names.items() if prefix in k)
        want = sorted((size, i, "stacked", size) for size in stack_sizes(n, 2, cores) for i in range(size))
        if max(stack_sizes(n, 2, cores)) == 1:  # no stack: each model alone, as the ladder's
            want = [(1, 0, "single", 1)] * n
        assert group == want, prefix
    assert {a[k]["threads"] for k in a} == {1} == {b[k]["threads"] for k in b}
    assert _same_files(selection_stores, RAN_FILES | {"dsdm.json"}) >= 60  # dsdm.json: TRAK's wall time


def _plan(spec: dict, store: Path | None = None, measure: bool = False) -> dict[tuple[str, str], object]:
    from proxyscale.api import study_plan
    from proxyscale.store import Store
    from proxyscale.studies import load_study

    study, s = load_study(spec)
    return {(st.kind, st.name): st for st in study_plan(study, s, None if store is None else Store(store), measure)}


def test_a_max_batch_that_changes_the_stacks_changes_exactly_the_affected_keys(tmp_path, monkeypatch):
    """Stacks follow from the plan: on one core, L1d4's 6 models are stacks of 3 + 3 under
    max_batch 5 and one stack of 6 under 6, while L1d8's 3 are one stack of 3 under both; only
    L1d4's train steps (and what reads them) change keys."""
    import proxyscale.studies.fragments.measured as measured

    monkeypatch.setattr(measured, "available_cores", lambda: 1)
    spec = tiny_spec(tmp_path)
    spec["distributions"]["doc"] = {"doc": 1}
    spec["ladder"]["proxy_seeds"] = [0, 1]
    five, six = (_plan({**spec, "executor": {"max_batch": m}}) for m in (5, 6))
    stacks = {m: sorted((p.name, p.config["stack_size"], p.config["stack_index"], p.batch_key[-2:])
                        for (kind, _), p in plan.items() if kind == "train" and "L1d4" in p.name)
              for m, plan in ((5, five), (6, six))}
    assert [s[1:3] for s in stacks[5]] == [(3, 0), (3, 1), (3, 2)] * 2 and len({s[3] for s in stacks[5]}) == 2
    assert sorted(s[2] for s in stacks[6]) == list(range(6)) and {s[1] for s in stacks[6]} == {6}
    changed = {k for k in five if five[k].key != six[k].key}
    l1d4 = {("train", f"{d}-L1d4-s{r}") for d in ("doc", "mix", "prose") for r in (0, 1)}
    assert {k for k in changed if k[0] == "train"} == l1d4
    assert changed == l1d4 | {("eval", n) for _, n in l1d4} | {("analyze", "tiny")}
    assert {p.config["stack_size"] for (k, n), p in six.items() if k == "train" and "L1d8" in n} == {3}


@pytest.fixture
def long_spec(tmp_path):
    """A spec whose runs are long enough that precision auto and stacking are measured."""
    spec = tiny_spec(tmp_path)
    spec["ladder"]["tokens_per_param"] = 100
    return spec


def test_a_different_measured_choice_gives_a_different_key(tmp_path, monkeypatch, long_spec):
    """Two stores whose probes chose bf16 and fp32 (both: stacked) give their train steps
    different keys and the data steps the same; a later plan of a measured store reads its
    records and measures nothing."""
    import proxyscale.studies.fragments.measured as measured
    from proxyscale.train import batched, calibrate

    monkeypatch.setattr(measured, "available_cores", lambda: 1)  # each rung: one stack of two
    monkeypatch.setattr(calibrate, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(batched, "_measure_batching", lambda *a: {"mode": "batched"})
    plans = {}
    for choice in ("bf16", "fp32"):
        monkeypatch.setattr(calibrate, "_measure_precision", lambda *a, c=choice: {"precision": c})
        plans[choice] = _plan(long_spec, tmp_path / choice, measure=True)
    trains = {k for k in plans["bf16"] if k[0] == "train"}
    assert len(trains) == 4
    for choice, plan in plans.items():
        assert {plan[k].config["train"]["precision"] for k in trains} == {choice}
        assert {plan[k].config["stacking"] for k in trains} == {"stacked"}
    assert all(plans["bf16"][k].key != plans["fp32"][k].key for k in trains)
    assert all(plans["bf16"][k].key == plans["fp32"][k].key for k in plans["bf16"] if k[0] in ("corpus", "shard"))

    def no_probe(*a):
        raise AssertionError("a store with its calibration must not measure again")

    monkeypatch.setattr(calibrate, "_measure_precision", no_probe)
    monkeypatch.setattr(batched, "_measure_batching", no_probe)
    calibrate._cache.clear()
    again = _plan(long_spec, tmp_path / "bf16")  # a later run, status or report: the recorded choices
    assert {k: p.key for k, p in again.items()} == {k: p.key for k, p in plans["bf16"].items()}


def test_plan_on_an_unmeasured_store_shows_auto_and_writes_nothing(tmp_path, long_spec):
    """`proxyscale plan --store S` runs no probe: the choices S has not measured show as such,
    and S is left as it was (no calibration record, no lock file)."""
    import os

    from proxyscale.store import Store

    store = tmp_path / "store"
    Store(store).check_format(create=True)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(long_spec))
    r = subprocess.run([sys.executable, "-m", "proxyscale.cli", "plan", str(tmp_path / "s.yaml"), "--store",
                        str(store)], capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))  # one stack of 2
    assert r.returncode == 0, r.stderr[-2000:]
    trains = [ln for ln in r.stdout.splitlines() if "train/" in ln and "params=" in ln]
    assert len(trains) == 4
    assert all("precision=auto (not measured yet) stacking=auto (not measured yet)" in ln for ln in trains)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_selections_join_the_ladder_as_distributions(selection_stores):
    """Selections as training distributions (the paper's 4 of 10): the analysis treats them like
    natural ones, their 5 target examples are never evaluated, and each selection holds the
    reference's token budget of pool windows."""
    import numpy as np

    from proxyscale.store import Store, read_table

    root = selection_stores[0]
    plan = _plan(yaml.safe_load((root.parent / "spec.yaml").read_text()), root)
    store = Store(root)

    def one(kind: str, name: str | None = None):
        found = [s for (k, n), s in plan.items() if k == kind and name in (None, n)]
        assert len(found) == 1, (kind, name, len(found))
        return store.final_dir(found[0].key)

    results = read_table(one("analyze") / "results.parquet")
    assert set(results["distribution"]) == {"mix", "dsir", "dsdm"}
    used = set(read_table(one("target_part") / "test.parquet")["example_id"])
    mixed = results[results["test_set"] == "mixed"]
    assert len(used) == 5 and mixed["example_id"].nunique() == 12 - 5 and not mixed["example_id"].isin(used).any()
    ref = next(s for (k, n), s in plan.items() if k == "window_train" and n == "dsdm-L1d8-s0")
    for name in ("dsir", "dsdm"):
        chosen = np.load(one("select_windows", name) / "chosen.npy")
        assert len(chosen) == ref.config["n_steps"] * ref.config["train"]["batch_size"], name

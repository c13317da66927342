"""Property tests: a valid tiny spec and its data files, mutated at random, either load, plan
and pass the preflight, or fail with one clean line (a ProxyscaleError whose message has no
newline) — never another exception — and nothing is written outside the store. A few mutated
specs are run to the end, and a handful of bad inputs go through the real CLI in a subprocess.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bad_inputs import CASES, make_workspace, tiny_spec, try_case, write_sources
from proxyscale.api import plan_text
from proxyscale.errors import ProxyscaleError
from proxyscale.studies import load_study
from proxyscale.studies.preflight import preflight

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
UNSAFE_NAMES = ["../x", "a:b", ".hidden", "", "a/b", "x" * 300, "nul\0", "sp ace", "..", "~", "é"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_sources(root / "data")
    return root / "data"


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and list indices) into a plain-data tree, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


def rich_spec(data: Path) -> dict:
    """The tiny spec with every optional section written out (more to mutate)."""
    spec = tiny_spec(data)
    spec.update(seed=3, corpus={"max_bytes_per_domain": 1000, "use_apt": False, "domains": ["pyref"]},
                gpu={"name": "x", "peak_tflops": 100.0, "memory_gb": 40.0, "mfu": 0.5},
                pool={"sources": {"prose": 1, "doc": 1}, "n_windows": 50},
                selections={"sel": {"method": "dsir", "target": "mixed", "n_target": 5,
                                    "settings": {"min_example_length": 5}}},
                dsdm={"models": 1, "k": 16, "batch_size": 4})
    spec["train"].update(warmup_frac=0.1, schedule="linear", betas=[0.9, 0.95])
    return spec


BASE_PATHS = paths(rich_spec(Path("/data")))

values = st.one_of(
    st.text(max_size=6), st.integers(-10, 10), st.integers(-(10**15), 10**15),
    st.sampled_from([10**6, 10**9, 10**12, 2**63, -1, 0, 1e-300, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.lists(st.integers(-3, 300), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _parent(spec: dict, path: tuple) -> Any:
    node = spec
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def spec_mutation(draw) -> Callable[[dict], None]:
    """One change to the spec tree: delete, replace, add an unknown key, or rename unsafely."""
    path = draw(st.sampled_from(BASE_PATHS))
    kind = draw(st.sampled_from(["delete", "replace", "add", "rename"]))
    value = draw(values)
    name = draw(st.one_of(st.sampled_from(UNSAFE_NAMES), st.text(max_size=5)))

    def mutate(spec: dict) -> None:
        parent = _parent(spec, path)
        key = path[-1]
        if kind == "delete":
            del parent[key]
        elif kind == "replace" or not isinstance(parent, dict):
            parent[key] = value
        elif kind == "add":
            parent[name if name not in parent else name + "_"] = value
        else:
            parent[name] = parent.pop(key)
    mutate.__doc__ = f"{kind} {path} {value!r} {name!r}"
    return mutate


def _data_change(kind: str, blob: bytes, cut: int) -> Callable[[Path], None]:
    def change(data: Path) -> None:
        doc, prose = data / "doc.jsonl", data / "prose" / "000.txt"
        target = doc if kind.endswith("doc") else prose
        raw = target.read_bytes()
        if kind.startswith("truncate"):
            target.write_bytes(raw[:cut])
        elif kind.startswith("binary"):
            target.write_bytes(blob)
        elif kind.startswith("utf8"):
            target.write_bytes(raw[:cut] + b"\xff\xfe" + raw[cut:])
        elif kind.startswith("append"):
            target.write_bytes(raw + blob)
        elif kind.startswith("delete"):
            target.unlink()
        elif kind.startswith("etc"):
            target.unlink()
            target.symlink_to("/etc/passwd")
        elif kind.startswith("outside"):
            outside = data.parent / "outside.txt"
            outside.write_bytes(raw)
            target.unlink()
            target.symlink_to(outside)
    change.__doc__ = f"{kind} cut={cut} blob={blob[:20]!r}"
    return change


data_mutation = st.builds(
    _data_change,
    st.sampled_from([f"{k}-{f}" for k in ("truncate", "binary", "utf8", "append", "delete", "etc", "outside")
                     for f in ("doc", "prose")]),
    st.one_of(st.binary(max_size=64), st.sampled_from([b"{not json\n", b"[1, 2]\n", b'{"text": 5}\n', b"\0\0\0"])),
    st.integers(0, 400))


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for f in filenames:
            st_ = (Path(dirpath) / f).lstat()
            out[os.path.relpath(Path(dirpath) / f, root)] = (st_.st_size, st_.st_mtime_ns)
    return out


def load_plan_preflight(spec: Any) -> None:
    """What `run` does before any step, and what `plan` prints."""
    study, s = load_study(spec)
    preflight(study.plan(s), None, max_batch=s.executor.max_batch, device="cpu")
    plan_text(spec)


def assert_clean(fn: Callable[[], Any]) -> str:
    """Run ``fn``: it succeeds ("ok") or raises a one-line ProxyscaleError ("error"); anything
    else fails the test."""
    try:
        fn()
    except ProxyscaleError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(e)
        event(f"error: {type(e).__name__}")
        return "error"
    event("ok")
    return "ok"


def workspace(pristine: Path, tmp: Path) -> Path:
    shutil.copytree(pristine, tmp / "data", symlinks=True)
    (tmp / "store").mkdir()
    return tmp


def test_the_unmutated_specs_are_valid(pristine):
    load_plan_preflight(rich_spec(pristine))
    load_plan_preflight(tiny_spec(pristine))


@settings(max_examples=150, **SETTINGS)
@given(mutations=st.lists(spec_mutation(), min_size=1, max_size=3))
def test_mutated_specs_load_and_plan_or_fail_in_one_line(pristine, mutations):
    with tempfile.TemporaryDirectory() as d:
        ws = workspace(pristine, Path(d))
        spec = rich_spec(ws / "data")
        for m in mutations:
            try:
                m(spec)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed or replaced the path: keep what we have
        before = snapshot(ws, ws / "store")
        assert_clean(lambda: load_plan_preflight(copy.deepcopy(spec)))
        assert snapshot(ws, ws / "store") == before


@settings(max_examples=60, **SETTINGS)
@given(change=data_mutation)
def test_mutated_data_files_are_refused_before_any_step_or_plan(pristine, change):
    with tempfile.TemporaryDirectory() as d:
        ws = workspace(pristine, Path(d))
        change(ws / "data")
        before = snapshot(ws, ws / "store")
        outcome = assert_clean(lambda: load_plan_preflight(tiny_spec(ws / "data")))
        assert snapshot(ws, ws / "store") == before
        doc = ws / "data" / "doc.jsonl"
        if doc.is_symlink() and Path(os.readlink(doc)).is_relative_to("/etc"):
            assert outcome == "error"  # the read policy: never /etc


@settings(max_examples=2, **SETTINGS)
@given(change=data_mutation, seed=st.integers(0, 2**31 - 1))
def test_mutated_studies_run_to_the_end_or_fail_in_one_line(pristine, change, seed):
    """A few mutated studies really run: a clean error or a finished report, and nothing
    written outside the store."""
    from proxyscale.api import run_study

    with tempfile.TemporaryDirectory() as d:
        ws = workspace(pristine, Path(d))
        change(ws / "data")
        spec = tiny_spec(ws / "data")
        spec["seed"] = seed
        before = snapshot(ws, ws / "store")
        assert_clean(lambda: run_study(spec, ws / "store", workers=1, progress=False))
        assert snapshot(ws, ws / "store") == before


CLI_CASES = ["unknown option", "--workers -1", "repeated nested key", "train.lr: .nan", "source named ../x",
             "d_model: 1e9", "source: symlink to /etc", "source: bad JSONL line"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_bad_inputs_through_the_cli_are_one_line(tmp_path, name):
    case = next(c for c in CASES if c.name == name)
    ws = make_workspace(tmp_path)
    command = "run" if "run" in case.commands else case.commands[0]
    out = try_case(case, command, ws, timeout=120)
    assert out.verdict == "clean", out
    assert out.returncode not in (0, None) and out.stderr.startswith("error: ")

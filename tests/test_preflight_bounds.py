"""Sizes no step could meet are refused by the preflight: `plan` shows the line, `run` exits
non-zero before any step directory exists."""
from __future__ import annotations

import pytest

from bad_inputs import CASES, make_workspace, try_case

EXPECTED = {
    "pool.n_windows: 1e9": ("pool.n_windows=1,000,000,000: the pool's sources (doc, prose) hold ",
                            "windows of 32 tokens; set pool.n_windows to at most "),
    "selection n_target: 1000 (test set of 12)": (
        "n_target=1,000: the target set 'mixed' builds at most 12 examples and 1,002 are needed",
        "lower n_target to at most 10"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("command", ["plan", "run"])
def test_selection_sizes_are_refused_before_any_step(tmp_path, name, command):
    case = next(c for c in CASES if c.name == name)
    ws = make_workspace(tmp_path)
    out = try_case(case, command, ws, timeout=120)
    assert out.verdict == "clean", out  # clean: one line, and no step directory in the store
    assert not (ws / "store" / "steps").exists()
    for part in EXPECTED[name]:
        assert part in out.stderr, out.stderr
    if command == "run":
        assert out.returncode == 2 and out.stderr.startswith("error: ")
    else:
        assert out.returncode == 0 and out.stderr.startswith("`proxyscale run` would refuse: ")


def test_a_pool_and_target_within_bounds_still_plan(tmp_path):
    """The bounds refuse only the impossible: the harness's valid 50-window pool and 5-example
    target plan as runnable."""
    from bad_inputs import _select, tiny_spec, write_sources
    from proxyscale.api import plan_text

    write_sources(tmp_path / "data")
    spec = _select({})(tiny_spec(tmp_path / "data"), tmp_path)
    assert "`proxyscale run` would start" in plan_text(spec)


@pytest.mark.parametrize("name", ["qa test set over sources without titles",
                                  "selection qa target over sources without titles"])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_qa_set_over_untitled_sources_is_refused_before_any_step(tmp_path, name, command):
    case = next(c for c in CASES if c.name == name)
    ws = make_workspace(tmp_path)
    out = try_case(case, command, ws, timeout=120)
    assert out.verdict == "clean", out
    assert not (ws / "store" / "steps").exists()
    assert "is kind qa" in out.stderr and "have no titles; use an embedded 'dictionary'" in out.stderr, out.stderr
    assert out.returncode == (2 if command == "run" else 0)


def test_a_cloze_target_over_the_same_sources_still_plans(tmp_path):
    """The refusal is about titles: the same selection spec with a cloze target is runnable."""
    from bad_inputs import _selection_target, tiny_spec, write_sources
    from proxyscale.api import plan_text

    write_sources(tmp_path / "data")
    spec = _selection_target("cloze")(tiny_spec(tmp_path / "data"), tmp_path)
    assert "`proxyscale run` would start" in plan_text(spec)

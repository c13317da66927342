"""Nothing is written outside the store: unsafe names are refused when the spec is loaded, and
the store's path builder refuses any path that resolves outside it."""
from __future__ import annotations

import pytest

from proxyscale.api import DEMO_SPEC
from proxyscale.errors import ConfigError, StoreError
from proxyscale.run.plan import Plan, Step, check_name
from proxyscale.store import Store
from proxyscale.studies import load_study


@pytest.mark.parametrize("bad", ["../../X", "..", ".hidden", "a/b", "a:b", "", "a b", "x" * 201])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(ConfigError, match="cannot name files in the store"):
        check_name(bad)


@pytest.mark.parametrize("where", ["name", "source", "distribution", "test_set"])
def test_a_spec_with_a_traversing_name_fails_at_load(where, tmp_path):
    import yaml

    data = yaml.safe_load(DEMO_SPEC.read_text())
    evil = "../../escape"
    if where == "name":
        data["name"] = ".."
    elif where == "source":
        data["sources"][evil] = data["sources"].pop("kernel")
        data["test_sets"]["unseen-kernel"]["sources"] = [evil]
        data["test_sets"]["mixed-lm"]["sources"][-1] = evil
    elif where == "distribution":
        data["distributions"][evil] = data["distributions"].pop("bible")
    else:
        data["test_sets"][evil] = data["test_sets"].pop("cloze")
    with pytest.raises(ConfigError, match="cannot name files in the store"):
        load_study(data)
    assert not any(tmp_path.iterdir())


def test_the_store_refuses_paths_outside_it(tmp_path):
    st = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="outside the store"):
        st.final_dir("train/../../../etc")
    with pytest.raises(StoreError):
        st.study_dir("..")
    (tmp_path / "store" / "steps").mkdir(parents=True)
    (tmp_path / "store" / "steps" / "link").symlink_to(tmp_path)  # a link out of the store
    with pytest.raises(StoreError, match="outside the store"):
        st.final_dir("link/x-0123456789")
    assert st.final_dir("train/a-0123456789").parent.name == "train"
    with pytest.raises(ConfigError):
        Plan().add(Step("toy_square", "../x", {"value": 1}))

"""The store's format marker: a new store is marked, an older store is refused with a clear
message and left untouched."""
from __future__ import annotations

import pytest

from proxyscale.errors import StoreError
from proxyscale.store import FORMAT_VERSION, Store, read_json, write_json


def test_a_new_store_is_marked_with_the_format(tmp_path):
    st = Store(tmp_path / "s")
    st.check_format()  # reading an empty store is fine and writes nothing
    assert not (tmp_path / "s").exists()
    st.check_format(create=True)
    assert read_json(tmp_path / "s" / "store.json") == {"format_version": FORMAT_VERSION}
    st.check_format()  # ours: accepted


def test_an_older_store_is_refused_and_left_alone(tmp_path):
    old = tmp_path / "old"
    write_json(old / "steps" / "train" / "a-0123456789" / "_step.json", {"format_version": 1})
    with pytest.raises(StoreError, match=r"store format 1; this proxyscale uses format \d+ .*another --store"):
        Store(old).check_format(create=True)
    assert not (old / "store.json").exists()
    write_json(old / "store.json", {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(StoreError, match=f"store format {FORMAT_VERSION + 1}"):
        Store(old).check_format()


def test_the_cli_refuses_an_old_store_in_one_line(tmp_path):
    import subprocess
    import sys

    from proxyscale.api import DEMO_SPEC

    write_json(tmp_path / "old" / "steps" / "corpus" / "x-0123456789" / "_step.json", {})
    res = subprocess.run([sys.executable, "-m", "proxyscale.cli", "status", str(DEMO_SPEC), "--store",
                          str(tmp_path / "old")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "store format 1" in res.stderr, res.stderr

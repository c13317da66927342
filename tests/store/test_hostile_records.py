"""Store records are data on disk, checked before anything they name is opened: a hostile
``_step.json`` makes its step damaged with one line naming the bad entry, never a read outside it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from proxyscale.store import Store, checks, read_json, write_json

KEY = "t/step-0123456789"
SHA = "0" * 64


@pytest.fixture
def finished(tmp_path) -> tuple[Store, Path]:
    store = Store(tmp_path / "store")
    claim = store.claim(KEY)
    write_json(claim.dir / "v.json", {"value": 1})
    return store, store.finish(claim, {"kind": "t"})


def _with_files(files) -> callable:
    def edit(final: Path) -> None:
        rec = read_json(final / "_step.json")
        rec["files"] = files(rec["files"]) if callable(files) else files
        (final / "_step.json").write_text(json.dumps(rec))
    return edit


def _symlinked_copy(final: Path) -> None:
    """The recorded file replaced by a symlink to an identical copy outside the store."""
    outside = final.parents[3] / "copy.json"
    outside.write_bytes((final / "v.json").read_bytes())
    (final / "v.json").unlink()
    (final / "v.json").symlink_to(outside)


def _fifo(final: Path) -> None:
    (final / "v.json").unlink()
    os.mkfifo(final / "v.json")  # opening it to hash would block forever


def _escaping_folder(final: Path) -> None:
    (final.parents[3] / "elsewhere").mkdir()
    (final.parents[3] / "elsewhere" / "w.bin").write_bytes(b"x")
    (final / "sub").symlink_to(final.parents[3] / "elsewhere")
    _with_files(lambda f: {**f, "sub/w.bin": {"bytes": 1, "sha256": SHA}})(final)


def _record(value) -> callable:
    return lambda final: (final / "_step.json").write_text(json.dumps(value))


HOSTILE = {
    "../../../outside.txt": (_with_files(lambda f: {**f, "../../../outside.txt": {"bytes": 3, "sha256": SHA}}),
                             "recorded file '../../../outside.txt' is not a plain relative path"),
    "/etc/passwd": (_with_files(lambda f: {**f, "/etc/passwd": {"bytes": 3, "sha256": SHA}}),
                    "recorded file '/etc/passwd' is not a plain relative path"),
    "/dev/zero": (_with_files(lambda f: {**f, "/dev/zero": {"bytes": 0, "sha256": SHA}}),
                  "recorded file '/dev/zero' is not a plain relative path"),
    "a/./b": (_with_files(lambda f: {**f, "a/./b": {"bytes": 0, "sha256": SHA}}),
              "recorded file 'a/./b' is not a plain relative path"),
    "symlink": (_symlinked_copy, "v.json is a symlink"),
    "fifo": (_fifo, "v.json is not a regular file"),
    "escaping folder": (_escaping_folder, "recorded file 'sub/w.bin' lies outside the step directory"),
    "files as a list": (_with_files(lambda f: [[k, v] for k, v in f.items()]),
                        "_step.json records its files as a JSON list, not a mapping"),
    "no sha256": (_with_files(lambda f: {k: {"bytes": v["bytes"]} for k, v in f.items()}),
                  "recorded file 'v.json' has no valid sha256 (64 hex digits)"),
    "sha256 not hex": (_with_files(lambda f: {k: {**v, "sha256": "z" * 64} for k, v in f.items()}),
                       "recorded file 'v.json' has no valid sha256 (64 hex digits)"),
    "negative size": (_with_files(lambda f: {k: {**v, "bytes": -1} for k, v in f.items()}),
                      "recorded file 'v.json' has no valid size (bytes: an integer >= 0)"),
    "size true": (_with_files(lambda f: {k: {**v, "bytes": True} for k, v in f.items()}),
                  "recorded file 'v.json' has no valid size (bytes: an integer >= 0)"),
    "entry a string": (_with_files(lambda f: {k: "abc" for k in f}),
                       "recorded file 'v.json' has no {bytes, sha256} entry"),
    "no files": (_record({"kind": "t"}), "_step.json records no files"),
    "record a list": (_record(["kind", "t"]), "_step.json holds a JSON list, not an object"),
    "record a number": (_record(3), "_step.json holds a JSON int, not an object"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_record_is_damaged_and_nothing_it_names_is_opened(finished, monkeypatch, name):
    store, final = finished
    edit, reason = HOSTILE[name]
    edit(final)
    opened: list[str] = []
    real_open = os.open

    def spy(path, *a, **kw):
        opened.append(os.fspath(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(checks.os, "open", spy)
    found = store.problems(KEY)
    assert len(found) == 1 and found[0].startswith(reason), found
    assert all(Path(p).resolve().is_relative_to(final.resolve()) for p in opened), opened
    assert store.is_done(KEY)  # still there: `run` moves it aside (quarantine) and runs it again
    old = store.quarantine(KEY)
    assert isinstance(old, dict) and not store.is_done(KEY)


def test_an_intact_record_still_checks_clean(finished):
    store, final = finished
    assert store.problems(KEY) == [] and set(read_json(final / "_step.json")["files"]) == {"v.json"}

"""Source checks before any step runs, and the read policy of local sources."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxyscale.data import checks
from proxyscale.data.checks import check_source
from proxyscale.data.sources import SourceSpec, iter_documents, local_files
from proxyscale.errors import DataError


def local(path: Path, **kw) -> SourceSpec:
    return SourceSpec(kind="local", path=str(path), **kw)


def test_good_sources_pass_and_yield_the_same_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first block\n\nsecond block\n")
    (tmp_path / "d" / "b.jsonl").write_text(json.dumps({"text": "héllo"}) + "\n\n" + json.dumps({"text": "x"}) + "\n")
    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "d" / "c.parquet")
    (tmp_path / "d" / "notes.md").write_text("ignored")
    spec = local(tmp_path / "d")
    check_source(spec)
    assert [p.name for p, _ in local_files(spec)] == ["a.txt", "b.jsonl", "c.parquet"]
    assert len(list(iter_documents(spec))) == 2 + 2 + 2


@pytest.mark.parametrize("name, content, message", [
    ("latin.txt", "caf\xe9\n".encode("latin-1"), "not valid UTF-8 (byte 3)"),
    ("nul.txt", b"text\0more", "NUL byte at byte 4"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": "b"}\n{oops\n', "line 3 is not JSON"),
    ("latin.jsonl", b'{"text": "a"}\n{"text": "\xe9"}\n', "line 2 is not valid UTF-8"),
    ("field.jsonl", b'{"body": "a"}\n', "no string field 'text'"),
    ("number.jsonl", b'{"text": 3}\n', "no string field 'text'"),
    ("empty.jsonl", b"", "has no documents"),
    ("blank.txt", b"\n \n\t\n", "has no documents"),
    ("bad.parquet", b"PAR1 garbage", "cannot read as Parquet"),
    ("data.csv", b"text\nx\n", "unsupported file type '.csv'"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)) as e:
        check_source(local(tmp_path / name), where="sources.x")
    assert str(e.value).startswith("sources.x: ") and "\n" not in str(e.value)


def test_parquet_text_column_must_hold_strings(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="holds int64, not text"):
        check_source(local(tmp_path / "n.parquet"))
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="no column 'text'"):
        check_source(local(tmp_path / "b.parquet"))


def test_a_character_cut_by_the_head_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "CHECK_BYTES", 5)
    (tmp_path / "a.txt").write_text("abcdé and more", encoding="utf-8")  # 'é' spans bytes 4-5
    check_source(local(tmp_path / "a.txt"))
    (tmp_path / "b.jsonl").write_text('{"text": "a"}\n{"te', encoding="utf-8")  # cut line: not judged
    monkeypatch.setattr(checks, "CHECK_BYTES", 16)
    check_source(local(tmp_path / "b.jsonl"))


def test_a_defect_beyond_the_checked_head_is_still_reported_when_read(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "CHECK_BYTES", 64)
    good = "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10))
    (tmp_path / "late.jsonl").write_text(good + "{broken\n")
    check_source(local(tmp_path / "late.jsonl"))  # the stated limit: only the head is read here
    with pytest.raises(DataError, match="line 11 is not JSON"):
        list(iter_documents(local(tmp_path / "late.jsonl")))


# -- the read policy ---------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["/etc", "/etc/passwd", "/proc/self/status", "/"])
def test_symlinks_into_system_directories_are_refused(tmp_path, target):
    link = tmp_path / "data.txt"
    link.symlink_to(target)
    for fn in (check_source, lambda s: list(iter_documents(s))):  # at plan time and when a step reads
        with pytest.raises(DataError, match="a source may not read /etc, /proc, /sys, /dev"):
            fn(local(link))


def test_system_paths_given_directly_are_refused():
    with pytest.raises(DataError, match="under the system directory /proc"):
        check_source(local(Path("/proc/self/environ")))


def test_a_directory_source_reads_only_files_inside_it(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not for training")
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("inside")
    (d / "alias.txt").symlink_to(d / "a.txt")  # a link that stays inside: fine
    check_source(local(d))
    assert len(list(iter_documents(local(d)))) == 2
    (d / "leak.txt").symlink_to(outside)
    with pytest.raises(DataError, match="outside the source directory"):
        check_source(local(d))
    with pytest.raises(DataError, match="outside the source directory"):
        list(iter_documents(local(d)))


def test_symlinked_subdirectories_are_not_descended(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("elsewhere")
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("here")
    (d / "sub").symlink_to(other, target_is_directory=True)
    assert [p.name for p, _ in local_files(local(d))] == ["a.txt"]


def test_a_linked_file_or_directory_outside_system_dirs_is_followed(tmp_path):
    (tmp_path / "real.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    check_source(local(tmp_path / "link.jsonl"))
    assert [d.text for d in iter_documents(local(tmp_path / "link.jsonl"))] == ["x"]


def test_fifos_and_dangling_links_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(DataError, match="not a regular file"):
        check_source(local(tmp_path / "pipe.txt"))  # reading it would block forever
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with pytest.raises(DataError, match="a symlink to .*nowhere.txt, which does not exist"):
        check_source(local(tmp_path / "gone.txt"))


def test_embedded_domains_are_checked_against_the_corpus_settings():
    check_source(SourceSpec(kind="embedded", domain="bible"))
    with pytest.raises(DataError, match="unknown corpus domain 'bibel' \\(did you mean 'bible'"):
        check_source(SourceSpec(kind="embedded", domain="bibel"))
    with pytest.raises(DataError, match="not in corpus.domains"):
        check_source(SourceSpec(kind="embedded", domain="bible"), {"domains": ["pyref"]})
    with pytest.raises(DataError, match="use_apt is false"):
        check_source(SourceSpec(kind="embedded", domain="bible"), {"use_apt": False})
    check_source(SourceSpec(kind="embedded", domain="pyref"), {"use_apt": False})

"""The output policy (proxyscale.store.output): staged writes, markers, --overwrite, and write
failures (a full or read-only filesystem) as one line with nothing left behind."""
from __future__ import annotations

import errno
import hashlib
import json

import numpy as np
import pytest

from proxyscale.errors import OutputError
from proxyscale.store.output import MARKER, check_output, output_dir, output_file


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(stage, text="x\n"):
    (stage / "a.txt").write_text(text)


def test_new_directory_gets_files_and_a_marker_with_their_sums(tmp_path):
    with output_dir(tmp_path / "new" / "out") as stage:
        _write(stage, "hello\n")
    out = tmp_path / "new" / "out"
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "proxyscale"
    assert marker["files"] == {"a.txt": {"sha256": hashlib.sha256(b"hello\n").hexdigest(), "bytes": 6}}
    assert sorted(p.name for p in tmp_path.joinpath("new").iterdir()) == ["out"]  # no staging left


def test_rerun_needs_overwrite_and_then_replaces_only_proxyscale_files(tmp_path):
    out = tmp_path / "out"
    with output_dir(out) as stage:
        _write(stage, "one\n")
    with pytest.raises(OutputError, match="holds an earlier proxyscale output; pass --overwrite"):
        with output_dir(out) as stage:
            _write(stage, "two\n")
    assert (out / "a.txt").read_text() == "one\n"
    with output_dir(out, overwrite=True) as stage:
        _write(stage, "two\n")
    assert (out / "a.txt").read_text() == "two\n"
    (out / "a.txt").write_text("edited by hand\n")
    before = _tree(out)
    with pytest.raises(OutputError, match="a.txt was not written by proxyscale or has changed since"):
        with output_dir(out, overwrite=True) as stage:
            _write(stage)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_directory_is_used_and_foreign_one_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with output_dir(tmp_path / "empty") as stage:
        _write(stage)
    assert (tmp_path / "empty" / "a.txt").read_text() == "x\n"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "manifest.json").write_text("{}")
    with pytest.raises(OutputError, match=r"did not write \(e.g. manifest.json\)"):
        check_output(tmp_path / "mine", overwrite=True)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EROFS, "the filesystem is read-only"),
                                         (errno.EACCES, "permission denied")])
def test_write_errors_are_one_line_and_leave_nothing(tmp_path, code, words):
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(OutputError) as e:
        with output_dir(out, need_bytes=12345) as stage:
            _write(stage)
            raise OSError(code, "injected")
    msg = str(e.value)
    assert msg.startswith(f"cannot write --out {out}: {words}") and "\n" not in msg
    if code == errno.ENOSPC:
        assert "12,345 bytes needed" in msg and "bytes free" in msg
    assert list(tmp_path.iterdir()) == []  # no staging, and the parents it made are gone


def _save(path, a):
    with open(path, "wb") as f:  # np.save(path) would append .npy to the temporary name
        np.save(f, a)


def test_single_file_output_has_a_sidecar_and_the_same_rules(tmp_path):
    out = tmp_path / "scores.npy"
    with output_file(out) as tmp:
        _save(tmp, np.arange(3))
    side = tmp_path / ("scores.npy" + MARKER)
    rec = json.loads(side.read_text())["files"]["scores.npy"]
    assert rec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(out, single_file=True)
    with pytest.raises(OutputError):
        with output_file(out, overwrite=True) as tmp:
            _save(tmp, np.arange(4))
            raise OSError(errno.ENOSPC, "injected")
    assert np.load(out).tolist() == [0, 1, 2] and json.loads(side.read_text())["files"]["scores.npy"] == rec
    with output_file(out, overwrite=True) as tmp:
        _save(tmp, np.arange(4))
    assert np.load(out).tolist() == [0, 1, 2, 3]
    out.write_bytes(b"changed")
    with pytest.raises(OutputError, match="changed since proxyscale wrote it"):
        check_output(out, overwrite=True, single_file=True)
    (tmp_path / "theirs.npy").write_bytes(b"theirs")
    with pytest.raises(OutputError, match="exists and was not written by proxyscale"):
        check_output(tmp_path / "theirs.npy", overwrite=True, single_file=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.npy", "scores.npy" + MARKER, "theirs.npy"]

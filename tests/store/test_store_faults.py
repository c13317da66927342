"""A hostile, full, read-only or file-shaped store met through the real CLI: one line each.

One tiny finished study (tests/bad_inputs.py's spec) is copied per test. Full and read-only
disks use a 400 kB tmpfs and a read-only bind mount where this machine lets the test mount
(root in a container); elsewhere those tests skip, and the same paths are covered by injected
faults (tests/run/test_disk_full.py; the EROFS test below)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from bad_inputs import SRC, tiny_spec, write_sources
from proxyscale.api import verify_store
from proxyscale.store import read_json


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HOME": str(cwd / "home"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workspace with spec.yaml and store/, the study finished in it."""
    ws = tmp_path_factory.mktemp("finished")
    write_sources(ws / "data")
    (ws / "home").mkdir()
    (ws / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(ws / "data"), sort_keys=False))
    r = cli("run", "spec.yaml", "--store", "store", "--no-progress", cwd=ws)
    assert r.returncode == 0, r.stderr[-3000:]
    return ws


@pytest.fixture
def ws(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "ws", symlinks=True)
    return tmp_path / "ws"


def steps(ws: Path) -> dict[str, Path]:
    """'kind/name' -> finished step directory."""
    return {f"{d.parent.name}/{d.name.rsplit('-', 1)[0]}": d for d in sorted((ws / "store" / "steps").glob("*/*"))
            if not d.name.startswith(".")}


def _set_files(d: Path, change) -> None:
    rec = read_json(d / "_step.json")
    if change is None:
        del rec["files"]
    else:
        rec["files"] = change(rec["files"])
    (d / "_step.json").write_text(json.dumps(rec))


def test_hostile_records_are_reported_by_verify_and_rerun_by_run(ws):
    st, sha = steps(ws), "0" * 64
    (ws / "outside.txt").write_text("outside\n")
    _set_files(st["ngram/mix-1gram"], lambda f: {**f, "../../../../outside.txt": {"bytes": 8, "sha256": sha}})
    _set_files(st["ngram/prose-1gram"], lambda f: {**f, "/etc/passwd": {"bytes": 1, "sha256": sha}})
    _set_files(st["eval/mix-L1d4-s0"], lambda f: {**f, "/dev/zero": {"bytes": 0, "sha256": sha}})
    _set_files(st["eval/prose-L1d4-s0"], lambda f: [[k, v] for k, v in f.items()])
    _set_files(st["eval/prose-L1d8-s0"], lambda f: {k: {"bytes": v["bytes"]} for k, v in f.items()})
    _set_files(st["testset/mixed"], None)
    (st["analyze/tiny"] / "_step.json").write_text("[1, 2]")
    link = st["eval/mix-L1d8-s0"] / "mixed.parquet"  # an identical copy outside the store, linked
    shutil.copy(link, ws / "copy.parquet")
    link.unlink()
    link.symlink_to(ws / "copy.parquet")
    want = {"ngram/mix-1gram": "recorded file '../../../../outside.txt' is not a plain relative path",
            "ngram/prose-1gram": "recorded file '/etc/passwd' is not a plain relative path",
            "eval/mix-L1d4-s0": "recorded file '/dev/zero' is not a plain relative path",
            "eval/mix-L1d8-s0": "mixed.parquet is a symlink",
            "eval/prose-L1d4-s0": "_step.json records its files as a JSON list, not a mapping",
            "eval/prose-L1d8-s0": "recorded file 'mixed.parquet' has no valid sha256",
            "testset/mixed": "_step.json records no files",
            "analyze/tiny": "_step.json holds a JSON list, not an object"}
    keys = {n: f"{d.parent.name}/{d.name}" for n, d in st.items()}

    r = cli("verify", "--store", "store", cwd=ws, timeout=60)  # /dev/zero must not hang it
    assert r.returncode == 1 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[0] == "15 finished step(s) checked, 8 damaged"
    for name, reason in want.items():
        assert f"damaged: {keys[name]}: {reason}" in r.stdout, (name, r.stdout)

    r = cli("run", "spec.yaml", "--store", "store", "--no-progress", cwd=ws)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for name, reason in want.items():
        assert f"re-ran {keys[name]}: {reason}" in r.stderr, (name, r.stderr)
    assert (ws / "outside.txt").read_text() == "outside\n"
    assert not link.is_symlink() and link.is_file()  # re-created inside the store
    for name in want:  # every re-run step has a clean record of its own files again
        files = read_json(st[name] / "_step.json")["files"]
        assert files and all(not k.startswith(("/", "..")) for k in files)
    assert verify_store(None, ws / "store") == ("15 finished step(s) checked, 0 damaged", 0)


COMMANDS = {"run": ("run", "spec.yaml", "--store", "{f}"), "demo": ("demo", "--store", "{f}"),
            "status": ("status", "spec.yaml", "--store", "{f}"), "verify": ("verify", "--store", "{f}"),
            "report": ("report", "spec.yaml", "--store", "{f}"), "plan": ("plan", "spec.yaml", "--store", "{f}"),
            "attribute": ("attribute", "--store", "{f}", "--n-train", "20", "--n-targets", "5")}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_store_that_is_a_file_is_one_line_for_every_command(finished, tmp_path, monkeypatch, capsys, command):
    from proxyscale import cli as cli_module

    somefile = tmp_path / "somefile"
    somefile.write_text("not a store\n")
    monkeypatch.chdir(finished)
    monkeypatch.setattr(sys, "argv", ["proxyscale", *(a.format(f=somefile) for a in COMMANDS[command])])
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == (f"error: --store {somefile} is a file, not a directory; pass a directory "
                                         "for the run store (a new one is created there)\n")
    assert somefile.read_text() == "not a store\n"


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_read_only_store_is_one_line_when_writing(ws, monkeypatch, capsys, command):
    """EROFS injected at the write probe (root may write anywhere, so no chmod can show it)."""
    from proxyscale import cli as cli_module
    from proxyscale.store import faults

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(faults.tempfile, "mkstemp", read_only)
    monkeypatch.chdir(ws)
    args = ["run", "spec.yaml", "--store", "store", "--no-progress"] if command == "run" else \
        ["report", "spec.yaml", "--store", "store"]
    monkeypatch.setattr(sys, "argv", ["proxyscale", *args])
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: the store store is read-only (Read-only file system): `proxyscale status` and "
                          "`verify` work on it as it is; to run or report, pass --store a writable copy")


# -- real mounts (root in a container); skipped where mounting is not allowed -----------------------------------

@contextmanager
def mounted(*how: str, target: Path):
    target.mkdir(exist_ok=True)
    r = subprocess.run(["mount", *how, str(target)], capture_output=True, text=True) \
        if shutil.which("mount") and os.geteuid() == 0 else None
    if r is None or r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip() if r else 'not root'}); fault injection covers this")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextmanager
def read_only_view(src: Path, target: Path):
    with mounted("--bind", str(src), target=target):
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({r.stderr.strip()})")
        yield target


def test_a_read_only_store_is_one_line_for_run_and_readable_for_verify(ws):
    with read_only_view(ws / "store", ws / f"ro-{uuid.uuid4().hex[:6]}") as ro:
        line = one_line(cli("run", "spec.yaml", "--store", ro.name, "--no-progress", cwd=ws))
        assert line.startswith(f"error: the store {ro.name} is read-only") and "writable copy" in line, line
        r = cli("verify", "--store", ro.name, cwd=ws)
        assert r.returncode == 0 and "0 damaged" in r.stdout


def test_an_unfinished_study_in_a_read_only_store_is_refused_before_any_step_runs(ws):
    shutil.rmtree(steps(ws)["analyze/tiny"])
    with read_only_view(ws / "store", ws / f"ro-{uuid.uuid4().hex[:6]}") as ro:
        r = cli("run", "spec.yaml", "--store", ro.name, "--no-progress", cwd=ws)
        line = one_line(r)
        assert line.startswith(f"error: the store {ro.name} is read-only") and "died" not in r.stderr, line


def test_a_full_disk_ends_the_run_in_one_line_and_marks_nothing_half_written_done(finished, tmp_path):
    ws = tmp_path
    shutil.copy(finished / "spec.yaml", ws / "spec.yaml")
    (ws / "home").mkdir()
    with mounted("-t", "tmpfs", "-o", "size=400k", "tmpfs", target=ws / "full"):
        r = cli("run", "spec.yaml", "--store", "full/store", "--no-progress", cwd=ws, timeout=120)
        line = one_line(r)
        assert "no space left on the disk of the store full/store" in line and "bytes free" in line, line
        done = list((ws / "full" / "store" / "steps").glob("*/*/_step.json"))
        assert len(done) < 15  # it did fill up
        assert verify_store(None, ws / "full" / "store") == (f"{len(done)} finished step(s) checked, 0 damaged", 0)

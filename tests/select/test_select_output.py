"""`proxyscale select` (and the other commands that write a user-named output) through the real
CLI: the output policy and the read policy, checked by exit code, the one `error:` line, and
the user's files byte for byte."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _select(pool: Path, target: Path, out: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli("select", "--method", "random", "--pool", str(pool), "--target", str(target), "--n", "4",
                "--out", out, *extra, cwd=cwd)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def ws(tmp_path, text_pool):
    """A workspace: data/pool.jsonl, data/target.jsonl, and a folder of the user's holding a manifest.json."""
    pool, target, _ = text_pool
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.jsonl").write_bytes(pool.read_bytes())
    (data / "target.jsonl").write_bytes(target.read_bytes())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "own manifest"}\n')
    (mine / "results.csv").write_text("a,b\n1,2\n")
    return tmp_path


def test_out_refusals_leave_every_file_as_it_was(ws):
    pool, target = ws / "data" / "pool.jsonl", ws / "data" / "target.jsonl"
    before = _files(ws)
    _refused(_select(pool, target, ".", ws / "mine"), "already holds files proxyscale did not write",
             "manifest.json")
    _refused(_select(pool, target, str(pool), ws), "is the input --pool")
    _refused(_select(ws / "data", target, str(ws / "data" / "sel"), ws), "lies inside the input --pool")
    _refused(_select(pool, target, str(ws / "data"), ws), "contains the input --pool")
    _refused(_select(pool, target, "data/../data", ws), "contains the input --pool")  # `..` resolved
    (ws / "link").symlink_to(ws / "data")
    _refused(_select(ws / "data", target, "link/x", ws), "lies inside the input --pool")  # symlinks resolved
    _refused(_select(pool, target, "/etc/proxyscale-x", ws), "under the system directory /etc")
    assert not Path("/etc/proxyscale-x").exists()
    assert _files(ws) == before


def test_rerun_needs_overwrite_and_never_deletes_a_foreign_file(ws):
    pool, target = ws / "data" / "pool.jsonl", ws / "data" / "target.jsonl"
    r = _select(pool, target, "sel", ws)
    assert r.returncode == 0, r.stderr
    first = _files(ws / "sel")
    assert sorted(first) == [".proxyscale-output.json", "chosen.txt", "manifest.json", "scores.parquet"]
    assert len(first["chosen.txt"].decode().split()) == 4
    _refused(_select(pool, target, "sel", ws), "earlier proxyscale output", "pass --overwrite")
    assert _files(ws / "sel") == first
    r = _cli("select", "--method", "random", "--pool", str(pool), "--target", str(target), "--n", "6",
             "--out", "sel", "--overwrite", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert len((ws / "sel" / "chosen.txt").read_text().split()) == 6  # replaced
    (ws / "sel" / "thesis.tex").write_text("years of work\n")
    before = _files(ws)
    _refused(_select(pool, target, "sel", ws, "--overwrite"), "thesis.tex was not written by proxyscale")
    assert _files(ws) == before
    assert sorted(p.name for p in ws.iterdir()) == ["data", "mine", "sel"]  # no staging left


def test_out_through_dotdot_is_the_users_choice(ws):
    """A relative path with `..` is allowed (only system directories and inputs are refused)."""
    (ws / "run").mkdir()
    r = _select(ws / "data" / "pool.jsonl", ws / "data" / "target.jsonl", "../outside", ws / "run")
    assert r.returncode == 0, r.stderr
    assert (ws / "outside" / "chosen.txt").is_file()


def test_bom_jsonl_pool_gives_the_same_selection(ws, tmp_path_factory):
    target = ws / "data" / "target.jsonl"
    bom = tmp_path_factory.mktemp("bom")
    (bom / "pool.jsonl").write_bytes(b"\xef\xbb\xbf" + (ws / "data" / "pool.jsonl").read_bytes())
    for method in ("random", "dsir"):
        a = _cli("select", "--method", method, "--pool", str(ws / "data" / "pool.jsonl"), "--target", str(target),
                 "--n", "5", "--out", f"plain-{method}", cwd=ws)
        b = _cli("select", "--method", method, "--pool", str(bom / "pool.jsonl"), "--target", str(target),
                 "--n", "5", "--out", f"bom-{method}", cwd=ws)
        assert a.returncode == 0 and b.returncode == 0, b.stderr
        plain = (ws / f"plain-{method}" / "chosen.txt").read_text()
        assert plain == (ws / f"bom-{method}" / "chosen.txt").read_text() and len(plain.split()) == 5


def test_nul_txt_is_refused_by_select_as_by_a_study_source(ws):
    """The same file gets the same answer: select reads through the study sources' read policy."""
    import yaml

    from bad_inputs import tiny_spec, write_sources

    nul = ws / "nul"
    nul.mkdir()
    (nul / "a.txt").write_bytes(b"some text\0more text\n")
    before = _files(ws)
    said = _refused(_select(nul, ws / "data" / "target.jsonl", "sel", ws), "--pool: ")
    write_sources(ws / "src")
    spec = tiny_spec(ws / "src")
    spec["sources"]["doc"] = {"kind": "local", "path": str(nul), "txt_unit": "file"}
    (ws / "spec.yaml").write_text(yaml.safe_dump(spec))
    study = _refused(_cli("run", "spec.yaml", "--store", "store", "--no-progress", cwd=ws), "sources.doc: ")
    why = f"{nul / 'a.txt'}: holds a NUL byte at byte 9, so it is binary, not text"
    assert said.split(": ", 2)[2] == study.split(": ", 2)[2] and why in said
    assert not (ws / "store" / "steps").exists() and not (ws / "sel").exists()
    assert {k: v for k, v in _files(ws).items() if k in before} == before


def test_attribute_and_corpus_outputs_follow_the_policy(ws):
    """`attribute --out` inside the store or over a file of the user's, and `corpus build --out`
    over the user's folder or /etc, are refused before any work."""
    before = _files(ws)
    _refused(_cli("attribute", "--out", "store/scores.npy", "--store", "store", "--no-progress", cwd=ws),
             "lies inside the input --store")
    (ws / "scores.npy").write_bytes(b"not ours")
    _refused(_cli("attribute", "--store", "store", "--overwrite", "--no-progress", cwd=ws),
             "exists and was not written by proxyscale")
    _refused(_cli("corpus", "build", "--out", "mine", "--no-apt", "--overwrite", cwd=ws),
             "did not write (e.g. manifest.json)")
    _refused(_cli("corpus", "build", "--out", "/etc/proxyscale-corpus", "--no-apt", cwd=ws), "system directory /etc")
    assert not (ws / "store").exists() and not Path("/etc/proxyscale-corpus").exists()
    before["scores.npy"] = b"not ours"
    assert _files(ws) == before


def test_select_on_a_full_disk_through_the_cli(tmp_path, monkeypatch, capsys, text_pool):
    """`proxyscale select` (cli.main in-process) when the disk fills while writing: one error
    line naming the path, exit 2, nothing half-written, the user's files untouched."""
    import proxyscale.select.io as sio
    from proxyscale import cli

    pool, target, _ = text_pool
    (tmp_path / "keep.txt").write_text("mine\n")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sio, "write_table", full)
    out = tmp_path / "sel"
    monkeypatch.setattr(sys, "argv", ["proxyscale", "select", "--method", "random", "--pool", str(pool),
                                      "--target", str(target), "--n", "3", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: cannot write --out {out}: no space left on device (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "mine\n"

"""Embedded corpus: extractors on small synthetic package trees, the Python-installation build
for real, the apt path through fake apt-get + real dpkg-deb, atomicity and determinism."""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxyscale.data import corpus, extract
from proxyscale.data.corpus import build_corpus, domain_file, load_manifest
from proxyscale.errors import DataError

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n: int) -> str:
    s = ""
    while True:
        s = _B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def _make_dictd(root: Path, db: str, entries: list[tuple[list[str], str]]) -> None:
    """A dictd database: gzip text + an index of headword, base64 offset, base64 length."""
    data, index = b"", []
    for headwords, block in [(["00-database-info"], "about this db\n")] + entries:
        raw = block.encode()
        for hw in headwords:
            index.append(f"{hw}\t{_b64(len(data))}\t{_b64(len(raw))}")
        data += raw
    d = root / "usr/share/dictd"
    d.mkdir(parents=True)
    (d / f"{db}.dict.dz").write_bytes(gzip.compress(data))
    (d / f"{db}.index").write_text("\n".join(sorted(index)) + "\n")


def test_b64_matches_standard_base64_digits():
    # dictd offsets are base64 digits of a big-endian integer; check against the stdlib alphabet
    for n in (0, 1, 63, 64, 4095, 123456789):
        enc = _b64(n)
        assert extract._b64int(enc) == n
        assert set(enc) <= set(base64.b64encode(bytes(range(256))).decode())


def test_dictd_gcide_entries_keep_headword_and_clean_definition(tmp_path):
    _make_dictd(tmp_path, "gcide", [
        (["Cockle", "Cockling sea"], 'Cockle \\Coc"kle\\, v. t. [imp. & p. p. {Cockled}; p. pr. &\n'
                                     '   vb. n. {Cockling}.] [Of uncertain origin.]\n   To cause to contract'
                                     ' into wrinkles.\n   [1913 Webster]\n'),
        (["Mortuary"], 'Mortuary \\Mor"tu*a*ry\\, n.; pl. {Mortuaries}. [LL. mortuarium.]\n'
                       '   1. A sort of ecclesiastical heriot.\n   [1913 Webster]\n'),
    ])
    cands = extract.dictd(tmp_path, "gcide", extract._gcide_entry)
    # the shared block is one document; the database-info entry is skipped
    assert [c[0] for c in cands] == ["gcide/Cockle#0", "gcide/Mortuary#0"]
    text, title = cands[0][1]()
    assert title == "Cockle" and text == "To cause to contract into wrinkles."
    text, title = cands[1][1]()
    assert title == "Mortuary" and text == "1. A sort of ecclesiastical heriot."


def test_dictd_foldoc_and_jargon_entries(tmp_path):
    _make_dictd(tmp_path, "foldoc", [(["niso"], "NISO\n\n   <body> National Information Standards\n"
                                                "   Organisation (USA).\n\n   (1997-05-11)\n\n")])
    ((doc_id, load),) = extract.dictd(tmp_path, "foldoc", extract._titled_entry)
    assert doc_id == "foldoc/niso#0"
    assert load() == ("National Information Standards Organisation (USA).", "NISO")


def test_fortunes_split_on_percent_lines_and_skip_dat_and_links(tmp_path):
    d = tmp_path / "usr/share/games/fortunes"
    d.mkdir(parents=True)
    (d / "wisdom").write_text("First saying.\n%\nSecond\n  saying, in\x08n two lines.\n%\n")
    (d / "wisdom.dat").write_bytes(b"\x00\x01binary")
    (d / "alias").symlink_to("wisdom")
    cands = extract.fortunes({"fortunes": tmp_path})
    texts = [c[1]()[0] for c in cands]
    assert texts == ["First saying.", "Second\n  saying, in two lines."]  # "n\bn" is a bold n
    assert len({c[0] for c in cands}) == 2


def test_man_renderers_turn_macros_into_text():
    src = '.\\" a comment\n.TH FOO 1\n.SH NAME\nfoo \\- frobnicate\n.SH DESCRIPTION\n.B foo\nreads \\fIfiles\\fR.\n'
    plain = extract.strip_man_macros(src)
    assert "comment" not in plain and "NAME" in plain and "foo - frobnicate" in plain and "\\f" not in plain
    if shutil.which("groff"):
        text = extract.render_man(src)
        assert "NAME" in text and "frobnicate" in text and "reads files." in text
        assert "FOO(1)" not in text  # running header dropped


def test_write_domain_caps_bytes_by_hash_order_and_keeps_source_order(tmp_path):
    cands = [(f"d/{i}", lambda i=i: (f"document number {i:03d} " * 5, None)) for i in range(200)]
    size = len(cands[0][1]()[0].encode())
    entry = corpus._write_domain(tmp_path, "toy", cands, cap=size * 20)
    lines = [json.loads(x) for x in (tmp_path / "toy.jsonl").read_text().splitlines()]
    assert 20 <= len(lines) <= 21 and entry["n_docs"] == len(lines)
    nums = [int(r["id"].split("/")[1]) for r in lines]
    assert nums == sorted(nums)
    assert max(nums) > 100  # a sample of the whole domain, not its head
    assert entry["sha256"] == hashlib.sha256((tmp_path / "toy.jsonl").read_bytes()).hexdigest()


def test_python_fallback_builds_real_domains_deterministically(tmp_path):
    m1 = build_corpus(tmp_path / "a", use_apt=False, max_bytes_per_domain=60_000)
    m2 = build_corpus(tmp_path / "b", use_apt=False, max_bytes_per_domain=60_000)
    assert set(m1["domains"]) == {"pycode", "pydocstrings", "pyref"} and m1["builder"] == "python"
    assert m1 == m2
    for _name, d in m1["domains"].items():
        raw = (tmp_path / "a" / d["file"]).read_bytes()
        assert raw == (tmp_path / "b" / d["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == d["sha256"] and len(raw) == d["file_bytes"]
        recs = [json.loads(x) for x in raw.decode().splitlines()]
        assert len(recs) == d["n_docs"] and all(r["text"].strip() for r in recs)
        assert 60_000 <= d["bytes"] == sum(len(r["text"].encode()) for r in recs)
    code = [json.loads(x)["text"] for x in (tmp_path / "a/pycode.jsonl").read_text().splitlines()]
    assert sum(("def " in t or "import " in t) for t in code) > len(code) / 2
    assert load_manifest(tmp_path / "a") == m1
    assert domain_file(tmp_path / "a", "pyref", verify=True).name == "pyref.jsonl"


class _ReleasesTheGil:
    """Garbage whose finalizer lets another thread run, as any finalizer may mid-parse."""

    def __del__(self):
        time.sleep(0)


def test_docstrings_parse_safely_from_many_threads():
    # CPython 3.11's AST converter keeps its recursion depth per interpreter: two parses
    # interleaved by a thread switch failed with "SystemError: AST constructor recursion depth
    # mismatch" before the parse was serialised (the corpus loads candidates in 4 threads).
    files = [f for _, f in extract._stdlib_files()][:200] * 2

    def load(i_f):
        i, f = i_f
        for _ in range(3):  # cyclic garbage, collected during a later parse
            g = _ReleasesTheGil()
            g.me = g
            del g
        return _nested(i % 7 * 5, lambda: extract._docstrings(f))

    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(load, enumerate(files)))
    assert loaded == [extract._docstrings(f) for f in files]
    assert sum(x is not None for x in loaded) > len(files) // 2


def _nested(depth, fn):
    """``fn()`` called ``depth`` frames down (threads parse at different stack depths)."""
    return fn() if depth == 0 else _nested(depth - 1, fn)


def test_missing_corpus_and_unknown_domain_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="proxyscale corpus build"):
        load_manifest(tmp_path / "nowhere")
    build_corpus(tmp_path / "c", use_apt=False, domains=["pyref"], max_bytes_per_domain=10_000)
    with pytest.raises(DataError, match="did you mean 'pyref'"):
        domain_file(tmp_path / "c", "pyrefs")
    with pytest.raises(DataError, match="unknown corpus domain"):
        build_corpus(tmp_path / "d", use_apt=False, domains=["nope"])
    with pytest.raises(DataError, match="needs apt"):
        build_corpus(tmp_path / "d", use_apt=False, domains=["bible"])


def test_killed_rebuild_keeps_the_old_corpus_and_leaves_no_partial_files(tmp_path, monkeypatch):
    out = tmp_path / "c"
    build_corpus(out, use_apt=False, domains=["pyref"], max_bytes_per_domain=10_000)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(_roots):
        raise KeyboardInterrupt

    monkeypatch.setitem(corpus.ALL_DOMAINS, "pycode", corpus.DomainRecipe((), killed, "dies"))
    with pytest.raises(KeyboardInterrupt):
        build_corpus(out, use_apt=False, domains=["pyref", "pycode"], max_bytes_per_domain=10_000, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # built beside it: the old corpus stands
    assert sorted(before) == [".proxyscale-output.json", "manifest.json", "pyref.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging directory left
    assert load_manifest(out)["domains"].keys() == {"pyref"}


def _fake_apt(tmp_path: Path, monkeypatch, delay_s: float = 0.0) -> Path:
    """A real .deb of package ``fortunes`` built with dpkg-deb, served by a fake apt-get (first on
    PATH) that logs its calls, waits ``delay_s`` per download and has no other package; the log."""
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text("Package: fortunes\nVersion: 9:1.2-3\nArchitecture: all\n"
                                        "Maintainer: nobody <n@example.org>\nDescription: test\n")
    fdir = pkg / "usr/share/games/fortunes"
    fdir.mkdir(parents=True)
    (fdir / "art").write_text("\n%\n".join(f"Quote number {i} about art." for i in range(50)) + "\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(tmp_path / "f.deb")],
                   check=True, capture_output=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    script = bindir / "apt-get"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n[ \"$1\" = download ] && sleep {delay_s}\n"
                      f"[ \"$1\" = download ] && [ \"$2\" = fortunes ] "
                      f"&& cp {tmp_path / 'f.deb'} ./fortunes_9%3a1.2-3_all.deb\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_apt_path_with_fake_apt_get_and_real_dpkg_deb(tmp_path, monkeypatch):
    log = _fake_apt(tmp_path, monkeypatch)
    work = tmp_path / "work"
    m = build_corpus(tmp_path / "out", work_dir=work, domains=["quotes"], max_bytes_per_domain=10_000)
    d = m["domains"]["quotes"]
    assert m["builder"] == "apt" and d["packages"] == {"fortunes": "9:1.2-3"} and d["n_docs"] == 50
    assert log.read_text().splitlines() == ["download fortunes"]
    m2 = build_corpus(tmp_path / "out2", work_dir=work, domains=["quotes"], max_bytes_per_domain=10_000)
    assert m2 == m and len(log.read_text().splitlines()) == 1  # the cached .deb was reused
    with pytest.raises(DataError, match="no corpus domain"):
        build_corpus(tmp_path / "out3", work_dir=work, domains=["bible"])  # fake apt has no bible


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_prefetch_downloads_side_by_side_and_updates_apt_once(tmp_path, monkeypatch):
    """Three domains fetched by three threads at once: the one the fake apt has is downloaded and
    unpacked into the cache; the two it lacks fail side by side, and `apt-get update` runs once."""
    from concurrent.futures import ThreadPoolExecutor

    log = _fake_apt(tmp_path, monkeypatch, delay_s=0.3)
    apt = corpus._Apt(tmp_path / "work", lambda msg: None)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for f in apt.prefetch(pool, ["dictionary", "computing", "quotes"]).values():
            assert f.result() is None  # a failure is left for the build to meet and report
    calls = log.read_text().splitlines()
    assert calls.count("update") == 1
    # each missing package tried once, and once more by the thread that ran the update
    assert calls.count("download fortunes") == 1
    assert calls.count("download dict-gcide") + calls.count("download dict-foldoc") == 3
    assert set(calls) == {"update", "download fortunes", "download dict-gcide", "download dict-foldoc"}
    assert (tmp_path / "work/unpacked/fortunes_9%3a1.2-3_all/usr/share/games/fortunes/art").is_file()


@pytest.mark.slow
def test_full_apt_build_has_six_domains_of_two_megabytes(tmp_path):
    if not corpus.apt_available():
        pytest.skip("needs apt-get and dpkg-deb")
    m = build_corpus(tmp_path / "c", work_dir=tmp_path / "w")
    big = [d for d, e in m["domains"].items() if e["bytes"] >= 2_000_000]
    assert len(big) >= 6, m["skipped"]
    dictionary = [json.loads(x) for x in (tmp_path / "c/dictionary.jsonl").read_text().splitlines()[:50]]
    assert all(r.get("title") and r["text"] for r in dictionary)

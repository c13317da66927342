"""Sources: local txt/jsonl/parquet files and directories, the embedded corpus, helpful errors."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxyscale.config import from_dict
from proxyscale.data.corpus import build_corpus
from proxyscale.data.sources import Document, SourceSpec, iter_documents
from proxyscale.errors import ConfigError, DataError


def _local(path, **kw):
    return list(iter_documents(SourceSpec("local", path=str(path), **kw)))


def test_txt_blocks_and_whole_files(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first block\nstill first\n\n  \nsecond block\n\n\nthird\n")
    docs = _local(f)
    assert [d.text for d in docs] == ["first block\nstill first", "second block", "third"]
    assert [d.id for d in docs] == ["a.txt:0", "a.txt:1", "a.txt:2"]
    (tmp_path / "b.txt").write_text("one\n\ntwo\n")
    whole = _local(tmp_path, txt_unit="file")
    assert [(d.id, d.text) for d in whole] == [("a.txt", f.read_text().strip("\n")), ("b.txt", "one\n\ntwo")]


def test_jsonl_and_parquet_fields_and_ids(tmp_path):
    rows = [{"body": f"text {i}", "key": f"k{i}", "head": f"T{i}"} for i in range(3)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d/x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d/y.parquet")
    (tmp_path / "d/ignored.csv").write_text("a,b\n")
    docs = _local(tmp_path / "d", text_field="body", id_field="key", title_field="head")
    assert docs == [Document(f"k{i}", f"text {i}", f"T{i}") for i in range(3)] * 2
    plain = _local(tmp_path / "d/x.jsonl", text_field="body")
    assert [d.id for d in plain] == ["x.jsonl:1", "x.jsonl:2", "x.jsonl:3"] and plain[0].title is None
    assert [d.id for d in _local(tmp_path / "d/y.parquet", text_field="body")] == ["y.parquet:0", "y.parquet:1",
                                                                                  "y.parquet:2"]


def test_max_docs_caps_any_source(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"p{i}" for i in range(10)))
    assert [d.text for d in _local(tmp_path / "a.txt", max_docs=3)] == ["p0", "p1", "p2"]


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.txt", "does not exist"),
    (lambda p: (p / "e.txt").write_text("\n\n  \n") and p / "e.txt", "has no documents"),
    (lambda p: (p / "l.txt").write_bytes("caf\xe9 au lait".encode("latin-1")) and p / "l.txt",
     r"l\.txt: not valid UTF-8"),
    (lambda p: (p / "l.jsonl").write_bytes(b'{"text": "\xff"}\n') and p / "l.jsonl",
     r"l\.jsonl: line 1 is not valid UTF-8"),
    (lambda p: (p / "f.jsonl").write_text('{"txt": "x"}\n') and p / "f.jsonl", "no string field 'text'"),
    (lambda p: (p / "g.jsonl").write_text("not json\n") and p / "g.jsonl", "line 1 is not JSON"),
    (lambda p: (p / "x.csv").write_text("a\n") and p / "x.csv", "unsupported file type"),
    (lambda p: (p / "sub").mkdir() or p / "sub", "no .txt, .jsonl, .parquet files"),
])
def test_bad_local_sources_raise_data_errors_naming_the_file(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        _local(make(tmp_path))


def test_spec_validation_and_config_round_trip():
    with pytest.raises(ConfigError, match="needs a 'domain'"):
        SourceSpec("embedded")
    with pytest.raises(ConfigError, match="needs a 'path'"):
        SourceSpec("local")
    with pytest.raises(ConfigError, match="did you mean 'text_field'"):
        from_dict(SourceSpec, {"kind": "local", "path": "x", "text_feild": "t"})
    spec = from_dict(SourceSpec, {"kind": "hf", "path": "allenai/c4", "name": "en", "split": "validation"})
    assert spec.key == "hf/allenai/c4/en/validation" and spec.streaming
    assert SourceSpec("local", path="/a/b/c.txt").key == SourceSpec("local", path="/x/c.txt").key
    assert SourceSpec("embedded", domain="bible", label="kjv").key == "kjv"


def test_embedded_source_reads_corpus_domain(tmp_path):
    with pytest.raises(DataError, match="proxyscale corpus build"):
        list(iter_documents(SourceSpec("embedded", domain="pyref"), tmp_path / "none"))
    with pytest.raises(DataError, match="corpus directory"):
        list(iter_documents(SourceSpec("embedded", domain="pyref")))
    m = build_corpus(tmp_path / "c", use_apt=False, domains=["pyref"], max_bytes_per_domain=20_000)
    docs = list(iter_documents(SourceSpec("embedded", domain="pyref"), tmp_path / "c"))
    assert len(docs) == m["domains"]["pyref"]["n_docs"]
    assert all(d.id.startswith("pyref/") and d.title and d.text for d in docs)

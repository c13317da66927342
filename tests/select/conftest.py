"""A small real-text pool (offline): Python's language-reference prose and stdlib code, as JSONL,
and a target of code examples disjoint from it."""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest


def _code_files() -> list[Path]:
    std = Path(sysconfig.get_paths()["stdlib"])
    return sorted((std / "json").glob("*.py")) + sorted((std / "email").glob("*.py"))[:12]


@pytest.fixture(scope="session")
def text_pool(tmp_path_factory):
    """(pool.jsonl, target.jsonl, ids of code documents in the pool)."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("pool")
    prose = [(f"prose-{k}", v) for k, v in sorted(topics.items())[:80]]
    code = [(f"code-{p.stem}-{i}", p.read_text()[:4000]) for i, p in enumerate(_code_files())]
    pool, target = prose + code[::2], code[1::2]
    with open(root / "pool.jsonl", "w") as f:
        for i, t in pool:
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    with open(root / "target.jsonl", "w") as f:
        for _, t in target:
            f.write(json.dumps({"text": t}) + "\n")
    return root / "pool.jsonl", root / "target.jsonl", {i for i, _ in code[::2]}

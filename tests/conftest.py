"""Fixtures shared across the test tree."""
from __future__ import annotations

import ast
import json
import sys
import sysconfig
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """Each test ends with torch's thread count as it began. A step run in the test's own process
    sets the count its step gets (run/worker.py) and keeps it; without this, a later test (or a
    module fixture it sets up) would run at a count that depends on which tests ran before it in
    this process, and bit-for-bit comparisons would depend on the test order."""
    torch = sys.modules.get("torch")  # not imported yet: nothing to keep
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fresh_threads() -> int:
    """torch's thread count in a new process here (what a CLI run in a subprocess gets). Test
    modules set their own process's count when imported, so it is asked of a new process."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (vision and LDS tests: results must not depend on the
    machine's core count, and small matmuls are faster single-threaded)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def text_sources(tmp_path_factory) -> Path:
    """Real text that every machine has offline, as local sources: ``prose/`` (the language
    reference topics, one file each), ``code/`` (stdlib json and email modules) and
    ``docstrings.jsonl`` (their functions' and classes' docstrings)."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("sources")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (root / "prose").mkdir()
    for i, (_k, v) in enumerate(sorted(topics.items())[:120]):
        (root / "prose" / f"{i:03d}.txt").write_text(v)
    (root / "code").mkdir()
    doc_lines = []
    for i, f in enumerate(sorted((stdlib / "json").glob("*.py")) + sorted((stdlib / "email").glob("*.py"))[:12]):
        text = f.read_text()
        (root / "code" / f"{i:03d}.txt").write_text(text)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                doc_lines.append(json.dumps({"text": ast.get_docstring(node), "id": f"{f.stem}.{node.name}"}))
    (root / "docstrings.jsonl").write_text("\n".join(doc_lines) + "\n")
    return root

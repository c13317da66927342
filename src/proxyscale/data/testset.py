"""The on-disk form of a test set, shared by every evaluator (neural and n-gram).

A test set is a list of examples. Each example has one or more *candidates*: a full token
sequence (context followed by the tokens to predict) and the index ``pred_start`` of the first
predicted token. ``label`` names the correct candidate. Loss is taken over the predicted tokens
of the correct candidate only:

- whole-sequence LM loss (C4/Pile-like): one candidate, ``pred_start = 1``;
- cloze / question→answer (LAMBADA-, SQuAD-, TriviaQA-like): one candidate, ``pred_start`` at
  the first token of the answer;
- multiple choice (HellaSwag-like): one candidate per ending, ``label`` the correct one;
  accuracy is whether the correct ending has the lowest mean per-token loss.

Each example also keeps its text, so that any tokenizer can score it: ``context_text`` (the
text before the predicted tokens; the end-of-text marker a document starts with is not text)
and ``texts``, one continuation text per candidate (the text of its predicted tokens, leading
space included). The tokens of a candidate are exactly its context and continuation texts
(whole UTF-8 characters: :func:`proxyscale.data.tasks.with_text` trims a token cut inside one).

Stored as Parquet with columns ``example_id`` (str), ``candidates`` (list<list<int32>>),
``pred_start`` (list<int32>), ``label`` (int32), ``context_text`` (str) and ``texts``
(list<str>), plus metadata ``kind``, ``name`` and ``format_version`` (2; a version-1 file, from
before texts were kept, reads with ``context_text = None`` and no texts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from ..errors import DataError

TestKind = Literal["lm", "cloze", "qa", "choice"]
TEST_KINDS: tuple[str, ...] = ("lm", "cloze", "qa", "choice")
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Example:
    """One test example; ``candidates[i][pred_start[i]:]`` are the predicted tokens, and (when
    kept) ``context_text`` + ``texts[i]`` their text."""

    example_id: str
    candidates: tuple[tuple[int, ...], ...]
    pred_start: tuple[int, ...]
    label: int = 0
    context_text: Optional[str] = None
    texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.candidates or len(self.candidates) != len(self.pred_start):
            raise DataError(f"example {self.example_id}: "
                            "candidates and pred_start must be non-empty and equal in length")
        if not 0 <= self.label < len(self.candidates):
            raise DataError(f"example {self.example_id}: label {self.label} out of range")
        for c, s in zip(self.candidates, self.pred_start):
            if not 1 <= s < len(c):
                raise DataError(f"example {self.example_id}: pred_start {s} must be in [1, {len(c)})")
        if (self.context_text is None) != (not self.texts) or (self.texts and len(self.texts) != len(self.candidates)):
            raise DataError(f"example {self.example_id}: give context_text and one text per candidate, or neither")

    @property
    def has_text(self) -> bool:
        return self.context_text is not None


@dataclass(frozen=True)
class TestSet:
    """A named list of examples of one kind."""

    name: str
    kind: str
    examples: tuple[Example, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.examples)

    def max_len(self) -> int:
        return max(len(c) for e in self.examples for c in e.candidates)


def write_test_set(ts: TestSet, path: str | Path) -> None:
    """Write ``ts`` to Parquet atomically."""
    import pyarrow as pa

    from ..store import write_table

    if len(ts) == 0:
        raise DataError(f"test set '{ts.name}' has no examples; give it more held-out data or a shorter context")
    table = pa.table({
        "example_id": pa.array([e.example_id for e in ts.examples], pa.string()),
        "candidates": pa.array([[list(c) for c in e.candidates] for e in ts.examples], pa.list_(pa.list_(pa.int32()))),
        "pred_start": pa.array([list(e.pred_start) for e in ts.examples], pa.list_(pa.int32())),
        "label": pa.array([e.label for e in ts.examples], pa.int32()),
        "context_text": pa.array([e.context_text for e in ts.examples], pa.string()),
        "texts": pa.array([list(e.texts) for e in ts.examples], pa.list_(pa.string())),
    }).replace_schema_metadata({"name": ts.name, "kind": ts.kind, "format_version": str(FORMAT_VERSION)})
    write_table(path, table)


def read_test_set(path: str | Path) -> TestSet:
    """Read a test set written by :func:`write_test_set` (any format version)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: test set file is missing; re-run the step that builds it")
    t = pq.read_table(p)
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    cols = t.to_pydict()
    n = len(cols["example_id"])
    ctx_texts, texts = cols.get("context_text", [None] * n), cols.get("texts", [None] * n)
    examples = tuple(
        Example(eid, tuple(tuple(c) for c in cands), tuple(ps), int(lab), ctx, tuple(tx or ()))
        for eid, cands, ps, lab, ctx, tx in zip(cols["example_id"], cols["candidates"], cols["pred_start"],
                                                cols["label"], ctx_texts, texts)
    )
    return TestSet(name=meta.get("name", p.stem), kind=meta.get("kind", "lm"), examples=examples)


def starts_document(ex: Example, eos_id: int) -> bool:
    """True when ``ex`` begins at its document's start: the test-set builders put the end-of-text
    token ``eos_id`` (which has no text) first exactly there, and a context cut from the left never
    starts with it (document text encodes that token's spelling as ordinary text)."""
    return ex.candidates[ex.label][0] == eos_id


def padded_batch(examples: list[Example], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flatten all candidates of ``examples`` into a right-padded batch.

    Returns ``tokens`` (N, L) int64, ``mask`` (N, L-1) float32 marking predicted *target*
    positions (mask[j, t] = 1 iff token t+1 is predicted), ``example_index`` (N,) and
    ``candidate_index`` (N,).
    """
    rows = [(i, j, c, s) for i, e in enumerate(examples) for j, (c, s) in enumerate(zip(e.candidates, e.pred_start))]
    L = max(len(c) for _, _, c, _ in rows)
    tokens = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), L - 1), dtype=np.float32)
    for r, (_, _, c, s) in enumerate(rows):
        tokens[r, : len(c)] = c
        mask[r, s - 1 : len(c) - 1] = 1.0
    ex = np.array([r[0] for r in rows], dtype=np.int64)
    cand = np.array([r[1] for r in rows], dtype=np.int64)
    return tokens, mask, ex, cand

"""Step functions that prepare data: corpus, tokenizer, shard, testset.

Training shards hold only the documents *not* held out; test sets are built only from held-out
documents (one hash decides both), so no test example is ever trained on.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Iterator

from ..store import write_json
from .worker import StepContext


def _source(name: str, raw: dict[str, Any]):
    from ..config import from_dict
    from ..data.sources import SourceSpec

    spec = from_dict(SourceSpec, {"kind": "embedded", **raw}, f"sources.{name}")
    return spec if spec.label else from_dict(SourceSpec, {"kind": "embedded", **raw, "label": name}, name)


def _holdout(cfg: dict[str, Any]):
    from ..data.split import HoldOut

    return HoldOut(fraction=cfg["heldout_fraction"], salt=f"proxyscale-{cfg['seed']}")


def _corpus_dir(ctx: StepContext) -> Path | None:
    return ctx.inputs["corpus"] / "corpus" if "corpus" in ctx.inputs else None


def corpus_step(ctx: StepContext) -> None:
    """Build the embedded corpus from real offline text (Debian packages, else Python's own)."""
    from ..data.corpus import build_corpus

    work = ctx.out / "work"
    try:
        build_corpus(ctx.out / "corpus", work_dir=work, **ctx.config)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # downloaded packages are not a result


def _training_texts(ctx: StepContext, budget: int) -> Iterator[str]:
    """Up to ``budget`` bytes of training (not held-out) text, split evenly across sources."""
    from ..data.sources import iter_documents
    from ..data.split import training_documents

    sources = ctx.config["sources"]
    per = budget // max(1, len(sources))
    for name, raw in sorted(sources.items()):
        spec, used = _source(name, raw), 0
        for d in training_documents(iter_documents(spec, _corpus_dir(ctx)), spec.key, _holdout(ctx.config)):
            yield d.text
            used += len(d.text.encode("utf-8"))
            if used >= per:
                break


def tokenizer_step(ctx: StepContext) -> None:
    """Train the byte-level BPE on a balanced sample of every source's training text."""
    from ..data.tokenizer import train_tokenizer

    tok = train_tokenizer(_training_texts(ctx, ctx.config["sample_bytes"]), ctx.config["vocab_size"],
                          ctx.out / "tokenizer.json")
    write_json(ctx.out / "tokenizer_info.json", {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
                                                 "sha256": tok.sha256})


def shard_step(ctx: StepContext) -> None:
    """Tokenize one source's training documents into a memory-mapped token shard."""
    from ..data.shards import tokenize_to_shard
    from ..data.sources import iter_documents
    from ..data.split import training_documents
    from ..data.tokenizer import load_tokenizer

    spec = _source(ctx.config["source"], ctx.config["spec"])
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    docs = training_documents(iter_documents(spec, _corpus_dir(ctx)), spec.key, _holdout(ctx.config))
    tokenize_to_shard(docs, tok, ctx.out)


def testset_step(ctx: StepContext) -> None:
    """Build a test set from held-out text of its sources (evenly split), or load a hub test set."""
    from ..data.testset import TestSet, write_test_set
    from ..data.tokenizer import load_tokenizer
    from ..seeding import np_rng

    cfg = ctx.config
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    if cfg.get("hub"):
        from ..data.hf import load_hf_test_set

        ts = load_hf_test_set(cfg["hub"], tok, cfg["context"], cfg["n_examples"], name=cfg["name"])
    else:
        from dataclasses import replace

        from ..data.tasks import held_out_test_set

        names = list(cfg["sources"])
        per = math.ceil(cfg["n_examples"] / len(names))
        examples = []
        for s in names:
            part = held_out_test_set(cfg["kind"], cfg["name"], _source(s, cfg["source_specs"][s]), _holdout(cfg),
                                     tok, cfg["context"], per, np_rng(cfg["seed"], "testset", cfg["name"], s),
                                     _corpus_dir(ctx))
            examples += [replace(e, example_id=f"{s}/{e.example_id}") for e in part.examples]
        ts = TestSet(cfg["name"], cfg["kind"], tuple(examples[: cfg["n_examples"]]) if len(names) == 1 else tuple(examples))
    write_test_set(ts, ctx.out / "test.parquet")
    write_json(ctx.out / "testset.json", {"name": ts.name, "kind": ts.kind, "n_examples": len(ts)})

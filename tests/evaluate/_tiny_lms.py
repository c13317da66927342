"""Tiny language models trained by proxyscale on real text (Python's own topic help), exported
to Hugging Face directories with their tokenizer, and text test sets built from that text."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from proxyscale.data.sources import Document
from proxyscale.data.tasks import build_test_set
from proxyscale.data.testset import TestSet
from proxyscale.data.tokenizer import Tokenizer, train_tokenizer
from proxyscale.models.gpt import GPTConfig, load_gpt
from proxyscale.models.hf_export import export_hf
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

CONTEXT = 64


def topic_documents() -> list[Document]:
    """The language reference topics of ``pydoc`` (real English prose with code), one each."""
    from pydoc_data.topics import topics

    return [Document(f"t{i:03d}", text) for i, (_k, text) in enumerate(sorted(topics.items()))]


def tiny_tokenizer(vocab_size: int = 400) -> Tokenizer:
    return train_tokenizer((d.text for d in topic_documents()[::2]), vocab_size)


def train_tiny(out: Path, tok: Tokenizer, seed: int, d_model: int = 32, n_steps: int = 30) -> Path:
    """Train a GPT of width ``d_model`` for ``n_steps`` on windows of the even-numbered topics;
    returns the run directory."""
    ids = np.array([t for d in topic_documents()[::2] for t in (tok.eos_id, *tok.encode(d.text))], dtype=np.int64)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context=CONTEXT, d_model=d_model, n_layers=2, n_heads=4)
    train = TrainConfig(lr=3e-3, batch_size=8, device="cpu", precision="fp32", checkpoint_every=0, log_every=10)

    def batch(step: int) -> np.ndarray:
        starts = np.random.default_rng([seed, step]).integers(0, len(ids) - CONTEXT - 1, size=8)
        return np.stack([ids[s: s + CONTEXT + 1] for s in starts])

    train_lm(cfg, train, batch, n_steps, out, seed)
    return out


def exported(run_dir: Path, tok: Tokenizer, out: Path) -> Path:
    return export_hf(load_gpt(run_dir), out, tokenizer=tok)


def text_test_set(tok: Tokenizer, kind: str, n: int, seed: int = 0) -> TestSet:
    """``n`` examples of ``kind`` from the odd-numbered (never trained on) topics."""
    docs = topic_documents()[1::2]
    return build_test_set(kind, kind, docs, tok, CONTEXT, n, np.random.default_rng(seed))

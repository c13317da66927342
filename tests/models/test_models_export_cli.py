"""`proxyscale export`: a trained model of a store becomes a Hugging Face directory whose
tokenizer encodes text as proxyscale does and whose model gives proxyscale's logits; a missing or
ambiguous reference is one line listing the candidates."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oracles import oracle
from proxyscale.data.tokenizer import train_tokenizer
from proxyscale.models.gpt import GPTConfig, load_gpt
from proxyscale.store import FORMAT_VERSION, write_json
from proxyscale.store.checks import manifest
from proxyscale.train.loop import train_lm
from proxyscale.train.optim import TrainConfig

torch.set_num_threads(1)


def _topics() -> list[str]:
    from pydoc_data.topics import topics

    return [text for _k, text in sorted(topics.items())]


def _finish(step: Path, inputs: dict) -> None:
    write_json(step / "_step.json", {"kind": step.parent.name, "files": manifest(step), "inputs": inputs})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with a tokenizer step and two finished train steps (L1d8 and L1d16) reading it."""
    root = tmp_path_factory.mktemp("store")
    write_json(root / "store.json", {"format_version": FORMAT_VERSION})
    tok_dir = root / "steps" / "tokenizer" / "tok-0123abcd"
    tok = train_tokenizer(_topics()[::2], 350, tok_dir / "tokenizer.json")
    _finish(tok_dir, {})
    for name, width in (("L1d8-aaaa1111", 8), ("L1d16-bbbb2222", 16)):
        step = root / "steps" / "train" / name
        cfg = GPTConfig(vocab_size=tok.vocab_size, context=32, d_model=width, n_layers=1, n_heads=2)
        batch = lambda i: torch.randint(0, tok.vocab_size, (4, 33), generator=torch.Generator().manual_seed(i))  # noqa: E731
        train_lm(cfg, TrainConfig(batch_size=4, device="cpu", precision="fp32", checkpoint_every=0), batch, 3, step, 0)
        _finish(step, {"tokenizer": "steps/tokenizer/tok-0123abcd"})
    return root


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", "export", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_export_loads_with_the_same_tokens_and_logits(store, tmp_path):
    transformers = oracle("transformers")
    out = tmp_path / "hf"
    r = _cli("L1d8", "--store", str(store), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"model: {out}"
    from proxyscale.data.tokenizer import load_tokenizer

    ours = load_tokenizer(store / "steps" / "tokenizer" / "tok-0123abcd" / "tokenizer.json")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert len(hf_tok) == ours.vocab_size > 300  # not the empty one-token tokenizer of a bare export
    for text in _topics()[1:40:2] + ["a literal <|endoftext|> stays bytes"]:  # held-out real text
        assert hf_tok(text)["input_ids"] == ours.encode(text)
    assert hf_tok.eos_token_id == hf_tok.bos_token_id == ours.eos_id
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    gpt = load_gpt(store / "steps" / "train" / "L1d8-aaaa1111").eval()
    ids = torch.tensor([ours.encode(_topics()[3])[:32]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gpt(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ref, words", [
    ("L1d", "'L1d' matches 2 train steps"),
    ("nope", "no finished train step"),
])
def test_missing_or_ambiguous_lists_candidates(store, tmp_path, ref, words):
    r = _cli(ref, "--store", str(store), "--out", str(tmp_path / "x"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr
    assert "train/L1d16-bbbb2222" in lines[0] and "train/L1d8-aaaa1111" in lines[0]
    assert not (tmp_path / "x").exists()


def test_out_inside_the_store_is_refused(store):
    r = _cli("L1d16", "--store", str(store), "--out", str(store / "hf"))
    assert r.returncode == 2 and "lies inside the input --store" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (store / "hf").exists()

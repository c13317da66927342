"""evaluate/hf.py: a local Hugging Face causal LM scored per example on a text test set with its
own tokenizer. Checked against proxyscale's own evaluator (same weights, same tokens), against a
direct transformers forward of a Llama model, and on each refusal."""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch
from _tiny_lms import CONTEXT, exported, text_test_set, tiny_tokenizer, train_tiny

from oracles import oracle
from proxyscale.data.testset import Example
from proxyscale.data.testset import TestSet as TextSet
from proxyscale.errors import ConfigError, DataError
from proxyscale.evaluate.hf import evaluate_hf, load_hf, weights_sha256
from proxyscale.evaluate.lm import evaluate_lm
from proxyscale.models.gpt import load_gpt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tokenizer, run directory, exported HF directory) of one tiny model trained on real text."""
    oracle("transformers")
    root = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    run = train_tiny(root / "run", tok, seed=0)
    return tok, run, exported(run, tok, root / "hf")


@pytest.mark.parametrize("kind", ["lm", "choice"])
def test_equals_proxyscale_evaluator_on_the_same_tokens(tiny, kind):
    """The exported model, re-tokenizing the kept text, gives proxyscale's own per-example losses:
    for ``lm`` the empty context becomes the prefix token (EOS here), as proxyscale's EOS start."""
    tok, run, hf = tiny
    ts = text_test_set(tok, kind, 8)
    ours = evaluate_lm(load_gpt(run), ts)
    got = evaluate_hf(hf, ts, batch_size=5, device="cpu")
    assert list(got.example_id) == [e.example_id for e in ts.examples]
    np.testing.assert_array_equal(got.n_pred_tokens, ours.n_pred_tokens)
    np.testing.assert_allclose(got.loss_sum, ours.loss_sum, rtol=1e-5)
    assert got.loss_sum.min() > 1.0  # a real loss, not a degenerate one
    e0 = ts.examples[0]
    label_text = e0.texts[e0.label]
    assert got.bytes[0] == len(label_text.encode("utf-8"))
    assert got.bpb[0] == pytest.approx(got.loss_sum[0] / (math.log(2) * got.bytes[0]))
    if kind == "choice":
        assert got.correct_prob.between(0, 1).all() and got.accuracy.isin([0.0, 1.0]).all()
    else:
        assert got.correct_prob.isna().all() and got.accuracy.isna().all()


def test_choice_metrics_by_hand(tiny):
    """Candidate probabilities from separate one-candidate evaluations of the same texts."""
    tok, _run, hf = tiny
    e = text_test_set(tok, "choice", 1).examples[0]
    lls = []
    for i, text in enumerate(e.texts):
        one = Example(f"c{i}", (e.candidates[i],), (e.pred_start[i],), 0, e.context_text, (text,))
        lls.append(-float(evaluate_hf(hf, TextSet("one", "choice", (one,)), device="cpu").loss_sum[0]))
    row = evaluate_hf(hf, TextSet("all", "choice", (e,)), device="cpu").iloc[0]
    probs = np.exp(lls) / np.exp(lls).sum()
    assert row.correct_prob == pytest.approx(probs[e.label], rel=1e-4)
    assert row.accuracy == float(np.argmax(lls) == e.label)
    assert row.acc_norm == float(np.argmax(np.array(lls) / [len(t) for t in e.texts]) == e.label)
    assert row.acc_bytes == float(np.argmax(np.array(lls) / [len(t.encode()) for t in e.texts]) == e.label)


def _llama_dir(path, tok):
    """A random tiny Llama with proxyscale's BPE as its tokenizer (BOS added to every encoding)."""
    transformers = oracle("transformers")
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=CONTEXT, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    from tokenizers import Tokenizer as HFTok
    from tokenizers import processors

    raw = HFTok.from_str(tok.to_json())
    raw.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[
        ("<|endoftext|>", tok.eos_id)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    fast.save_pretrained(path)
    return path


def test_llama_matches_a_direct_forward(tmp_path, tiny):
    """Another architecture and a BOS-adding tokenizer: each candidate's summed log-likelihood
    equals one unbatched forward of BOS + context + continuation (the continuation: the tokens
    after the context's own encoding), truncated to the window from the left."""
    tok = tiny[0]
    d = _llama_dir(tmp_path / "llama", tok)
    model, htok = load_hf(d, device="cpu")
    ts = text_test_set(tok, "choice", 4)
    got = evaluate_hf(d, ts, batch_size=3, device="cpu")
    for e, row in zip(ts.examples, got.itertuples()):
        ctx, cont = e.context_text.rstrip(" "), e.context_text[len(e.context_text.rstrip(" ")):] + e.texts[e.label]
        whole = htok(ctx + cont)["input_ids"]
        n_ctx = len(htok(ctx)["input_ids"])
        assert whole[0] == tok.eos_id and whole[1:n_ctx] == tok.encode(ctx)  # BOS, then the context
        ids = torch.tensor([whole[-(CONTEXT + 1):]])
        n_cont = len(whole) - n_ctx
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1)[0]
        ll = logp[-n_cont:].gather(-1, ids[0, -n_cont:, None]).sum().item()
        assert row.loss_sum == pytest.approx(-ll, rel=1e-5)
        assert row.n_pred_tokens == n_cont


def test_weights_sha256_is_over_the_sorted_weight_files(tiny, tmp_path):
    hf = tiny[2]
    want = hashlib.sha256(b"model.safetensors\0" + (hf / "model.safetensors").read_bytes()).hexdigest()
    assert weights_sha256(hf) == want
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in hf.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(raw))
    assert weights_sha256(copy) != want


def _copy_without(src, dst, *skip):
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_refusals_one_line_each(tiny, tmp_path):
    tok, _run, hf = tiny
    ts = text_test_set(tok, "lm", 2)
    cases = {
        "no weights": (_copy_without(hf, tmp_path / "a", "model.safetensors"), DataError, "no .safetensors weights"),
        "no tokenizer": (_copy_without(hf, tmp_path / "b", "tokenizer.json"), DataError, "no tokenizer here"),
    }
    outside = _copy_without(hf, tmp_path / "c", "model.safetensors")
    os.symlink(hf / "model.safetensors", outside / "model.safetensors")
    cases["link outside"] = (outside, DataError, "linking outside its directory")
    bert = _copy_without(hf, tmp_path / "d", "config.json")
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    cases["not causal"] = (bert, ConfigError, "not a causal language model")
    for name, (d, err, words) in cases.items():
        with pytest.raises(err) as info:
            evaluate_hf(d, ts, device="cpu")
        assert words in str(info.value) and "\n" not in str(info.value), name
    inside = _copy_without(hf, tmp_path / "e", "model.safetensors")
    (inside / "w").mkdir()
    (inside / "w" / "real.bin").write_bytes((hf / "model.safetensors").read_bytes())
    os.symlink(inside / "w" / "real.bin", inside / "model.safetensors")
    assert len(evaluate_hf(inside, ts, device="cpu")) == 2  # a link inside the directory is fine
    old = TextSet("old", "lm", tuple(Example(e.example_id, e.candidates, e.pred_start) for e in ts.examples))
    with pytest.raises(DataError, match="has no text"):
        evaluate_hf(hf, old, device="cpu")


@pytest.mark.parametrize("kind", ["choice", "cloze"])
def test_doc_start_gives_the_native_losses(tiny, kind):
    """Examples flagged as starting at their document's start get the prefix token (EOS here)
    before their context: the exported model then gives proxyscale's own losses on every
    example, those whose native tokens begin with EOS included; unflagged, those differ."""
    from proxyscale.data.testset import starts_document

    tok, run, hf = tiny
    cut = text_test_set(tok, kind, 8)  # (prompts cut from the left here: none starts a document)
    # every other example as it would be at its document's start: EOS, then the same tokens and text
    ts = TextSet(cut.name, cut.kind, tuple(
        e if i % 2 else Example(e.example_id, tuple((tok.eos_id, *c) for c in e.candidates),
                                tuple(p + 1 for p in e.pred_start), e.label, e.context_text, e.texts)
        for i, e in enumerate(cut.examples)))
    flags = [starts_document(e, tok.eos_id) for e in ts.examples]
    assert flags == [True, False] * 4
    ours = evaluate_lm(load_gpt(run), ts)
    got = evaluate_hf(hf, ts, batch_size=5, device="cpu", doc_start=flags)
    np.testing.assert_array_equal(got.n_pred_tokens, ours.n_pred_tokens)
    np.testing.assert_allclose(got.loss_sum, ours.loss_sum, rtol=1e-5)
    plain = evaluate_hf(hf, ts, batch_size=5, device="cpu")
    assert (np.abs(plain.loss_sum - ours.loss_sum)[np.array(flags)] > 1e-3).all()
    with pytest.raises(ConfigError, match="one each"):
        evaluate_hf(hf, ts, device="cpu", doc_start=flags[:-1])


def test_doc_start_adds_no_second_bos(tmp_path, tiny):
    """A tokenizer that adds BOS itself gets no second one at a document start."""
    tok = tiny[0]
    d = _llama_dir(tmp_path / "llama", tok)
    ts = text_test_set(tok, "choice", 3)
    plain = evaluate_hf(d, ts, batch_size=3, device="cpu")
    flagged = evaluate_hf(d, ts, batch_size=3, device="cpu", doc_start=[True] * len(ts))
    np.testing.assert_array_equal(flagged.loss_sum, plain.loss_sum)

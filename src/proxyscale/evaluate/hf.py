"""Per-example evaluation of a local Hugging Face causal LM on a test set kept as text.

A model directory (``config.json``, ``*.safetensors`` weights, a tokenizer) is loaded with
``AutoModelForCausalLM`` / ``AutoTokenizer`` and ``local_files_only=True`` (never the hub), and
every candidate of every example is scored with the model's *own* tokenizer, the way
lm-evaluation-harness 0.4.x scores a ``loglikelihood`` request:

- **split**: trailing whitespace of the context moves to the start of the continuation; the
  context + continuation text is encoded as a whole, and the continuation's tokens are those
  after the first ``len(encode(context))`` tokens. Both encodings use the tokenizer's default
  special tokens, so a tokenizer that adds BOS (Llama's) gets it and one that does not (GPT-2's)
  gets none; a context that already starts with the prefix token's text (below) gets none added.
- **empty context** (a whole-sequence ``lm`` example): the context is the prefix token (BOS, or
  EOS when the tokenizer has no BOS), unless the continuation already starts with it.
- **document start** (optional, ``doc_start``): lm-eval adds the prefix token to an empty context
  only; a model trained on documents each preceded by end-of-text (proxyscale's own) saw that
  token before every document, so examples flagged as starting at their document's start can
  get the prefix token before their context too (unless the context's tokens already begin
  with it).
- **too long**: context + continuation is cut from the left to the model's window + 1 tokens
  (``n_positions`` / ``max_position_embeddings`` / ``n_ctx``); a continuation longer than the
  window is refused.

Per example (the correct candidate): ``loss_sum`` (nats, summed over the continuation),
``n_pred_tokens``, ``loss`` (per token), ``bytes`` (UTF-8 bytes of the continuation text) and
``bpb = loss_sum / (ln 2 · bytes)``. With several candidates: ``correct_prob``, the softmax over
candidates of their summed log-likelihoods (no length normalisation: each candidate's whole
continuation probability, SPEC §9), ``accuracy`` (the correct candidate has the highest
log-likelihood: lm-eval's ``acc``), ``acc_norm`` (the same after dividing each by its
continuation's length in characters: lm-eval's ``acc_norm``) and ``acc_bytes`` (dividing by
UTF-8 bytes: lm-eval's ``acc_bytes``, the byte normalisation of SPEC §9); ties go to the first
candidate, as ``numpy.argmax``. Lengths are those of the continuation text as stored (with its
leading space). Single-candidate examples have NaN there.

Batches are right-padded (a causal model's real positions never see the padding) and grouped by
length; the device is CUDA when available, else the CPU; weights load in float32 by default.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.testset import Example, TestSet
from ..errors import ConfigError, DataError

COLUMNS = ("example_id", "n_pred_tokens", "loss_sum", "loss", "bytes", "bpb", "correct_prob", "accuracy",
           "acc_norm", "acc_bytes")
WEIGHT_SUFFIX = ".safetensors"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_LENGTH_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer gives one


# ------------------------------------------------------------------ the model directory
def weight_files(model_dir: str | Path) -> list[Path]:
    """The ``*.safetensors`` files of ``model_dir``, sorted by name; refuses a directory without
    them and a weights file that is a link pointing outside the directory."""
    d = Path(model_dir)
    if not d.is_dir():
        raise DataError(f"{d}: no such model directory; give a Hugging Face model directory (config.json, "
                        "*.safetensors, tokenizer files)")
    files = sorted(p for p in d.iterdir() if p.name.endswith(WEIGHT_SUFFIX))
    if not files:
        raise DataError(f"{d}: no {WEIGHT_SUFFIX} weights here; save the model with "
                        "save_pretrained(..., safe_serialization=True) or export it with `proxyscale export`")
    root = d.resolve()
    for p in files:
        if p.is_symlink() and not p.resolve().is_relative_to(root):
            raise DataError(f"{p}: a weights file linking outside its directory (to {p.resolve()}); copy the "
                            "weights into the model directory")
        if not p.resolve().is_file():
            raise DataError(f"{p}: not a regular file (a broken link?); restore the weights file")
    return files


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 over the sorted weight files of ``model_dir`` (each file's name, then its bytes):
    what identifies a model's weights in a step hash."""
    h = hashlib.sha256()
    for p in weight_files(model_dir):
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` if it holds a causal-LM config, safetensors weights and a tokenizer; else a
    one-line :class:`DataError` or :class:`ConfigError` saying what is missing."""
    d = Path(model_dir)
    weight_files(d)
    if not any((d / name).is_file() for name in _TOKENIZER_FILES):
        raise DataError(f"{d}: no tokenizer here (none of {', '.join(_TOKENIZER_FILES)}); save the tokenizer "
                        "beside the model (tokenizer.save_pretrained) or export with `proxyscale export`")
    config = _read_config(d)
    archs = config.get("architectures") or []
    if config.get("is_encoder_decoder") or (archs and not any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)):
        raise ConfigError(f"{d}: config.json describes {', '.join(archs) or 'an encoder-decoder'}, not a causal "
                          "language model (…ForCausalLM / …LMHeadModel); give a decoder-only model")
    if not archs and not _causal_type(str(config.get("model_type", ""))):
        raise ConfigError(f"{d}: config.json model_type '{config.get('model_type')}' is not a causal language "
                          "model transformers knows; give a decoder-only model")
    return d


def _read_config(d: Path) -> dict[str, Any]:
    import json

    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{d}: no config.json here; save the model with save_pretrained") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{d / 'config.json'}: unreadable ({type(e).__name__}); save the model again") from None
    if not isinstance(config, dict):
        raise DataError(f"{d / 'config.json'}: not a JSON object; save the model again")
    return config


def _causal_type(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def load_hf(model_dir: str | Path, device: str | torch.device | None = None,
            dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a checked local directory, the model in eval mode on ``device``
    (default: CUDA when available, else the CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = check_model_dir(model_dir)
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-model loading bar is noise in a per-example table
    try:
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{d}: transformers cannot load it ({first}); check the directory's files") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if len(tok) < 2:
        raise DataError(f"{d}: the tokenizer has {len(tok)} token(s); save the model's real tokenizer beside it")
    return model.to(dev).eval(), tok


# ------------------------------------------------------------------ lm-eval's context/continuation split
@dataclass(frozen=True)
class Encoded:
    """One candidate as scored: ``tokens`` (context + continuation, cut to the window + 1) and
    how many of the last tokens are the continuation."""

    tokens: tuple[int, ...]
    n_cont: int


def prefix_token_id(tok: Any) -> int:
    """The token an empty context becomes: BOS, else EOS (lm-eval's ``prefix_token_id``)."""
    for tid in (tok.bos_token_id, tok.eos_token_id):
        if tid is not None:
            return int(tid)
    raise DataError("the tokenizer has neither a BOS nor an EOS token, so an empty context cannot be scored; "
                    "give the tokenizer one (bos_token) or use a test set whose examples have contexts")


def encode_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval 0.4.x's ``loglikelihood`` splits them."""
    if context == "":
        cont = list(tok.encode(continuation, add_special_tokens=False))
        prefix = prefix_token_id(tok)
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    # a context already starting with the prefix token's text gets no special tokens added
    kw = {"add_special_tokens": False} if context.startswith(tok.decode([prefix_token_id(tok)])) else {}
    whole = list(tok.encode(context + continuation, **kw))
    n_ctx = len(tok.encode(context, **kw))
    return whole[:n_ctx], whole[n_ctx:]


def max_length(model: Any, tok: Any) -> int:
    """The model's window: the first of ``n_positions``, ``max_position_embeddings``, ``n_ctx`` in
    its config, else the tokenizer's ``model_max_length``, else 2048 (lm-eval's order)."""
    for attr in _LENGTH_ATTRS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tok, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < 10**9 else _DEFAULT_MAX_LENGTH


def encode_example(tok: Any, ex: Example, window: int, doc_start: bool = False) -> list[Encoded]:
    """Every candidate of ``ex`` encoded for scoring (needs the example's text); ``doc_start``:
    the example starts at its document's start, so its context begins with the prefix token."""
    if ex.context_text is None:
        raise DataError(f"example {ex.example_id} has no text (a test set built before texts were kept); "
                        "rebuild the test set")
    out = []
    for cont_text in ex.texts:
        ctx, cont = encode_pair(tok, ex.context_text, cont_text)
        if doc_start and (not ctx or ctx[0] != prefix_token_id(tok)):
            ctx = [prefix_token_id(tok), *ctx]
        if not cont:
            raise DataError(f"example {ex.example_id}: the continuation {cont_text!r} encodes to no tokens")
        if len(cont) > window:
            raise DataError(f"example {ex.example_id}: its continuation has {len(cont)} tokens but the model reads "
                            f"at most {window}; use a test set with shorter continuations")
        full = (ctx + cont)[-(window + 1):]
        out.append(Encoded(tuple(full), len(cont)))
    return out


# ------------------------------------------------------------------ scoring
@torch.no_grad()
def continuation_logliks(model: Any, rows: Sequence[Encoded], device: torch.device,
                         pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-likelihood (nats) of each row's continuation, and its token count; one
    right-padded forward pass, log-softmax in float32."""
    L = max(len(r.tokens) for r in rows) - 1
    x = torch.full((len(rows), L), pad_id, dtype=torch.long)
    target = torch.zeros((len(rows), L), dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.float32)
    for i, r in enumerate(rows):
        n = len(r.tokens) - 1
        x[i, :n] = torch.tensor(r.tokens[:-1])
        target[i, :n] = torch.tensor(r.tokens[1:])
        mask[i, n - r.n_cont: n] = 1.0
    real = (torch.arange(L)[None, :] < torch.tensor([len(r.tokens) - 1 for r in rows])[:, None]).long()
    logits = model(x.to(device), attention_mask=real.to(device)).logits.float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.to(device).unsqueeze(-1)).squeeze(-1)
    ll = (logp.double() * mask.to(device).double()).sum(dim=1)
    return ll.cpu().numpy(), mask.sum(dim=1).long().numpy()


def _batches(encoded: list[list[Encoded]], batch_size: int) -> list[list[int]]:
    """Example indices, longest first, so a batch holds at most ``batch_size`` rows (an example
    with more candidates than that gets a batch of its own)."""
    order = sorted(range(len(encoded)), key=lambda i: (-max(len(r.tokens) for r in encoded[i]), i))
    out: list[list[int]] = [[]]
    rows = 0
    for i in order:
        if out[-1] and rows + len(encoded[i]) > batch_size:
            out.append([])
            rows = 0
        out[-1].append(i)
        rows += len(encoded[i])
    return out


def choice_metrics(ll: np.ndarray, label: int, texts: Sequence[str]) -> dict[str, float]:
    """correct_prob, accuracy, acc_norm (per character) and acc_bytes (per UTF-8 byte) of one
    example from its candidates' summed log-likelihoods ``ll``; NaN for one candidate."""
    if len(ll) < 2:
        return dict.fromkeys(("correct_prob", "accuracy", "acc_norm", "acc_bytes"), math.nan)
    p = np.exp(ll - ll.max())
    chars = np.array([max(1, len(t)) for t in texts], dtype=np.float64)
    nbytes = np.array([max(1, len(t.encode("utf-8"))) for t in texts], dtype=np.float64)
    return {"correct_prob": float(p[label] / p.sum()), "accuracy": float(np.argmax(ll) == label),
            "acc_norm": float(np.argmax(ll / chars) == label), "acc_bytes": float(np.argmax(ll / nbytes) == label)}


def evaluate_hf(model_dir: str | Path, test_set: TestSet, *, batch_size: int = 16,
                device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                loaded: Optional[tuple[Any, Any]] = None,
                doc_start: Optional[Sequence[bool]] = None) -> pd.DataFrame:
    """Per-example table (:data:`COLUMNS`, test-set order) of the model in ``model_dir`` on the text
    of ``test_set``, scored with the model's own tokenizer (see the module docstring).
    ``loaded``: an already loaded ``(model, tokenizer)`` of that directory. ``doc_start``: one flag
    per example, True where it starts at its document's start (its context then gets the
    model's prefix token); None: lm-eval's rule only (the prefix token before an empty context)."""
    if batch_size < 1:
        raise ConfigError(f"evaluate_hf: batch_size must be >= 1, got {batch_size}")
    if len(test_set) == 0:
        raise DataError(f"test set '{test_set.name}' is empty; nothing to evaluate")
    model, tok = loaded if loaded is not None else load_hf(model_dir, device, dtype)
    dev = next(model.parameters()).device
    window = max_length(model, tok)
    ex = test_set.examples
    if doc_start is not None and len(doc_start) != len(ex):
        raise ConfigError(f"evaluate_hf: doc_start has {len(doc_start)} flags for {len(ex)} examples; give one each")
    flags = doc_start if doc_start is not None else [False] * len(ex)
    encoded = [encode_example(tok, e, window, bool(f)) for e, f in zip(ex, flags)]
    ll: list[np.ndarray] = [np.zeros(0)] * len(ex)
    n_tok: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(ex)
    for idx in _batches(encoded, batch_size):
        rows = [r for i in idx for r in encoded[i]]
        lls, ns = continuation_logliks(model, rows, dev)
        at = 0
        for i in idx:
            k = len(encoded[i])
            ll[i], n_tok[i], at = lls[at: at + k], ns[at: at + k], at + k
    return _table(ex, ll, n_tok)


def _table(ex: tuple[Example, ...], ll: list[np.ndarray], n_tok: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for e, lls, ns in zip(ex, ll, n_tok):
        loss_sum = -float(lls[e.label])
        nbytes = len(e.texts[e.label].encode("utf-8"))
        rows.append({"example_id": e.example_id, "n_pred_tokens": int(ns[e.label]), "loss_sum": loss_sum,
                     "loss": loss_sum / int(ns[e.label]), "bytes": nbytes,
                     "bpb": loss_sum / (math.log(2) * nbytes) if nbytes else math.nan,
                     **choice_metrics(lls, e.label, e.texts)})
    return pd.DataFrame(rows, columns=list(COLUMNS))

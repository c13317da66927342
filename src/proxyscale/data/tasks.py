"""Test-set builders: held-out documents -> :class:`~proxyscale.data.testset.TestSet`.

Four kinds, mirroring the paper's test sets:

- ``lm`` (C4/Pile-like): the document's first ``context - 1`` tokens after an end-of-text
  token; loss over every token (``pred_start = 1``).
- ``cloze`` (LAMBADA-like): a passage ending in a sentence-final word; predict that word.
- ``qa`` (TriviaQA/SQuAD-like): from dictionary entries, ``"Term: X\\nDefinition:"`` then the
  first sentence of the definition; loss on the answer tokens only.
- ``choice`` (HellaSwag-like): opening sentences of a document, then its true next sentence
  and three distractor sentences from other documents; ``label`` is the true ending.

Every candidate fits in ``context`` tokens: the context is cut from the left, the predicted
tokens never; an example that cannot fit is dropped. Results depend only on the inputs and
the state of ``rng``. Callers pass held-out documents (see :func:`held_out_test_set`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..config import suggest
from ..errors import ConfigError, DataError
from .sentences import ABBREVIATIONS, normalise, sentence_spans, sentences
from .sources import Document, SourceSpec, iter_documents
from .split import HoldOut, held_out_documents
from .testset import TEST_KINDS, Example, TestSet

_LAST_WORD = re.compile(r"(?<=\s)([A-Za-z]{3,})[.!?][\"')\]]*$")  # a sentence's last word, before its end mark
_WORD_START = re.compile(r"[\"'(`]?[A-Za-z0-9]")
_ENUM = re.compile(r"^(?:\(?\d+\)?\.?|\(?[a-z]\)|[ivx]+\.)\s+")
_CHARS_PER_TOKEN_MAX = 32  # generous: enough text for `context` tokens without encoding whole documents


# ------------------------------------------------------------------ example constructors
def lm_example(example_id: str, ids: Sequence[int], context: int, eos_id: int) -> Optional[Example]:
    """Whole-sequence example: EOS + the first ``context - 1`` tokens (None if ``ids`` is empty)."""
    seq = (eos_id, *ids[: context - 1])
    return Example(example_id, (tuple(int(t) for t in seq),), (1,)) if len(seq) >= 2 else None


def answer_example(example_id: str, prompt_ids: Sequence[int], answer_ids: Sequence[int],
                   context: int) -> Optional[Example]:
    """Prompt then answer, loss on the answer; the prompt is cut from the left to fit."""
    keep = context - len(answer_ids)
    if not answer_ids or keep < 1 or not prompt_ids:
        return None
    prompt = list(prompt_ids)[-keep:]
    seq = tuple(int(t) for t in (*prompt, *answer_ids))
    return Example(example_id, (seq,), (len(prompt),))


def choice_example(example_id: str, ctx_ids: Sequence[int], endings: Sequence[Sequence[int]], label: int,
                   context: int) -> Optional[Example]:
    """One candidate per ending after a shared context (cut from the left so all fit)."""
    longest = max((len(e) for e in endings), default=0)
    keep = context - longest
    if longest == 0 or min(len(e) for e in endings) == 0 or keep < 1 or not ctx_ids:
        return None
    ctx = tuple(int(t) for t in list(ctx_ids)[-keep:])
    cands = tuple(ctx + tuple(int(t) for t in e) for e in endings)
    return Example(example_id, cands, (len(ctx),) * len(cands), int(label))


def with_text(ex: Example, tok) -> Optional[Example]:
    """``ex`` with its text kept (:class:`~proxyscale.data.testset.Example`): the context is the
    candidates' shared prefix of ``pred_start`` tokens, each continuation the rest. A context cut
    from the left, or a continuation cut on the right, inside a multi-byte character loses the
    token(s) of that partial character, so tokens and text always match; None when nothing is left."""
    ps = ex.pred_start[0]
    ctx = ex.candidates[0][:ps]
    if any(p != ps or c[:ps] != ctx for c, p in zip(ex.candidates, ex.pred_start)):
        return ex  # no shared context: leave it without text
    pieces = tok.token_bytes(ctx)
    k = next((k for k in range(ps) if _utf8(b"".join(pieces[k:])) is not None), ps)
    if k >= ps:
        return None
    cands, texts = [], []
    for c in ex.candidates:
        cont = tok.token_bytes(c[ps:])
        end = next((e for e in range(len(cont), 0, -1) if _utf8(b"".join(cont[:e])) is not None), 0)
        if end == 0:
            return None
        cands.append(tuple(c[k: ps + end]))
        texts.append(_utf8(b"".join(cont[:end])))
    context_text = _utf8(b"".join(pieces[k:]))
    return Example(ex.example_id, tuple(cands), (ps - k,) * len(cands), ex.label, context_text, tuple(texts))


def _utf8(data: bytes) -> Optional[str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# ------------------------------------------------------------------ text helpers
def first_sentence(text: str) -> str:
    """The first sentence of a definition, without a leading sense number like ``1.``."""
    sents = sentences(_ENUM.sub("", normalise(text)))
    return _ENUM.sub("", sents[0]).strip() if sents else ""


def head_text(text: str, context: int) -> str:
    limit = _CHARS_PER_TOKEN_MAX * context
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def tail_text(text: str, context: int) -> str:
    limit = _CHARS_PER_TOKEN_MAX * context
    return text if len(text) <= limit else text[-limit:].split(" ", 1)[-1]


# ------------------------------------------------------------------ one builder per kind
def _lm(doc: Document, tok, context: int, rng: np.random.Generator, ex_id: str) -> Optional[Example]:
    return lm_example(ex_id, tok.encode(head_text(doc.text, context)), context, tok.eos_id)


def _cloze(doc: Document, tok, context: int, rng: np.random.Generator, ex_id: str) -> Optional[Example]:
    text = normalise(doc.text)
    ends = cloze_words(text)
    if not ends:
        return None
    start, word = ends[int(rng.integers(len(ends)))]
    full = text[:start].rstrip()
    prefix = tail_text(full, context)
    # an untruncated passage starts at the document start, which training marks with EOS
    prompt = ([tok.eos_id] if prefix == full else []) + tok.encode(prefix)
    return answer_example(ex_id, prompt, tok.encode(" " + word), context)


def cloze_words(text: str, min_offset: int = 80) -> list[tuple[int, str]]:
    """(offset, word) of every sentence-final word of normalised ``text`` (letters only, at least
    three, not an abbreviation) with at least ``min_offset`` characters of passage before it."""
    out = []
    for a, b in sentence_spans(text):
        m = _LAST_WORD.search(text, a, b)
        if m and m.start() >= min_offset and m.group(1).lower() not in ABBREVIATIONS:
            out.append((m.start(), m.group(1)))
    return out


def _qa(doc: Document, tok, context: int, rng: np.random.Generator, ex_id: str) -> Optional[Example]:
    answer = first_sentence(doc.text)
    if not doc.title or len(answer.split()) < 2:
        return None
    prompt = [tok.eos_id] + tok.encode(f"Term: {normalise(doc.title)}\nDefinition:")
    return answer_example(ex_id, prompt, tok.encode(" " + answer), context)


def _choice_builder(docs: Sequence[Document]) -> Callable:
    """A choice builder that draws distractor sentences from the other documents in ``docs``."""
    cache: dict[int, list[str]] = {}
    index = {id(d): k for k, d in enumerate(docs)}

    def all_sents(k: int) -> list[str]:
        """The whole sentences of document ``k``'s head (a sentence cut by the head is dropped)."""
        if k not in cache:
            head = head_text(docs[k].text, 64)
            cache[k] = sentences(head)[: None if head == docs[k].text else -1]
        return cache[k]

    def sents(k: int) -> list[str]:
        return [s for s in all_sents(k) if _ending_like(s)]

    def distractor(own: int, true_words: int, fits: Callable[[str], bool],
                   rng: np.random.Generator) -> Optional[str]:
        fallback = None
        for _ in range(20):  # prefer endings of similar length, so length alone does not give it away
            k = int(rng.integers(len(docs)))
            if k == own or not sents(k):
                continue
            s = sents(k)[int(rng.integers(len(sents(k))))]
            if not fits(s):
                continue
            fallback = fallback or s
            if 0.5 <= len(s.split()) / true_words <= 2.0:
                return s
        return fallback

    def build(doc: Document, tok, context: int, rng: np.random.Generator, ex_id: str) -> Optional[Example]:
        def fits(s: str) -> bool:  # an ending leaves at least 8 tokens of context before it
            return len(tok.encode(" " + s)) <= context - 8

        own = index[id(doc)]
        ss = all_sents(own)
        cuts = [i for i in range(1, min(len(ss), 4)) if _ending_like(ss[i]) and fits(ss[i])]
        if not cuts or len(docs) < 4:
            return None
        cut = cuts[int(rng.integers(len(cuts)))]  # the context is every sentence before the true ending
        true = ss[cut]
        others = [distractor(own, len(true.split()), fits, rng) for _ in range(3)]
        if any(o is None or o == true for o in others):
            return None
        label = int(rng.integers(4))
        endings = others[:label] + [true] + others[label:]
        ctx = [tok.eos_id] + tok.encode(" ".join(ss[:cut]))
        return choice_example(ex_id, ctx, tok.encode_batch([" " + e for e in endings]), label, context)

    return build


def _ending_like(sentence: str) -> bool:
    """A sentence that can be a choice ending: 3 to 60 words, starting with a word (not a
    ``-- Author`` attribution or a ``[Source]`` tag)."""
    return 3 <= len(sentence.split()) <= 60 and _WORD_START.match(sentence) is not None


_BUILDERS: dict[str, Callable] = {"lm": _lm, "cloze": _cloze, "qa": _qa}


def build_test_set(kind: str, name: str, documents: Sequence[Document], tokenizer, context: int,
                   n_examples: int, rng: np.random.Generator) -> TestSet:
    """Build up to ``n_examples`` examples of ``kind`` from ``documents`` (visited in an order
    drawn from ``rng``; at most one example per document)."""
    if kind not in TEST_KINDS:
        raise ConfigError(f"unknown test-set kind '{kind}'{suggest(kind, TEST_KINDS)}; use one of {TEST_KINDS}")
    if context < 2 or n_examples < 1:
        raise ConfigError(f"context must be >= 2 and n_examples >= 1, got {context}, {n_examples}")
    docs = list(documents)
    if kind == "qa" and not any(d.title for d in docs):
        raise DataError(f"test set '{name}': qa needs dictionary entries with titles "
                        "(embedded domains 'dictionary' or 'computing', or a title_field)")
    build = _choice_builder(docs) if kind == "choice" else _BUILDERS[kind]
    examples: list[Example] = []
    for k in rng.permutation(len(docs)):
        ex = build(docs[k], tokenizer, context, rng, f"{name}/{docs[k].id}")
        ex = with_text(ex, tokenizer) if ex is not None else None
        if ex is not None:
            examples.append(ex)
            if len(examples) == n_examples:
                break
    if not examples:
        raise DataError(f"test set '{name}' ({kind}): no document gave an example; "
                        "use more held-out documents or a longer context")
    return TestSet(name=name, kind=kind, examples=tuple(examples))


def held_out_test_set(kind: str, name: str, spec: SourceSpec, holdout: HoldOut, tokenizer, context: int,
                      n_examples: int, rng: np.random.Generator, corpus_dir: Optional[Path] = None) -> TestSet:
    """:func:`build_test_set` over the held-out documents of ``spec`` only (never trained on)."""
    docs = list(held_out_documents(iter_documents(spec, corpus_dir), spec.key, holdout))
    if not docs:
        raise DataError(f"source {spec.key} has no held-out documents at fraction {holdout.fraction}; raise it")
    return build_test_set(kind, name, docs, tokenizer, context, n_examples, rng)


def allocate(n: int, available: Sequence[int]) -> list[int]:
    """How many of ``n`` examples to take from each source: even shares, each capped at what the
    source has; what one source lacks is shared evenly among those with more (earlier sources
    take the remainder of an uneven split). Sums to ``min(n, sum(available))``."""
    alloc = [0] * len(available)
    left = n
    while left > 0:
        open_ = [i for i, a in enumerate(available) if alloc[i] < a]
        if not open_:
            break
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            take = min(share + (j < extra), available[i] - alloc[i])
            alloc[i] += take
            left -= take
    return alloc

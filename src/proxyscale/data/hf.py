"""The paper's six test sets from the Hugging Face hub.

``HF_TEST_SETS`` is the one table of hub names, configs and splits. Records are read with
``datasets.load_dataset(path, name, split=..., streaming=True)`` (``datasets`` is an optional
extra, imported only in :mod:`~proxyscale.data.hub`) and mapped into
:class:`~proxyscale.data.testset.TestSet`:

======== ============================================== =======================================
key      record fields used                              example
======== ============================================== =======================================
c4, pile ``text``                                        whole sequence (lm)
squad    ``context``, ``question``, ``answers.text[0]``  "Context: ..\\nQuestion: ..\\nAnswer:" + answer
trivia_qa ``question``, ``answer.value``                 "Question: ..\\nAnswer:" + answer
lambada  ``text``                                        passage -> its last word (cloze)
hellaswag ``activity_label``, ``ctx_a``, ``ctx_b``,      context + 4 endings, ``label`` (choice)
         ``endings``, ``label``
======== ============================================== =======================================

The same code reads local files of the same schema: give ``path="json"`` (or ``"parquet"``)
and ``data_files``, e.g. ``dataclasses.replace(HF_TEST_SETS["squad"], path="json",
name=None, split="train", data_files="squad.jsonl")``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..config import suggest
from ..errors import DataError
from .hub import hf_records
from .tasks import answer_example, choice_example, head_text, lm_example, with_text
from .testset import Example, TestSet


@dataclass(frozen=True)
class HFTestSpec:
    """Where one test set lives on the hub and how its records become examples."""

    path: str
    name: Optional[str]
    split: str
    kind: str  # test-set kind: lm | cloze | qa | choice
    schema: str  # key of the record mapper in _MAPPERS
    data_files: Optional[str] = None
    id_field: Optional[str] = None


HF_TEST_SETS: dict[str, HFTestSpec] = {
    "c4": HFTestSpec("allenai/c4", "en", "validation", "lm", "text"),
    "pile": HFTestSpec("mit-han-lab/pile-val-backup", None, "validation", "lm", "text"),
    "squad": HFTestSpec("rajpurkar/squad", None, "validation", "qa", "squad", id_field="id"),
    "trivia_qa": HFTestSpec("mandarjoshi/trivia_qa", "rc.nocontext", "validation", "qa", "trivia_qa",
                            id_field="question_id"),
    "lambada": HFTestSpec("EleutherAI/lambada_openai", "default", "test", "cloze", "lambada"),
    "hellaswag": HFTestSpec("Rowan/hellaswag", None, "validation", "choice", "hellaswag", id_field="ind"),
}


# ------------------------------------------------------------------ record -> example
def _text(rec: dict, tok, context: int, eid: str) -> Optional[Example]:
    return lm_example(eid, tok.encode(head_text(rec["text"], context)), context, tok.eos_id)


def _squad(rec: dict, tok, context: int, eid: str) -> Optional[Example]:
    answers = rec["answers"]["text"]
    if not answers:
        return None
    prompt = f"Context: {rec['context'].strip()}\nQuestion: {rec['question'].strip()}\nAnswer:"
    return answer_example(eid, [tok.eos_id] + tok.encode(prompt), tok.encode(" " + answers[0].strip()), context)


def _trivia_qa(rec: dict, tok, context: int, eid: str) -> Optional[Example]:
    answer = rec["answer"]["value"].strip()
    prompt = f"Question: {rec['question'].strip()}\nAnswer:"
    return answer_example(eid, [tok.eos_id] + tok.encode(prompt), tok.encode(" " + answer), context) if answer else None


def _lambada(rec: dict, tok, context: int, eid: str) -> Optional[Example]:
    passage, _, word = rec["text"].strip().rpartition(" ")
    if not passage or not word:
        return None
    return answer_example(eid, [tok.eos_id] + tok.encode(passage), tok.encode(" " + word), context)


def _hellaswag_clean(text: str) -> str:
    # WikiHow-derived items carry markup such as "[title]" and "[step]": turn titles into
    # sentence breaks and drop the other bracketed tags
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return " ".join(text.split())


def _hellaswag(rec: dict, tok, context: int, eid: str) -> Optional[Example]:
    if str(rec.get("label", "")).strip() == "":  # the hub's test split has no labels
        return None
    ctx = _hellaswag_clean(f"{rec['activity_label']}: {rec['ctx_a']} {rec['ctx_b'].capitalize()}")
    endings = tok.encode_batch([" " + _hellaswag_clean(e) for e in rec["endings"]])
    return choice_example(eid, [tok.eos_id] + tok.encode(ctx), endings, int(rec["label"]), context)


_MAPPERS: dict[str, Callable[[dict, Any, int, str], Optional[Example]]] = {
    "text": _text, "squad": _squad, "trivia_qa": _trivia_qa, "lambada": _lambada, "hellaswag": _hellaswag,
}


def load_hf_test_set(test_set: str | HFTestSpec, tokenizer, context: int, n_examples: int, *,
                     name: Optional[str] = None) -> TestSet:
    """The first ``n_examples`` usable records of a registry test set (key or spec) as a TestSet.

    Records that cannot fit in ``context`` tokens (an answer longer than the context) are skipped.
    """
    if isinstance(test_set, str):
        if test_set not in HF_TEST_SETS:
            raise DataError(f"unknown HF test set '{test_set}'{suggest(test_set, HF_TEST_SETS)}; "
                            f"known: {', '.join(HF_TEST_SETS)}")
        spec, name = HF_TEST_SETS[test_set], name or test_set
    else:
        spec, name = test_set, name or test_set.schema
    mapper = _MAPPERS[spec.schema]
    examples: list[Example] = []
    for k, rec in enumerate(hf_records(spec.path, spec.name, spec.split, data_files=spec.data_files)):
        rid = rec.get(spec.id_field) if spec.id_field else None
        try:
            ex = mapper(rec, tokenizer, context, f"{name}/{rid if rid is not None else k}")
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{spec.path}: record {k} does not have the {spec.schema} schema ({e!r})") from None
        ex = with_text(ex, tokenizer) if ex is not None else None
        if ex is not None:
            examples.append(ex)
            if len(examples) == n_examples:
                break
    if not examples:
        raise DataError(f"HF test set '{name}' gave no examples; check the split and the context length")
    return TestSet(name=name, kind=spec.kind, examples=tuple(examples))

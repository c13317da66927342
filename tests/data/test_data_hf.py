"""The six paper test sets, read through ``datasets.load_dataset`` from small local files with
the hub's real field names (the same code path as the hub, minus the network)."""
from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oracles import oracle

oracle("datasets")

from proxyscale.data.hf import HF_TEST_SETS, load_hf_test_set  # noqa: E402
from proxyscale.data.sources import SourceSpec, iter_documents  # noqa: E402
from proxyscale.data.tokenizer import train_tokenizer  # noqa: E402
from proxyscale.errors import DataError  # noqa: E402

RECORDS = {
    "c4": [{"text": "Beginners BBQ Class Taking Place in Missoula! Do you want to get better at making "
                    "delicious BBQ?", "timestamp": "2019-04-25T12:57:54Z", "url": "https://example.org/bbq"},
           {"text": "Discussion in 'Mac OS X Lion (10.7)' started by axboi87.", "timestamp": "2019-04-21T10:07:13Z",
            "url": "https://example.org/mac"}],
    "pile": [{"text": "It is done, and submitted. You can play the game now.",
              "meta": {"pile_set_name": "Pile-CC"}}],
    "squad": [{"id": "5733be284776f41900661182", "title": "University_of_Notre_Dame",
               "context": "Architecturally, the school has a Catholic character. Atop the Main Building's gold dome "
                          "is a golden statue of the Virgin Mary.",
               "question": "What sits on top of the Main Building?",
               "answers": {"text": ["a golden statue of the Virgin Mary"], "answer_start": [92]}}],
    "trivia_qa": [{"question": "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
                   "question_id": "tc_33", "question_source": "http://www.triviacountry.com/",
                   "answer": {"aliases": ["Sunset Blvd", "Sunset Boulevard"], "normalized_aliases": ["sunset blvd"],
                              "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                              "normalized_value": "sunset boulevard", "type": "WikipediaEntity",
                              "value": "Sunset Boulevard"}}],
    "lambada": [{"text": "In my palm is a clear stone, and inside it is a small ivory statuette. A guardian "
                         "angel. Figured if you're going to be out at night getting hit by cars, you might as "
                         "well have some backup. I look at him, feeling stunned. Like this is some sort of sign"}],
    "hellaswag": [{"ind": 24, "activity_label": "Roof shingle removal",
                   "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
                   "ctx": "A man is sitting on a roof. he",
                   "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                               "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
                   "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain",
                   "label": "3"},
                  {"ind": 25, "activity_label": "Test item", "ctx_a": "No label here.", "ctx_b": "it",
                   "ctx": "", "endings": ["a", "b", "c", "d"], "source_id": "x", "split": "test",
                   "split_type": "indomain", "label": ""}],
}
EXPECTED_ANSWER = {"squad": " a golden statue of the Virgin Mary", "trivia_qa": " Sunset Boulevard",
                   "lambada": " sign", "hellaswag": " starts pulling up roofing on a roof."}


@pytest.fixture(scope="module")
def tok():
    texts = [json.dumps(r) for rs in RECORDS.values() for r in rs]
    return train_tokenizer(texts * 3, 500)


def _local_spec(key, tmp_path, fmt="json"):
    if fmt == "json":
        f = tmp_path / f"{key}.jsonl"
        f.write_text("\n".join(json.dumps(r) for r in RECORDS[key]) + "\n")
    else:
        f = tmp_path / f"{key}.parquet"
        pq.write_table(pa.Table.from_pylist(RECORDS[key]), f)
    return dataclasses.replace(HF_TEST_SETS[key], path=fmt, name=None, split="train", data_files=str(f))


def test_registry_names_the_six_hub_datasets():
    assert set(HF_TEST_SETS) == {"c4", "pile", "squad", "trivia_qa", "lambada", "hellaswag"}
    c4 = HF_TEST_SETS["c4"]
    assert (c4.path, c4.name, c4.split) == ("allenai/c4", "en", "validation")
    assert HF_TEST_SETS["trivia_qa"].name == "rc.nocontext"
    assert {k: s.kind for k, s in HF_TEST_SETS.items()} == {
        "c4": "lm", "pile": "lm", "squad": "qa", "trivia_qa": "qa", "lambada": "cloze", "hellaswag": "choice"}


@pytest.mark.parametrize("key", ["squad", "trivia_qa", "lambada", "hellaswag"])
def test_answer_tokens_are_exactly_the_answer(key, tok, tmp_path):
    ts = load_hf_test_set(_local_spec(key, tmp_path), tok, 64, 10, name=key)
    assert len(ts) == 1 and ts.kind == HF_TEST_SETS[key].kind  # hellaswag's unlabeled test item is skipped
    ex = ts.examples[0]
    c, s = ex.candidates[ex.label], ex.pred_start[ex.label]
    assert tok.decode(c[s:]) == EXPECTED_ANSWER[key] and len(c) <= 64
    if key == "hellaswag":
        assert ex.label == 3 and len(ex.candidates) == 4 and ex.example_id == "hellaswag/24"
        assert tok.decode(c[:s]).endswith("Roof shingle removal: A man is sitting on a roof. He")
    if key == "squad":
        assert ex.example_id == "squad/5733be284776f41900661182"
        assert tok.decode(c[:s]).endswith("Question: What sits on top of the Main Building?\nAnswer:")


def test_short_context_truncates_the_prompt_not_the_answer(tok, tmp_path):
    ts = load_hf_test_set(_local_spec("squad", tmp_path), tok, 24, 10)
    ex = ts.examples[0]
    assert len(ex.candidates[0]) == 24 and tok.decode(ex.candidates[0][ex.pred_start[0]:]) == EXPECTED_ANSWER["squad"]


@pytest.mark.parametrize("key", ["c4", "pile"])
def test_lm_sets_from_parquet(key, tok, tmp_path):
    ts = load_hf_test_set(_local_spec(key, tmp_path, "parquet"), tok, 16, 10, name=key)
    assert len(ts) == len(RECORDS[key]) and ts.kind == "lm"
    for ex, rec in zip(ts.examples, RECORDS[key]):
        assert ex.pred_start == (1,) and ex.candidates[0][0] == tok.eos_id and len(ex.candidates[0]) == 16
        assert rec["text"].startswith(tok.decode(ex.candidates[0]))


def test_hf_source_kind_and_errors(tok, tmp_path):
    spec = _local_spec("c4", tmp_path)
    src = SourceSpec("hf", path="json", split="train", data_files=spec.data_files, id_field="url", max_docs=1)
    docs = list(iter_documents(src))
    assert [(d.id, d.text) for d in docs] == [("https://example.org/bbq", RECORDS["c4"][0]["text"])]
    with pytest.raises(DataError, match="unknown HF test set 'squad2'.*did you mean 'squad'"):
        load_hf_test_set("squad2", tok, 32, 1)
    with pytest.raises(DataError, match="does not have the squad schema"):
        load_hf_test_set(dataclasses.replace(spec, schema="squad"), tok, 32, 1)
    with pytest.raises(DataError, match="could not read dataset"):
        load_hf_test_set(dataclasses.replace(spec, data_files=str(tmp_path / "missing.jsonl")), tok, 32, 1)

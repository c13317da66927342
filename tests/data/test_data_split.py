"""Held-out split: one hash decides, stably, for training prep and test building alike."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from proxyscale.data.sources import Document
from proxyscale.data.split import (
    HoldOut,
    held_out_documents,
    held_out_score,
    is_held_out,
    split_documents,
    training_documents,
)
from proxyscale.errors import ConfigError


def test_score_is_the_documented_hash():
    h = hashlib.sha256(b"salt\x00src\x00doc-7").digest()
    assert held_out_score("src", "doc-7", "salt") == int.from_bytes(h[:8], "big") / 2**64


def test_fraction_is_honoured_and_decisions_are_stable():
    ids = [f"doc{i}" for i in range(20_000)]
    held = np.array([is_held_out("embedded/bible", d, fraction=0.1) for d in ids])
    # binomial(20000, 0.1): sd = 42; 5 sd bounds
    assert abs(held.sum() - 2000) < 5 * 42
    again = np.array([is_held_out("embedded/bible", d, fraction=0.1) for d in reversed(ids)])[::-1]
    assert np.array_equal(held, again)  # order does not matter


def test_raising_the_fraction_only_adds_held_out_documents():
    ids = [str(i) for i in range(3000)]
    small = {d for d in ids if is_held_out("s", d, fraction=0.05)}
    large = {d for d in ids if is_held_out("s", d, fraction=0.2)}
    assert small < large


def test_salt_and_source_change_the_split():
    ids = [str(i) for i in range(2000)]
    a = {d for d in ids if is_held_out("s", d, fraction=0.5)}
    assert a != {d for d in ids if is_held_out("s", d, fraction=0.5, salt="other")}
    assert a != {d for d in ids if is_held_out("t", d, fraction=0.5)}


def test_split_partitions_and_lazy_filters_agree():
    docs = [Document(f"d{i}", f"text {i}") for i in range(500)]
    h = HoldOut(fraction=0.3)
    train, held = split_documents(docs, "src", h)
    assert len(train) + len(held) == 500 and not {d.id for d in train} & {d.id for d in held}
    assert list(training_documents(docs, "src", h)) == train
    assert list(held_out_documents(docs, "src", h)) == held
    assert all(h.is_held_out("src", d.id) for d in held)
    assert HoldOut(0.0).is_held_out("src", "d1") is False


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_bad_fraction_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="held-out fraction"):
        HoldOut(fraction=bad)

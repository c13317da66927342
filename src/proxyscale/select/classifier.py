"""Classifier selection (GPT-3 / DCLM style): a linear model on hashed uni+bigram features,
target text as positives and pool documents as negatives; keep the top ``n`` by P(target).

scikit-learn does the work (``HashingVectorizer`` + ``LogisticRegression``): hashing needs no
vocabulary pass, so a pool larger than memory is scored in streamed batches. ``pareto_alpha``
turns on GPT-3's stochastic rule — a document is eligible when ``pareto(α) > 1 − P(target)``
(α = 9 in GPT-3) — and ``n`` documents are then drawn uniformly (seeded) among the eligible.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..seeding import derive_seed
from .base import SELECTORS, Pool, Selection, check_n, segments, tie_break, top_n
from .progress import phase, pool_size


def fitted_model(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
    """A fitted logistic regression rebuilt from its arrays (what a shard task gets instead of a
    pickled model): ``predict_proba`` is the same computation on the same numbers."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression()
    model.coef_, model.intercept_, model.classes_ = coef, intercept, classes
    return model


@dataclass(frozen=True)
class ClassifierSelector:
    """Classifier (GPT-3 / DCLM style): logistic regression on hashed uni+bigrams, target vs pool.

    Settings: hashed feature count, the regulariser ``C``, how many pool documents train the
    model as negatives (a seeded sample), scoring batch size, and the optional GPT-3 rule."""

    name: str = "classifier"
    n_features: int = 2 ** 18
    C: float = 1.0
    max_negatives: int = 50_000
    batch_size: int = 4096
    pareto_alpha: Optional[float] = None

    def __post_init__(self) -> None:
        if self.n_features < 16 or self.max_negatives < 1 or self.batch_size < 1 or not self.C > 0:
            raise ConfigError("classifier: n_features ≥ 16, max_negatives ≥ 1, batch_size ≥ 1 and C > 0 are needed")
        if self.pareto_alpha is not None and not self.pareto_alpha > 0:
            raise ConfigError(f"classifier.pareto_alpha={self.pareto_alpha} must be > 0 (GPT-3 used 9)")

    def _vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        words = HashingVectorizer(ngram_range=(1, 2), lowercase=True).build_analyzer()
        return HashingVectorizer(n_features=self.n_features, analyzer=_Segmented(words), alternate_sign=False,
                                 norm="l2")

    def fit(self, pool: Pool, target: Sequence[str], seed: int):
        """The fitted model: positives = ``target``, negatives = a seeded sample of the pool."""
        if not target:
            raise ConfigError("classifier: the target set is empty; give at least one target example")
        with phase("featurising", total=pool_size()) as bar:  # the ids, the negatives' text, then the fit
            ids = [d.id for d in pool()]
            keep = set(np.asarray(ids)[top_n(self.negative_keys(ids, seed), min(self.max_negatives, len(ids)),
                                              ids, seed)].tolist())
            bar.total = 2 * len(ids)
            bar.update(len(ids))
            negatives = []
            for d in pool():
                bar.update(1)
                if d.id in keep:
                    negatives.append(d.text)
            return self.fit_texts(target, negatives, seed)

    def negative_keys(self, ids: Sequence[str], seed: int) -> np.ndarray:
        """Each id's seeded key: the ``max_negatives`` highest train the model (sharding-free)."""
        return tie_break(ids, seed ^ 0xC1A55)

    def fit_texts(self, target: Sequence[str], negatives: list[str], seed: int):
        """The fitted (vectoriser, model): ``target`` positives, ``negatives`` in pool order."""
        from sklearn.linear_model import LogisticRegression

        if not target:
            raise ConfigError("classifier: the target set is empty; give at least one target example")
        vec = self._vectorizer()
        x = vec.transform(list(target) + negatives)
        y = np.r_[np.ones(len(target)), np.zeros(len(negatives))]
        model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000,
                                   random_state=derive_seed(seed, "classifier") % 2 ** 32)
        return vec, model.fit(x, y)

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection:
        vec, model = self.fit(pool, target, seed)
        ids: list[str] = []
        probs: list[np.ndarray] = []
        with phase("scoring", total=pool_size()) as bar:
            for batch in _batches(pool(), self.batch_size):
                ids += [d.id for d in batch]
                probs.append(model.predict_proba(vec.transform([d.text for d in batch]))[:, 1])
                bar.update(len(batch))
        return self.choose(ids, np.concatenate(probs) if probs else np.zeros(0), n, seed)

    def choose(self, ids: Sequence[str], p: np.ndarray, n: int, seed: int) -> Selection:
        """The selection from every pool document's P(target) ``p`` (pool order)."""
        check_n(n, len(ids), self.name)
        scores = np.log(np.clip(p, 1e-300, None))  # log P(target): higher = more target-like
        settings = {"n_features": self.n_features, "C": self.C, "max_negatives": self.max_negatives,
                    "pareto_alpha": self.pareto_alpha}
        if self.pareto_alpha is None:
            return Selection(self.name, tuple(ids), scores, top_n(scores, n, ids, seed), settings, {"p_target": p})
        rng = np.random.default_rng(derive_seed(seed, "classifier-pareto"))
        eligible = rng.pareto(self.pareto_alpha, size=len(p)) > 1.0 - p
        if eligible.sum() < n:
            raise ConfigError(f"classifier: the Pareto rule keeps {int(eligible.sum())} documents, fewer than "
                              f"n={n}; lower n, use a smaller pareto_alpha (a heavier tail keeps more) or plain top-n")
        draw = np.where(eligible, tie_break(ids, seed ^ 0xD4A3), -np.inf)
        return Selection(self.name, tuple(ids), scores, top_n(draw, n, ids, seed), settings,
                         {"p_target": p, "eligible": eligible})


class _Segmented:
    """scikit-learn's word uni+bigram analyzer run on each document packed in a text, so that no
    bigram spans a :data:`~proxyscale.select.base.DOC_BREAK`."""

    def __init__(self, words: Callable[[str], list[str]]) -> None:
        self.words = words

    def __call__(self, text: str) -> list[str]:
        return [g for part in segments(text) for g in self.words(part)]


def _batches(docs: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(docs, size)):
        yield batch


SELECTORS.add("classifier", ClassifierSelector)

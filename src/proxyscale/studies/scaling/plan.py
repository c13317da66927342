"""Turns a small-to-large :class:`StudySpec` into a :class:`Plan` of content-hashed steps,
composed from the shared data and LM-ladder fragments plus this study's n-gram baselines and
analysis::

    corpus ─► tokenizer ─► shard (per source) ─► train (per distribution × rung × seed) ─► eval ─┐
                      └──► testset (per test set) ─────────────────────────────────────────────┤
                           ngram (per distribution × order) ◄── shards, testsets ──────────────┤
                                                                              analyze ◄────────┘
"""
from __future__ import annotations

from typing import Any

from ...config import to_dict
from ...models.ladder import Budget
from ...run.plan import Plan, Step
from ...seeding import derive_seed
from ..fragments.data import DataKeys, add_data
from ..fragments.lm_ladder import add_lm_ladder
from .spec import RungSpec, StudySpec

NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def rung_budget(spec: StudySpec, rung: RungSpec) -> Budget:
    """Params, tokens, optimiser steps and FLOPs of one training run of ``rung`` (the ladder table)."""
    return spec.ladder.budget(rung, spec.tokenizer.vocab_size, spec.context, spec.train.batch_size)


def build_plan(spec: StudySpec) -> Plan:
    """All steps of the study, dependencies first."""
    plan = Plan()
    used = sorted({s for mix in spec.distributions.values() for s, w in mix.items() if w > 0})
    data = add_data(plan, sources=spec.sources, used=used, test_sets=spec.test_sets, tokenizer=spec.tokenizer,
                    corpus=spec.corpus, seed=spec.seed, heldout_fraction=spec.heldout_fraction,
                    test_context=spec.test_context)
    evals = add_lm_ladder(plan, ladder=spec.ladder, distributions=spec.distributions, train=spec.train,
                          vocab_size=spec.tokenizer.vocab_size, context=spec.context, seed=spec.seed,
                          tokenizer=data.tokenizer, shard_inputs=data.shard_inputs, test_inputs=data.test_inputs(),
                          batch_below_params=spec.executor.batch_below_params)
    ngrams = _add_ngrams(plan, spec, data)
    plan.add(Step("analyze", spec.name, _analysis_config(spec), {**evals, **ngrams}, cost=1e9))
    return plan


def _add_ngrams(plan: Plan, spec: StudySpec, data: DataKeys) -> dict[str, str]:
    out: dict[str, str] = {}
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    for dname, mix in sorted(spec.distributions.items()):
        for order in spec.analysis.ngram_orders:
            cfg = {"order": order, "distribution": dname, "mixture": mix, "context": spec.test_context,
                   "vocab_size": spec.tokenizer.vocab_size, "tokens": ref.tokens,
                   "seed": derive_seed(spec.seed, "ngram", dname)}
            inputs = {"tokenizer": data.tokenizer, **data.shard_inputs(mix), **data.test_inputs()}
            out[f"ngram:{dname}:{order}"] = plan.add(Step("ngram", f"{dname}-{order}gram", cfg, inputs,
                                                         cost=ref.tokens * 50))
    return out


def _analysis_config(spec: StudySpec) -> dict[str, Any]:
    models = []
    for rung in spec.ladder.rungs:
        b = rung_budget(spec, rung)
        models.append({"model": rung.name, "kind": "neural", "params": b.params, "train_tokens": b.tokens,
                       "flops": b.flops, "is_reference": rung.name == spec.ladder.reference})
    ref_tokens = rung_budget(spec, spec.rung(spec.ladder.reference)).tokens
    for order in spec.analysis.ngram_orders:
        models.append({"model": NGRAM_NAMES.get(order, f"{order}gram"), "kind": "ngram", "params": 0,
                       "train_tokens": ref_tokens, "flops": 0.0, "is_reference": False})
    test_sets = {t: {"kind": ts.kind, "source": ts.sources[0] if len(ts.sources) == 1 and ts.hub is None else None}
                 for t, ts in spec.test_sets.items()}
    return {"analysis": to_dict(spec.analysis), "models": models, "test_sets": test_sets,
            "distributions": {d: sorted(s for s, w in mix.items() if w > 0) for d, mix in spec.distributions.items()},
            "seed": spec.seed}

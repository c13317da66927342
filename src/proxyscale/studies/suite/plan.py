"""Turns a :class:`SuiteSpec` into a :class:`Plan`::

    corpus ─► tokenizer ─► testset (built test sets) ─► suite_eval (per checkpoint) ─┐
                      └──► shard ─► ngram (per distribution with sources × order) ──┤
    lm-eval logs ─► suite_samples (per samples model) ──────────────────────────────┤
    results table ─► suite_table (per results model) ───────────────────────────────┤
    shared results table ─► suite_shared_table (per file several models name) ──────┤
                                                                suite_analyze ◄─────┘

Building the plan reads the evidence (:mod:`.evidence`): bad checkpoints, logs and tables are
refused here, before any step runs, and each evidence step's config names its input files'
sha256, so it re-runs only when they change.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...config import to_dict
from ...run.plan import Plan, Step
from ...seeding import derive_seed
from ..fragments.data import DataKeys, add_data
from ..scaling.plan import NGRAM_NAMES
from . import evidence
from .spec import SuiteModel, SuiteSpec


def build_plan(spec: SuiteSpec) -> Plan:
    """All steps of the suite, dependencies first."""
    plan = Plan()
    found = evidence.gather(spec)
    data = _add_test_sets(plan, spec)
    inputs: dict[str, str] = {}
    for m in spec.models:
        inputs[f"model:{m.name}"] = _add_evidence(plan, spec, m, found[m.name], data)
    # (a shared table's step is added once: Plan.add keeps the first step of a key)
    ngrams = _add_ngrams(plan, spec, data) if data is not None and spec.analysis.metric == "loss" else {}
    counts = {f"count:{t}": k for t, k in (data.tests.items() if data is not None else ())}
    plan.add(Step("suite_analyze", spec.name, _analysis_config(spec, found), {**inputs, **ngrams, **counts}, cost=1e9))
    return plan


def _add_test_sets(plan: Plan, spec: SuiteSpec) -> DataKeys | None:
    """The data fragment for the built test sets (None: the suite has none)."""
    built = {t: ts.build_spec() for t, ts in spec.test_sets.items() if ts.built}
    if not built:
        return None
    used = spec.trained_sources()
    tok = spec.tokenizer
    if not used and not tok.sources:  # no training text known: fit the test sets' tokenizer on their sources
        tok = replace(tok, sources=tuple(sorted({s for ts in built.values() for s in ts.sources} or spec.sources)))
    return add_data(plan, sources=spec.sources, used=used, test_sets=built, tokenizer=tok, corpus=spec.corpus,
                    seed=spec.seed, heldout_fraction=spec.heldout_fraction, test_context=spec.context)


def _add_evidence(plan: Plan, spec: SuiteSpec, m: SuiteModel, ev: dict[str, Any], data: DataKeys | None) -> str:
    if ev["kind"] == "checkpoint":
        assert data is not None  # the spec requires built test sets for checkpoint models
        n_ex = sum(ts.n_examples for ts in spec.test_sets.values() if ts.built)
        cfg = {"model": m.name, "checkpoint": ev["checkpoint"], "weights_sha256": ev["weights_sha256"],
               "batch_size": spec.eval_batch_size}
        inputs = data.test_inputs()
        if spec.evaluation.document_start != "lm_eval":  # the default stays out of the key (existing stores)
            # the tokenizer's end-of-text id tells which examples start at their document's start
            cfg["document_start"] = spec.evaluation.document_start
            inputs = {**inputs, "tokenizer": data.tokenizer}
        return plan.add(Step("suite_eval", m.name, cfg, inputs, cost=2.0 * m.params * n_ex * spec.context * 4))
    if ev["kind"] == "samples":
        return plan.add(Step("suite_samples", m.name, {"model": m.name, "runs": ev["runs"]}, cost=1e8))
    if "shared_by" in ev:  # one step reads the table for every model naming it
        return plan.add(Step("suite_shared_table", _table_name(ev["results"]),
                             {"results": ev["results"], "sha256": ev["sha256"], "models": ev["shared_by"],
                              "test_sets": ev["table_test_sets"]}, cost=1e8))
    return plan.add(Step("suite_table", m.name, {"model": m.name, "results": ev["results"], "sha256": ev["sha256"],
                                                 "test_sets": ev["test_sets"]}, cost=1e8))


def _table_name(path: str) -> str:
    """A store-safe step name from a results table's file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).lstrip(".-") or "results"
    return stem[:100]



def _reference(spec: SuiteSpec) -> SuiteModel:
    return next(m for m in spec.models if m.reference)


def _add_ngrams(plan: Plan, spec: SuiteSpec, data: DataKeys) -> dict[str, str]:
    """N-gram baselines of every distribution with training sources, sized as the scaling study
    sizes them (the reference's training tokens)."""
    out: dict[str, str] = {}
    tokens = _reference(spec).train_tokens
    for dname, mix in sorted(spec.distributions.items()):
        if not any(w > 0 for w in mix.values()):
            continue
        for order in spec.analysis.ngram_orders:
            cfg = {"order": order, "distribution": dname, "mixture": mix, "context": spec.context,
                   "vocab_size": spec.tokenizer.vocab_size, "tokens": tokens,
                   "seed": derive_seed(spec.seed, "ngram", dname)}
            out[f"ngram:{dname}:{order}"] = plan.add(Step(
                "ngram", f"{dname}-{order}gram", cfg,
                {"tokenizer": data.tokenizer, **data.shard_inputs(mix), **data.test_inputs()}, cost=tokens * 50))
    return out


def scale_rows(spec: SuiteSpec) -> list[dict[str, Any]]:
    """One row per scale label (the analysis's models), smallest compute first."""
    first: dict[str, SuiteModel] = {}
    for m in spec.models:
        first.setdefault(m.scale, m)
    return [{"model": s, "kind": "neural", "params": m.params, "train_tokens": m.train_tokens, "flops": m.compute,
             "is_reference": m.reference} for s, m in sorted(first.items(), key=lambda t: (t[1].compute, t[0]))]


def _analysis_config(spec: SuiteSpec, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    models = scale_rows(spec)
    if spec.analysis.metric == "loss" and any(any(w > 0 for w in mix.values()) for mix in spec.distributions.values()):
        tokens = _reference(spec).train_tokens
        models += [{"model": NGRAM_NAMES.get(o, f"{o}gram"), "kind": "ngram", "params": 0, "train_tokens": tokens,
                    "flops": 0.0, "is_reference": False} for o in spec.analysis.ngram_orders]
    test_sets: dict[str, dict[str, Any]] = {}
    for ev in found.values():
        for t in ev.get("test_sets", ()):
            test_sets[t] = {"kind": "lm", "source": None}
    for t, ts in spec.test_sets.items():
        test_sets[t] = {"kind": ts.kind, "source": ts.framing_source()}
    dists = {m.distribution: sorted(s for s, w in spec.distributions.get(m.distribution, {}).items() if w > 0)
             for m in spec.models}
    runs = [{"name": m.name, "distribution": m.distribution, "scale": m.scale, "seed": m.seed,
             "evidence": found[m.name]["kind"], "reference": m.reference} for m in spec.models]
    mixtures = {d: {s: float(w) for s, w in mix.items()} for d, mix in spec.distributions.items() if mix}
    return {"analysis": to_dict(spec.analysis), "models": models, "runs": runs, "test_sets": test_sets,
            "distributions": dists, "seed": spec.seed, "mixtures": mixtures}

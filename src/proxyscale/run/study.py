"""Turns a :class:`StudySpec` into a :class:`Plan` of content-hashed steps.

corpus ─► tokenizer ─► shard (per source) ─► train (per distribution × rung × seed) ─► eval ─┐
                  └──► testset (per test set) ─────────────────────────────────────────────┤
                       ngram (per distribution × order) ◄── shards, testsets ──────────────┤
                                                                          analyze ◄────────┘
"""
from __future__ import annotations

import math
from typing import Any

from ..config import content_hash, to_dict
from ..seeding import derive_seed
from .plan import Plan, Step
from .spec import RungSpec, StudySpec

DEFAULT_BATCH_SIZE = 32


def rung_params(spec: StudySpec, rung: RungSpec) -> int:
    """Exact parameter count of a rung (SPEC §2 formula, from the model code's own table)."""
    from ..models.ladder import GPTConfig, param_count

    return param_count(GPTConfig(vocab_size=spec.tokenizer.vocab_size, context=spec.rung_context(rung),
                                 d_model=rung.d_model, n_layers=rung.n_layers, n_heads=rung.n_heads))


def rung_budget(spec: StudySpec, rung: RungSpec) -> dict[str, Any]:
    """Params, tokens, optimizer steps and FLOPs (6·P·D) of one training run of ``rung``."""
    params = rung_params(spec, rung)
    batch = int(spec.train.get("batch_size", DEFAULT_BATCH_SIZE))
    tokens_wanted = spec.ladder.tokens_per_param * params
    T = spec.rung_context(rung)
    n_steps = max(1, math.ceil(tokens_wanted / (batch * T)))
    tokens = n_steps * batch * T
    return {"params": params, "tokens": tokens, "n_steps": n_steps, "batch_size": batch,
            "flops": 6.0 * params * tokens}


def _uses_embedded(spec: StudySpec, names: list[str]) -> bool:
    return any(spec.sources[n].get("kind", "embedded") == "embedded" for n in names)


def build_plan(spec: StudySpec) -> Plan:
    """All steps of the study, dependencies first."""
    plan = Plan()
    common = {"seed": spec.seed, "heldout_fraction": spec.heldout_fraction}
    all_sources = sorted(spec.sources)
    cin = {}
    if _uses_embedded(spec, all_sources):
        cin["corpus"] = plan.add(Step("corpus", "embedded", {**spec.corpus}, cost=5e9))
    tok_key = plan.add(Step("tokenizer", f"bpe{spec.tokenizer.vocab_size}",
                            {**to_dict(spec.tokenizer), **common,
                             "sources": {n: spec.sources[n] for n in all_sources}}, dict(cin), cost=2e9))
    used = sorted({s for mix in spec.distributions.values() for s, w in mix.items() if w > 0})
    shards = {s: plan.add(Step("shard", s, {"source": s, "spec": spec.sources[s], **common},
                               {"tokenizer": tok_key, **cin}, cost=2e9)) for s in used}
    tests = {}
    for tname, ts in sorted(spec.test_sets.items()):
        cfg = {"name": tname, **to_dict(ts), "context": spec.test_context, **common,
               "source_specs": {s: spec.sources[s] for s in ts.sources}}
        tests[tname] = plan.add(Step("testset", tname, cfg, {"tokenizer": tok_key, **cin}, cost=1e9))
    evals = _add_training(plan, spec, tok_key, shards, tests)
    ngrams = _add_ngrams(plan, spec, tok_key, shards, tests)
    plan.add(Step("analyze", spec.name, _analysis_config(spec), {**evals, **ngrams}, cost=1e9))
    return plan


def _add_training(plan: Plan, spec: StudySpec, tok_key: str, shards: dict[str, str],
                  tests: dict[str, str]) -> dict[str, str]:
    evals: dict[str, str] = {}
    train_cfg = {"batch_size": DEFAULT_BATCH_SIZE, **spec.train}
    for rung in spec.ladder.rungs:
        b = rung_budget(spec, rung)
        seeds = spec.ladder.reference_seeds if rung.name == spec.ladder.reference else spec.ladder.proxy_seeds
        model = {"vocab_size": spec.tokenizer.vocab_size, "context": spec.rung_context(rung), "d_model": rung.d_model,
                 "n_layers": rung.n_layers, "n_heads": rung.n_heads, "mup": spec.ladder.mup}
        small = b["params"] < spec.executor.batch_below_params
        bkey = f"train:{content_hash([model, train_cfg, b['n_steps']])}" if small else None
        for dname, mix in sorted(spec.distributions.items()):
            for seed in seeds:
                cfg = {"distribution": dname, "mixture": mix, "rung": rung.name, "model": model,
                       "train": train_cfg, "n_steps": b["n_steps"],
                       "seed": derive_seed(spec.seed, "train", dname, rung.name, seed), "replicate": seed}
                inputs = {"tokenizer": tok_key, **{f"shard:{s}": shards[s] for s, w in mix.items() if w > 0}}
                tkey = plan.add(Step("train", f"{dname}-{rung.name}-s{seed}", cfg, inputs, bkey, b["flops"],
                                     info={**b, "rung": rung.name, "distribution": dname}))
                ekey = plan.add(Step("eval", f"{dname}-{rung.name}-s{seed}", {"batch_size": 64},
                                     {"model": tkey, **{f"test:{t}": k for t, k in tests.items()}},
                                     cost=2 * b["params"] * 200 * len(tests) * spec.context))
                evals[f"eval:{dname}:{rung.name}:{seed}"] = ekey
    return evals


def _add_ngrams(plan: Plan, spec: StudySpec, tok_key: str, shards: dict[str, str],
                tests: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    for dname, mix in sorted(spec.distributions.items()):
        for order in spec.analysis.ngram_orders:
            cfg = {"order": order, "distribution": dname, "mixture": mix, "context": spec.test_context,
                   "vocab_size": spec.tokenizer.vocab_size, "tokens": ref["tokens"],
                   "seed": derive_seed(spec.seed, "ngram", dname)}
            inputs = {"tokenizer": tok_key, **{f"shard:{s}": shards[s] for s, w in mix.items() if w > 0},
                      **{f"test:{t}": k for t, k in tests.items()}}
            out[f"ngram:{dname}:{order}"] = plan.add(Step("ngram", f"{dname}-{order}gram", cfg, inputs,
                                                         cost=ref["tokens"] * 50))
    return out


NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def _analysis_config(spec: StudySpec) -> dict[str, Any]:
    models = []
    for rung in spec.ladder.rungs:
        b = rung_budget(spec, rung)
        models.append({"model": rung.name, "kind": "neural", "params": b["params"], "train_tokens": b["tokens"],
                       "flops": b["flops"], "is_reference": rung.name == spec.ladder.reference})
    ref_tokens = rung_budget(spec, spec.rung(spec.ladder.reference))["tokens"]
    for order in spec.analysis.ngram_orders:
        models.append({"model": NGRAM_NAMES.get(order, f"{order}gram"), "kind": "ngram", "params": 0,
                       "train_tokens": ref_tokens, "flops": 0.0, "is_reference": False})
    test_sets = {t: {"kind": ts.kind, "source": ts.sources[0] if len(ts.sources) == 1 and ts.hub is None else None}
                 for t, ts in spec.test_sets.items()}
    return {"analysis": to_dict(spec.analysis), "models": models, "test_sets": test_sets,
            "distributions": {d: sorted(s for s, w in mix.items() if w > 0) for d, mix in spec.distributions.items()},
            "seed": spec.seed}

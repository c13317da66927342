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
from ...errors import ConfigError
from ...models.ladder import Budget, attribution_flops
from ...run.plan import Plan, Step
from ...seeding import derive_seed
from ...train.optim import TrainConfig
from ..fragments.data import DataKeys, add_data
from ..fragments.gpu_plan import RungSetup, resolve_ladder, setups_for_steps
from ..fragments.lm_ladder import add_lm_ladder
from ..fragments.pool import add_dsdm_scores, add_pool, add_selection
from .spec import RungSpec, StudySpec

NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def rung_budget(spec: StudySpec, rung: RungSpec) -> Budget:
    """Params, tokens, optimiser steps and FLOPs of one training run of ``rung`` (the ladder table)."""
    return spec.ladder.budget(rung, spec.tokenizer.vocab_size, spec.context, spec.train.batch_size)


def rung_setups(spec: StudySpec) -> dict[str, RungSetup]:
    """Every rung's ranks, micro-batch, memory per rank and hours on the spec's GPU."""
    return resolve_ladder(spec.ladder, spec.tokenizer.vocab_size, spec.context, spec.train, spec.gpu.type,
                          auto_micro_batch=spec.auto_micro_batch, mfu=spec.gpu.mfu, mup=spec.ladder.mup)


def build_plan(spec: StudySpec) -> Plan:
    """All steps of the study, dependencies first."""
    setups = setups_for_steps(rung_setups(spec))
    plan = Plan()
    used = {s for mix in spec.distributions.values() for s, w in mix.items() if w > 0}
    used |= set(spec.pool.sources) if spec.selections and spec.pool else set()
    data = add_data(plan, sources=spec.sources, used=sorted(used), test_sets=spec.test_sets,
                    tokenizer=spec.tokenizer, corpus=spec.corpus, seed=spec.seed,
                    heldout_fraction=spec.heldout_fraction, test_context=spec.test_context)
    windows, targets = add_selected_distributions(plan, spec, data, setups)
    evals = add_lm_ladder(plan, ladder=spec.ladder, distributions={**spec.distributions, **{d: {} for d in windows}},
                          train=spec.train, vocab_size=spec.tokenizer.vocab_size, context=spec.context,
                          seed=spec.seed, tokenizer=data.tokenizer, shard_inputs=data.shard_inputs,
                          test_inputs=data.test_inputs(), batch_below_params=spec.executor.batch_below_params,
                          max_batch=spec.executor.max_batch, windows=windows, setups=setups)
    ngrams = _add_ngrams(plan, spec, data, windows)
    counts = {f"count:{t}": k for t, k in data.tests.items()}  # requested vs built, for the report
    plan.add(Step("analyze", spec.name, _analysis_config(spec), {**evals, **ngrams, **targets, **counts}, cost=1e9))
    return plan


def add_selected_distributions(plan: Plan, spec: StudySpec, data: DataKeys,
                               setups: dict[str, tuple[int, TrainConfig]]) -> tuple[dict[str, tuple[str, str]],
                                                                                   dict[str, str]]:
    """The pool, target parts, DsDm proxies and selections behind selection-induced
    distributions. Returns (distribution → (pool, selection) keys, analysis inputs
    ``target:<test set>:<n>`` naming the target examples to leave out of evaluation)."""
    if not spec.selections:
        return {}, {}
    pool = add_pool(plan, tokenizer=data.tokenizer, shard_inputs=data.shard_inputs(spec.pool.sources),
                    mixture=spec.pool.sources, n_windows=spec.pool.n_windows, context=spec.pool_context,
                    seed=derive_seed(spec.seed, "pool"))
    parts: dict[str, str] = {}
    for sel in spec.selections.values():
        if sel.target is not None and f"{sel.target}:{sel.n_target}" not in parts:
            parts[f"{sel.target}:{sel.n_target}"] = plan.add(Step(
                "target_part", f"{sel.target}-n{sel.n_target}-target",
                {"part": "target", "n_target": sel.n_target, "n_holdout": 2,
                 "seed": derive_seed(spec.seed, "target-split", sel.target)},
                {"testset": data.tests[sel.target], "tokenizer": data.tokenizer, "pool": pool}, cost=1e8))
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    weights = _dsdm_for_selections(plan, spec, pool, parts, setups)
    windows = {}
    for name, sel in sorted(spec.selections.items()):
        tkey = f"{sel.target}:{sel.n_target}"
        key = add_selection(plan, name=name, method=sel.method, n=ref.n_steps * ref.batch_size,
                            seed=derive_seed(spec.seed, "select", name), pool=pool,
                            target=(tkey, parts[tkey]) if sel.target is not None else None, tokenizer=data.tokenizer,
                            weights=weights.get(sel.proxy) if sel.method in ("dsdm", "bot-dsdm") else None,
                            settings=sel.settings)
        windows[name] = (pool, key)
    return windows, {f"target:{k}": v for k, v in parts.items()}


def _dsdm_for_selections(plan: Plan, spec: StudySpec, pool: str, parts: dict[str, str],
                         setups: dict[str, tuple[int, TrainConfig]]) -> dict[str, str]:
    """One dsdm_scores step per proxy rung that a DsDm selection uses (scoring every target)."""
    out = {}
    for rung in sorted({s.proxy for s in spec.selections.values() if s.method in ("dsdm", "bot-dsdm")}):
        r = spec.rung(rung)
        b = rung_budget(spec, r)
        windows = b.n_steps * b.batch_size
        if windows > spec.pool.n_windows:
            raise ConfigError(f"proxy {rung} needs {windows:,} pool windows (its Chinchilla size) but the pool has "
                              f"{spec.pool.n_windows:,}; grow pool.n_windows")
        cost = attribution_flops(b.params, spec.dsdm.k, spec.pool.n_windows, 1, spec.pool_context) * spec.dsdm.models
        out[rung] = add_dsdm_scores(plan, name=rung, pool=pool, model=r.gpt(spec.tokenizer.vocab_size, spec.context),
                                    train=setups[rung][1], n_steps=b.n_steps, windows=windows, flops=b.flops,
                                    trak=to_dict(spec.dsdm), targets=parts, seed=spec.seed, cost=cost,
                                    batching=(spec.executor.max_batch, spec.executor.batch_below_params))
    return out


def _add_ngrams(plan: Plan, spec: StudySpec, data: DataKeys, windows: dict[str, tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    ref = rung_budget(spec, spec.rung(spec.ladder.reference))
    for dname, mix in sorted({**spec.distributions, **{d: {} for d in windows}}.items()):
        for order in spec.analysis.ngram_orders:
            cfg = {"order": order, "distribution": dname, "mixture": mix, "context": spec.test_context,
                   "vocab_size": spec.tokenizer.vocab_size, "tokens": ref.tokens,
                   "seed": derive_seed(spec.seed, "ngram", dname)}
            source = ({"pool": windows[dname][0], "selection": windows[dname][1]} if dname in windows
                      else data.shard_inputs(mix))
            inputs = {"tokenizer": data.tokenizer, **source, **data.test_inputs()}
            out[f"ngram:{dname}:{order}"] = plan.add(Step("ngram", f"{dname}-{order}gram", cfg, inputs,
                                                         cost=ref.tokens * 50))
    return out


def _analysis_config(spec: StudySpec) -> dict[str, Any]:
    models = []
    for rung in spec.ladder.rungs:
        b = rung_budget(spec, rung)
        models.append({"model": rung.name, "kind": "neural", "params": b.params, "train_tokens": b.tokens,
                       "flops": b.flops, "is_reference": rung.name == spec.ladder.reference,
                       "vocab_size": spec.tokenizer.vocab_size})
    ref_tokens = rung_budget(spec, spec.rung(spec.ladder.reference)).tokens
    for order in spec.analysis.ngram_orders:
        models.append({"model": NGRAM_NAMES.get(order, f"{order}gram"), "kind": "ngram", "params": 0,
                       "train_tokens": ref_tokens, "flops": 0.0, "is_reference": False,
                       "vocab_size": spec.tokenizer.vocab_size})
    test_sets = {t: {"kind": ts.kind, "source": ts.sources[0] if len(ts.sources) == 1 and ts.hub is None else None}
                 for t, ts in spec.test_sets.items()}
    dists = {d: sorted(s for s, w in mix.items() if w > 0) for d, mix in spec.distributions.items()}
    dists.update({d: [f"{s.method} selection" + (f" toward {s.target}" if s.target else "")
                      + (f" ({s.proxy} proxies)" if s.proxy else "")] for d, s in spec.selections.items()})
    mixtures = {d: {s: float(w) for s, w in mix.items()} for d, mix in spec.distributions.items()}
    return {"analysis": to_dict(spec.analysis), "models": models, "test_sets": test_sets, "distributions": dists,
            "seed": spec.seed, "mixtures": mixtures}

"""The selection study's plan, composed from the data and pool fragments::

    data fragment ─► pool_windows ─► window_train (proxy rung × model, random pool subsets) ─► dsdm_scores ─┐
         └─► testset (per target) ─► target_part (target | holdout, decontaminated vs the pool) ──────────┤
    select_windows (random × budgets, dsir, classifier, dsdm / bot-dsdm × proxy rung) ◄───────────────────┘
         └─► window_train (reference × seed, on the selection) ─► eval (holdouts, test sets) ─► sel_analyze
"""
from __future__ import annotations

from typing import Any

from ...config import to_dict
from ...errors import ConfigError
from ...models.ladder import attribution_flops, lm_budget, train_flops
from ...run.plan import Plan, Step
from ...seeding import derive_seed
from ..fragments.data import add_data
from ..fragments.pool import WindowModel, add_dsdm_scores, add_pool, add_selection, add_window_models
from .spec import SelectionSpec


def budget_table(spec: SelectionSpec) -> dict[str, dict[str, Any]]:
    """Per rung (proxies and the reference): params, Chinchilla steps, windows and FLOPs."""
    rows = {}
    for r in (*spec.proxies, spec.reference):
        b = lm_budget(r.gpt(spec.tokenizer.vocab_size, spec.context), spec.tokens_per_param, spec.train.batch_size)
        rows[r.name] = {**b.as_dict(), "windows": b.n_steps * b.batch_size, "is_reference": r is spec.reference}
    return rows


def build_selection_plan(spec: SelectionSpec) -> Plan:
    """Every step of the selection study, dependencies first."""
    plan, ctx = Plan(), spec.context
    used = sorted(spec.pool.sources)
    tests = {f"target-{t}": ts.test_set() for t, ts in spec.targets.items()}
    data = add_data(plan, sources=spec.sources, used=used, test_sets={**tests, **spec.test_sets},
                    tokenizer=spec.tokenizer, corpus=spec.corpus, seed=spec.seed,
                    heldout_fraction=spec.heldout_fraction, test_context=ctx)
    pool = add_pool(plan, tokenizer=data.tokenizer, shard_inputs=data.shard_inputs(spec.pool.sources),
                    mixture=spec.pool.sources, n_windows=spec.pool.n_windows, context=ctx,
                    seed=derive_seed(spec.seed, "pool"))
    rows = budget_table(spec)
    parts = _add_targets(plan, spec, data, pool)
    weights = _add_dsdm(plan, spec, pool, parts, rows)
    selections = _add_selections(plan, spec, pool, parts, weights, rows, data.tokenizer)
    evals = _add_references(plan, spec, pool, selections, parts, data.test_inputs(), rows)
    evals.update({f"holdout:{t}": p["holdout"] for t, p in parts.items()})
    plan.add(Step("sel_analyze", spec.name, _analysis_config(spec, rows, selections), evals, cost=1e9))
    return plan


def _add_targets(plan: Plan, spec: SelectionSpec, data: Any, pool: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t, ts in sorted(spec.targets.items()):
        inputs = {"testset": data.tests[f"target-{t}"], "tokenizer": data.tokenizer, "pool": pool}
        cfg = {"n_target": ts.n_target, "n_holdout": ts.n_holdout, "seed": derive_seed(spec.seed, "target-split", t)}
        out[t] = {part: plan.add(Step("target_part", f"{t}-{part}", {**cfg, "part": part}, inputs, cost=1e8))
                  for part in ("target", "holdout")}
    return out


def _add_dsdm(plan: Plan, spec: SelectionSpec, pool: str, parts: dict[str, dict[str, str]],
              rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    if not {"dsdm", "bot-dsdm"} & set(spec.methods):
        return {}
    out = {}
    for r in spec.proxies:
        b = rows[r.name]
        if b["windows"] > spec.pool.n_windows:
            raise ConfigError(f"proxy {r.name} needs {b['windows']:,} pool windows (its Chinchilla size) but the pool "
                              f"has {spec.pool.n_windows:,}; grow pool.n_windows")
        cost = attribution_flops(b["params"], spec.dsdm.k, spec.pool.n_windows, 1, spec.context) * spec.dsdm.models
        model = r.gpt(spec.tokenizer.vocab_size, spec.context)
        out[r.name] = add_dsdm_scores(plan, name=r.name, pool=pool, model=model, train=spec.train,
                                      n_steps=b["n_steps"], windows=b["windows"], flops=b["flops"],
                                      trak=to_dict(spec.dsdm), targets={t: p["target"] for t, p in parts.items()},
                                      seed=spec.seed, cost=cost,
                                      batching=(spec.executor.max_batch, spec.executor.batch_below_params))
    return out


def _selection_specs(spec: SelectionSpec, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per selection: method, target (None: target-free), proxy, budget, size."""
    ref = rows[spec.reference.name]
    out = []
    for b in sorted(spec.random_budgets):
        n_steps = max(1, round(b * ref["n_steps"]))
        out.append({"method": "random", "target": None, "proxy": None, "budget": b, "n_steps": n_steps})
    for t in sorted(spec.targets):
        for m in ("dsir", "classifier"):
            if m in spec.methods:
                out.append({"method": m, "target": t, "proxy": None, "budget": 1.0, "n_steps": ref["n_steps"]})
        for m in ("dsdm", "bot-dsdm"):
            if m in spec.methods:
                out += [{"method": m, "target": t, "proxy": r.name, "budget": 1.0, "n_steps": ref["n_steps"]}
                        for r in spec.proxies]
    for s in out:
        s["n"] = s["n_steps"] * spec.train.batch_size
        s["name"] = "-".join(str(x) for x in (s["method"], s["target"], s["proxy"]) if x) + f"-b{s['budget']:g}"
        if s["n"] > spec.pool.n_windows:
            raise ConfigError(f"selection {s['name']} needs {s['n']:,} windows but the pool has "
                              f"{spec.pool.n_windows:,}; grow pool.n_windows or lower random_budgets")
    return out


def _add_selections(plan: Plan, spec: SelectionSpec, pool: str, parts: dict[str, dict[str, str]],
                    weights: dict[str, str], rows: dict[str, dict[str, Any]], tokenizer: str) -> list[dict[str, Any]]:
    out = []
    settings = {"dsir": spec.dsir, "classifier": spec.classifier}
    for s in _selection_specs(spec, rows):
        target = None if s["target"] is None else (s["target"], parts[s["target"]]["target"])
        key = add_selection(plan, name=s["name"], method=s["method"], n=s["n"],
                            seed=derive_seed(spec.seed, "select", s["name"]), pool=pool, target=target,
                            tokenizer=tokenizer, weights=weights.get(s["proxy"]) if s["proxy"] else None,
                            settings=settings.get(s["method"], {}))
        out.append({**s, "key": key})
    return out


def _add_references(plan: Plan, spec: SelectionSpec, pool: str, selections: list[dict[str, Any]],
                    parts: dict[str, dict[str, str]], test_inputs: dict[str, str],
                    rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    ref = rows[spec.reference.name]
    tests = {**{f"test:holdout-{t}": p["holdout"] for t, p in parts.items()},
             **{k: v for k, v in test_inputs.items() if not k.startswith("test:target-")}}
    model = spec.reference.gpt(spec.tokenizer.vocab_size, spec.context)
    trained: dict[tuple[str, int], str] = {}
    # the references of one budget are one same-shape group, in stacks the plan fixes
    for n_steps in sorted({s["n_steps"] for s in selections}):
        group = [(s, rep) for s in selections if s["n_steps"] == n_steps for rep in spec.reference_seeds]
        members = [WindowModel(f"ref-{s['name']}-s{rep}", derive_seed(spec.seed, "reference", s["name"], rep), pool,
                               selection=s["key"]) for s, rep in group]
        keys = add_window_models(plan, model=model, train=spec.train, n_steps=n_steps, members=members,
                                 flops=train_flops(ref["params"], group[0][0]["n"] * spec.context),
                                 max_batch=spec.executor.max_batch,
                                 batch_below_params=spec.executor.batch_below_params)
        trained.update({(s["name"], rep): k for (s, rep), k in zip(group, keys)})
    evals = {}
    for s in selections:
        for rep in spec.reference_seeds:
            name = f"{s['name']}-s{rep}"
            evals[f"eval:{s['name']}:{rep}"] = plan.add(Step("eval", name, {"batch_size": 64},
                                                              {"model": trained[(s["name"], rep)], **tests},
                                                              cost=2 * ref["params"] * 200 * len(tests) * spec.context))
            evals[f"sel:{s['name']}"] = s["key"]
    return evals


def _analysis_config(spec: SelectionSpec, rows: dict[str, dict[str, Any]],
                     selections: list[dict[str, Any]]) -> dict[str, Any]:
    trak = {r.name: attribution_flops(rows[r.name]["params"], spec.dsdm.k, spec.pool.n_windows,
                                      sum(t.n_target for t in spec.targets.values()), spec.context) * spec.dsdm.models
            for r in spec.proxies}
    return {"name": spec.name, "seed": spec.seed, "n_boot": spec.n_boot, "reference": spec.reference.name,
            "reference_seeds": list(spec.reference_seeds), "targets": sorted(spec.targets),
            "target_kinds": {t: ts.kind for t, ts in spec.targets.items()}, "rungs": rows,
            "proxies": [r.name for r in spec.proxies], "dsdm_models": spec.dsdm.models, "trak_flops": trak,
            "context": spec.context, "pool_windows": spec.pool.n_windows,
            "selections": [{k: v for k, v in s.items() if k != "key"} for s in selections]}


def selection_compute(cfg: dict[str, Any], proxy: str) -> float:
    """FLOPs spent to select with DsDm at ``proxy``: its models' training plus TRAK."""
    r = cfg["rungs"][proxy]
    return r["flops"] * cfg["dsdm_models"] + cfg["trak_flops"][proxy]


"""The ``lm`` block of an attribution study: TRAK on the GPT ladder, LDS against reference-size
GPTs retrained on α-subsets of the training documents.

The data steps (corpus, tokenizer, token shards, the held-out test set whose examples are the
targets) are exactly those a small-to-large study with the same settings builds — the plan takes
them from :func:`proxyscale.run.study.build_plan`, so both studies share them in one store.
A training "document" here is one packed window of ``context + 1`` tokens of the mixture of all
sources; the output function is the mean per-token log-odds (``LMLogOdds``)::

    corpus ─► tokenizer ─► shard ─► attr_lm_docs ─► attr_lm_train (per rung) ─► attr_lm_trak ─┐
                      └──► testset (targets) ─────────────────────────────────────────────────┤
              attr_lm_subsets ─► attr_lm_retrain (reference rung, chunks) ────────────────────┘
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import from_dict, suggest, to_dict
from ..errors import ConfigError
from ..seeding import derive_seed
from ..store import read_json, write_json, write_npy
from .attribution import LDSSpec, TrakSpec, attribution_flops
from .plan import Plan, Step
from .spec import RungSpec, TokenizerSpec
from .worker import StepContext

DATA_KINDS = ("corpus", "tokenizer", "shard", "testset")


@dataclass(frozen=True)
class LMAttrSpec:
    """The GPT ladder part of an attribution study (defaults are tiny: about a minute on 2 cores)."""

    sources: dict[str, dict[str, Any]]
    rungs: tuple[RungSpec, ...]
    reference: str
    corpus: dict[str, Any] = field(default_factory=dict)
    tokenizer: TokenizerSpec = field(default_factory=lambda: TokenizerSpec(vocab_size=300, sample_bytes=400_000))
    context: int = 32
    heldout_fraction: float = 0.2
    n_docs: int = 160
    n_targets: int = 16
    models_per_rung: int = 3
    epochs: int = 4
    train: dict[str, Any] = field(default_factory=lambda: {"batch_size": 16, "lr": 0.01, "warmup_frac": 0.1})
    trak: TrakSpec = field(default_factory=lambda: TrakSpec(k=256, batch_size=16))
    lds: LDSSpec = field(default_factory=lambda: LDSSpec(n_subsets=20, seeds_per_subset=2, chunk=10))

    def __post_init__(self) -> None:
        names = [r.name for r in self.rungs]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"lm.rungs: give at least two distinct rungs, got {names}")
        if self.reference not in names:
            raise ConfigError(f"lm.reference: '{self.reference}' is not a rung{suggest(self.reference, names)}")
        if self.n_docs < 10 or self.n_targets < 1 or self.models_per_rung < 1 or self.epochs < 1:
            raise ConfigError("lm: n_docs ≥ 10, n_targets ≥ 1, models_per_rung ≥ 1 and epochs ≥ 1 are needed")


def parse_lm_block(data: Any, where: str = "lm") -> LMAttrSpec:
    spec = from_dict(LMAttrSpec, data, where)
    _train_config(spec)
    return spec


def _train_config(lm: LMAttrSpec) -> dict[str, Any]:
    from ..train.optim import TrainConfig

    return to_dict(from_dict(TrainConfig, {"checkpoint_every": 0, **lm.train}, "lm.train"))


def _data_study(spec: Any, lm: LMAttrSpec):
    """The small-to-large study whose data steps this block shares."""
    from .spec import LadderSpec, StudySpec, TestSetSpec

    return StudySpec(name=f"{spec.name}-lm", sources=lm.sources, distributions={"all": {s: 1.0 for s in lm.sources}},
                     test_sets={"targets": TestSetSpec(kind="lm", sources=tuple(sorted(lm.sources)),
                                                       n_examples=lm.n_targets)},
                     ladder=LadderSpec(rungs=lm.rungs, reference=lm.reference), seed=spec.seed, context=lm.context,
                     heldout_fraction=lm.heldout_fraction, corpus=lm.corpus, tokenizer=lm.tokenizer)


def _gpt(lm: LMAttrSpec, rung: RungSpec) -> dict[str, Any]:
    return {"vocab_size": lm.tokenizer.vocab_size, "context": lm.context, "d_model": rung.d_model,
            "n_layers": rung.n_layers, "n_heads": rung.n_heads}


def add_lm_steps(plan: Plan, spec: Any) -> dict[str, str]:
    """Add the LM block's steps to ``plan``; returns the analysis inputs (roles ``lm_*``)."""
    from ..models.ladder import GPTConfig, param_count
    from .study import build_plan

    lm = parse_lm_block(spec.lm)
    data_plan = build_plan(_data_study(spec, lm))
    for s in data_plan:
        if s.kind in DATA_KINDS:
            plan.add(s)
    tok = data_plan.of_kind("tokenizer")[0].key
    shards = {f"shard:{s.config['source']}": s.key for s in data_plan.of_kind("shard")}
    test = data_plan.of_kind("testset")[0].key
    docs = plan.add(Step("attr_lm_docs", f"n{lm.n_docs}-T{lm.context}",
                         {"n_docs": lm.n_docs, "context": lm.context, "mixture": {s: 1.0 for s in lm.sources},
                          "seed": derive_seed(spec.seed, "lm-docs")}, {"tokenizer": tok, **shards}, cost=1e8))
    train, out = _train_config(lm), {}
    tokens = lm.epochs * lm.n_docs * lm.context
    for rung in lm.rungs:
        p = param_count(GPTConfig(**_gpt(lm, rung)))
        cfg = {"model": _gpt(lm, rung), "train": train, "epochs": lm.epochs,
               "seeds": [derive_seed(spec.seed, "lm-train", rung.name, m) for m in range(lm.models_per_rung)]}
        tk = plan.add(Step("attr_lm_train", rung.name, cfg, {"docs": docs}, cost=6.0 * p * tokens * lm.models_per_rung,
                           info={"params": p}))
        trak_cfg = {"model": _gpt(lm, rung), "trak": to_dict(lm.trak), "is_reference": rung.name == lm.reference,
                    "seed": derive_seed(spec.seed, "lm-trak", rung.name)}
        out[f"lm_trak:{rung.name}"] = plan.add(Step(
            "attr_lm_trak", rung.name, trak_cfg, {"models": tk, "docs": docs, "targets": test},
            cost=attribution_flops(p, lm.trak.k, lm.n_docs, lm.n_targets, lm.context) * lm.models_per_rung))
    out.update(_add_lm_lds(plan, spec, lm, docs, test, train))
    return out


def _add_lm_lds(plan: Plan, spec: Any, lm: LMAttrSpec, docs: str, test: str, train: dict[str, Any]) -> dict[str, str]:
    sub = plan.add(Step("attr_subsets", f"lm-a{lm.lds.alpha:g}-m{lm.lds.n_subsets}",
                        {"n_train": lm.n_docs, "alpha": lm.lds.alpha, "n_subsets": lm.lds.n_subsets,
                         "seed": derive_seed(spec.seed, "lm-lds-subsets")}, cost=1e6))
    from ..models.ladder import GPTConfig, param_count

    ref = next(r for r in lm.rungs if r.name == lm.reference)
    per_model = 6.0 * param_count(GPTConfig(**_gpt(lm, ref))) * lm.epochs * int(lm.lds.alpha * lm.n_docs) * lm.context
    out = {"lm_subsets": sub}
    for start in range(0, lm.lds.n_subsets, lm.lds.chunk):
        stop = min(start + lm.lds.chunk, lm.lds.n_subsets)
        cfg = {"model": _gpt(lm, ref), "train": train, "epochs": lm.epochs, "n_seeds": lm.lds.seeds_per_subset,
               "start": start, "stop": stop, "seed": derive_seed(spec.seed, "lm-lds-retrain")}
        out[f"lm_retrain:{start:06d}"] = plan.add(Step("attr_lm_retrain", f"{ref.name}-{start}-{stop}", cfg,
                                                       {"subsets": sub, "docs": docs, "targets": test},
                                                       cost=per_model * (stop - start) * lm.lds.seeds_per_subset))
    return out


# -- step functions ----------------------------------------------------------------------------
def attr_lm_docs_step(ctx: StepContext) -> None:
    """The training documents: the first ``n_docs`` packed windows (n, T+1) of the mixture."""
    from ..data.shards import TokenShard
    from ..data.stream import TrainStream
    from ..data.tokenizer import load_tokenizer

    c = ctx.config
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    comps = [(TokenShard.open(ctx.inputs[f"shard:{s}"]), float(w), None) for s, w in sorted(c["mixture"].items())]
    stream = TrainStream(comps, context=c["context"], eos_id=tok.eos_id, seed=c["seed"])
    write_npy(ctx.out / "docs.npy", stream.batch(0, c["n_docs"]))


def _schedule(pool: np.ndarray, batch: int, epochs: int, seed: int) -> tuple[int, Any]:
    """(n_steps, batch_fn) visiting ``pool`` (doc indices) ``epochs`` times in seeded orders."""
    from ..seeding import np_rng

    n_steps = max(1, math.ceil(epochs * len(pool) / batch))
    order = np.concatenate([np_rng(seed, "lm-order", e).permutation(pool)
                            for e in range(math.ceil(n_steps * batch / len(pool)))])
    return n_steps, lambda i: order[i * batch:(i + 1) * batch]


def _train_many(ctx: StepContext, pools: list[np.ndarray], seeds: list[int], outs: list[Path]) -> None:
    from ..models.ladder import GPTConfig
    from ..train.batched import train_lm_batched
    from ..train.optim import TrainConfig

    c = ctx.config
    docs = np.load(ctx.inputs["docs"] / "docs.npy", allow_pickle=False)
    model, train = from_dict(GPTConfig, c["model"], "model"), from_dict(TrainConfig, c["train"], "train")
    fns, n_steps = [], 0
    for pool, seed in zip(pools, seeds):
        n_steps, fn = _schedule(pool, train.batch_size, c["epochs"], seed)
        fns.append(lambda i, f=fn: docs[f(i)])
    train_lm_batched(model, train, fns, n_steps, outs, seeds)


def attr_lm_train_step(ctx: StepContext) -> None:
    """Train ``len(seeds)`` GPTs of one rung on every document (batched)."""
    n = len(np.load(ctx.inputs["docs"] / "docs.npy", mmap_mode="r", allow_pickle=False))
    seeds = ctx.config["seeds"]
    _train_many(ctx, [np.arange(n)] * len(seeds), seeds, [ctx.out / f"m{e}" for e in range(len(seeds))])


def _targets(ctx: StepContext) -> tuple[Any, Any]:
    import torch

    from ..data.testset import padded_batch, read_test_set

    tokens, mask, _, _ = padded_batch(list(read_test_set(ctx.inputs["targets"] / "test.parquet").examples))
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def _train_pairs(ctx: StepContext) -> tuple[Any, Any]:
    import torch

    # A document holds context + 1 tokens (a training window); the model reads at most `context`,
    # so its output is measured on the first `context` tokens: every next-token prediction in them.
    docs = np.load(ctx.inputs["docs"] / "docs.npy", allow_pickle=False)[:, :-1].astype(np.int64)
    return torch.from_numpy(docs), torch.ones(docs.shape[0], docs.shape[1] - 1)


def attr_lm_trak_step(ctx: StepContext) -> None:
    """TRAK scores (n_docs, n_targets) of one rung's GPT ensemble (mean per-token log-odds)."""
    from ..attribute.outputs import LMLogOdds
    from ..attribute.trak import TRAK
    from ..models.gpt import load_gpt

    t0, tc = time.time(), ctx.config["trak"]
    runs = sorted(p for p in ctx.inputs["models"].glob("m*") if (p / "model.safetensors").is_file())
    model = load_gpt(runs[0])
    trak = TRAK(model, LMLogOdds(fused_attention=False), k=tc["k"], projector=tc["projector"],
                lambda_ratio=tc["lambda_ratio"], use_q=tc["use_q"], seed=ctx.config["seed"],
                batch_size=tc["batch_size"])
    train = _train_pairs(ctx)
    for i, r in enumerate(runs):
        trak.featurize(load_gpt(r).state_dict(), train, model_id=i)
    targets = _targets(ctx)
    write_npy(ctx.out / "scores.npy", np.asarray(trak.score(targets), dtype=np.float32))
    meta = read_json(runs[0] / "train.json")
    write_json(ctx.out / "trak.json", {"params": trak.p, "n_models": len(runs), "train_flops": meta["flops"],
                                       "n_docs": int(train[0].shape[0]), "n_targets": int(targets[0].shape[0]),
                                       "is_reference": ctx.config["is_reference"], "wall_s": time.time() - t0})


def attr_lm_retrain_step(ctx: StepContext) -> None:
    """Reference-rung GPTs on subsets [start, stop) × seeds: target outputs (chunk, seeds, T)."""
    import torch

    from ..attribute.outputs import LMLogOdds
    from ..models.gpt import load_gpt

    c = ctx.config
    masks = np.load(ctx.inputs["subsets"] / "masks.npy", allow_pickle=False)[c["start"]:c["stop"]]
    jobs = [(c["start"] + i, r) for i in range(len(masks)) for r in range(c["n_seeds"])]
    seeds = [derive_seed(c["seed"], "subset", i, r) for i, r in jobs]
    outs = [ctx.out / "runs" / f"{i}-{r}" for i, r in jobs]
    _train_many(ctx, [np.flatnonzero(masks[i - c["start"]]) for i, _ in jobs], seeds, outs)
    tokens, mask = _targets(ctx)
    f = LMLogOdds(fused_attention=False)
    result = np.zeros((len(masks), c["n_seeds"], len(tokens)), dtype=np.float32)
    with torch.no_grad():
        for (i, r), d in zip(jobs, outs):
            model = load_gpt(d).eval()
            result[i - c["start"], r] = f.outputs(model, dict(model.named_parameters()), (tokens, mask)).numpy()
    write_npy(ctx.out / "outputs.npy", result)
    shutil.rmtree(ctx.out / "runs", ignore_errors=True)  # the outputs are the result, not the weights


def analyze_lm(cfg: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """LDS per rung (with bootstrap CI) against the reference rung's retraining; the manifest's ``lm``."""
    from ..attribute.lds import lds, seed_agreement
    from ..seeding import np_rng

    masks = np.load(inputs["lm_subsets"] / "masks.npy", allow_pickle=False)
    chunks = sorted(r for r in inputs if r.startswith("lm_retrain:"))
    outputs = np.concatenate([np.load(inputs[r] / "outputs.npy", allow_pickle=False) for r in chunks])
    rows = []
    for role in sorted(r for r in inputs if r.startswith("lm_trak:")):
        meta = read_json(inputs[role] / "trak.json")
        res = lds(np.load(inputs[role] / "scores.npy", allow_pickle=False), masks, outputs,
                  rng=np_rng(cfg["seed"], "lm-lds-boot", role), n_boot=cfg["n_boot"])
        rows.append({"rung": role.split(":", 1)[1], "params": meta["params"], "train_flops": meta["train_flops"],
                     "is_reference": meta["is_reference"], "lds": res.mean, "ci_low": res.ci_low,
                     "ci_high": res.ci_high, "n_valid": res.n_valid})
    ref = next(r for r in rows if r["is_reference"])
    for r in rows:
        r["compute_ratio"] = ref["train_flops"] / r["train_flops"]
    rows.sort(key=lambda r: -r["compute_ratio"])
    write_npy(out / "lm_outputs.npy", outputs)
    return {"rows": rows, "noise_ceiling": seed_agreement(outputs), "n_docs": int(masks.shape[1]),
            "n_targets": int(outputs.shape[2]), "n_subsets": int(len(outputs)), "seeds": int(outputs.shape[1])}

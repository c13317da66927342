"""The LM attribution fragment (the ``lm`` block of an attribution study): TRAK on a GPT ladder,
LDS against reference-size GPTs retrained on α-subsets of the training documents.

Its data steps are the shared data fragment's (corpus, tokenizer, token shards, and a held-out
test set whose examples are the targets), so a small-to-large study with the same settings
shares them in one store. A training "document" is one packed window of ``context + 1`` tokens
of the mixture of all sources; the output function is the mean per-token log-odds::

    corpus ─► tokenizer ─► shard ─► attr_lm_docs ─► attr_lm_train (per rung) ─► attr_lm_trak ─┐
                      └──► testset (targets) ─────────────────────────────────────────────────┤
              attr_subsets ─► attr_lm_retrain (reference rung, chunks) ───────────────────────┘
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...config import from_dict, to_dict
from ...errors import ConfigError
from ...models.ladder import GPTConfig, attribution_flops, param_count, train_flops
from ...run.plan import Plan, Step
from ...run.step import StepContext, step_kind
from ...seeding import derive_seed
from ...store import read_json, write_json, write_npy
from ...train.optim import TrainConfig
from .data import CorpusSpec, TestSetSpec, TokenizerSpec, add_data, check_sources
from .lds import LDSSpec, add_lds
from .lm_ladder import RungSpec, check_rungs
from .trak import TrakSpec


@dataclass(frozen=True)
class LMAttrSpec:
    """The GPT ladder part of an attribution study (defaults are tiny: about a minute on 2 cores)."""

    sources: dict[str, dict[str, Any]]
    rungs: tuple[RungSpec, ...]
    reference: str
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
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
        check_rungs(self.rungs, self.reference, "lm")
        if self.n_docs < 10 or self.n_targets < 1 or self.models_per_rung < 1 or self.epochs < 1:
            raise ConfigError("lm: n_docs ≥ 10, n_targets ≥ 1, models_per_rung ≥ 1 and epochs ≥ 1 are needed")
        check_sources(self.sources, {}, self.tokenizer)
        self.train_config()

    def train_config(self) -> dict[str, Any]:
        """The GPT training recipe as data (no periodic checkpoints unless asked)."""
        return to_dict(from_dict(TrainConfig, {"checkpoint_every": 0, **self.train}, "lm.train"))

    def gpt(self, rung: RungSpec) -> GPTConfig:
        return GPTConfig(vocab_size=self.tokenizer.vocab_size, context=self.context, d_model=rung.d_model,
                         n_layers=rung.n_layers, n_heads=rung.n_heads)


# -- step configs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LMDocsStep:
    n_docs: int
    context: int
    mixture: dict[str, float]
    seed: int


@dataclass(frozen=True)
class LMTrainStep:
    model: GPTConfig
    train: TrainConfig
    epochs: int
    seeds: tuple[int, ...] = ()
    stacking: Literal["stacked", "auto", "single"] = "single"  # resolved by the plan (see _choices)


@dataclass(frozen=True)
class LMTrakStep:
    model: GPTConfig
    trak: TrakSpec
    is_reference: bool
    seed: int


@dataclass(frozen=True)
class LMRetrainStep:
    model: GPTConfig
    train: TrainConfig
    epochs: int
    n_seeds: int
    start: int
    stop: int
    seed: int
    stacking: Literal["stacked", "auto", "single"] = "single"  # resolved by the plan (see _choices)


# -- the fragment ------------------------------------------------------------------------------
def add_lm_attribution(plan: Plan, lm: LMAttrSpec, seed: int) -> dict[str, str]:
    """Add the LM block's steps to ``plan``; returns the analysis inputs (roles ``lm_*``)."""
    mixture = {s: 1.0 for s in lm.sources}
    data = add_data(plan, sources=lm.sources, used=sorted(lm.sources), tokenizer=lm.tokenizer, corpus=lm.corpus,
                    test_sets={"targets": TestSetSpec(kind="lm", sources=tuple(sorted(lm.sources)),
                                                      n_examples=lm.n_targets)},
                    seed=seed, heldout_fraction=lm.heldout_fraction, test_context=lm.context)
    test = data.tests["targets"]
    docs = plan.add(Step("attr_lm_docs", f"n{lm.n_docs}-T{lm.context}",
                         {"n_docs": lm.n_docs, "context": lm.context, "mixture": mixture,
                          "seed": derive_seed(seed, "lm-docs")},
                         {"tokenizer": data.tokenizer, **data.shard_inputs(mixture)}, cost=1e8))
    out: dict[str, str] = {}
    tokens = lm.epochs * lm.n_docs * lm.context
    for rung in lm.rungs:
        model = to_dict(lm.gpt(rung))
        p = param_count(lm.gpt(rung))
        cost = train_flops(p, tokens) * lm.models_per_rung
        rung_train, stacking = _choices(lm, rung, lm.n_docs, lm.models_per_rung, cost)
        cfg = {"model": model, "train": rung_train, "epochs": lm.epochs, "stacking": stacking,
               "seeds": [derive_seed(seed, "lm-train", rung.name, m) for m in range(lm.models_per_rung)]}
        tk = plan.add(Step("attr_lm_train", rung.name, cfg, {"docs": docs}, cost=cost, info={"params": p}))
        trak_cfg = {"model": model, "trak": to_dict(lm.trak), "is_reference": rung.name == lm.reference,
                    "seed": derive_seed(seed, "lm-trak", rung.name)}
        out[f"lm_trak:{rung.name}"] = plan.add(Step(
            "attr_lm_trak", rung.name, trak_cfg, {"models": tk, "docs": docs, "targets": test},
            cost=attribution_flops(p, lm.trak.k, lm.n_docs, lm.n_targets, lm.context) * lm.models_per_rung))
    ref = next(r for r in lm.rungs if r.name == lm.reference)
    per_model = train_flops(param_count(lm.gpt(ref)), lm.epochs * int(lm.lds.alpha * lm.n_docs) * lm.context)
    stack = lm.lds.chunk * lm.lds.seeds_per_subset  # a retrain step's models, trained as one stack
    ref_train, stacking = _choices(lm, ref, int(lm.lds.alpha * lm.n_docs), stack, per_model * stack)
    retrain = {"model": to_dict(lm.gpt(ref)), "train": ref_train, "stacking": stacking, "epochs": lm.epochs,
               "n_seeds": lm.lds.seeds_per_subset, "seed": derive_seed(seed, "lm-lds-retrain")}
    out.update(add_lds(plan, lm.lds, n_train=lm.n_docs, subsets_name=f"lm-a{lm.lds.alpha:g}-m{lm.lds.total}",
                       subsets_seed=derive_seed(seed, "lm-lds-subsets"), retrain_kind="attr_lm_retrain",
                       retrain_name=lambda a, b: f"{ref.name}-{a}-{b}",
                       retrain_config=lambda a, b: {**retrain, "start": a, "stop": b},
                       inputs={"docs": docs, "targets": test}, per_model_flops=per_model, prefix="lm_"))
    return out


def _choices(lm: LMAttrSpec, rung: RungSpec, n_docs: int, stack: int, cost: float) -> tuple[dict[str, Any], str]:
    """(train config with its precision resolved, stacking) for one step's stack of ``stack``
    models of ``rung`` on ``n_docs`` documents; ``cost``: the step's FLOPs, which fix its threads.
    Both choices change the models' bits, so they go into the step's config, hence its key
    (:mod:`.measured`); the step's models are one stack fixed by its config."""
    from .measured import train_choices

    n_steps = max(1, math.ceil(lm.epochs * n_docs / int(lm.train_config()["batch_size"])))
    resolved, stacking = train_choices(lm.gpt(rung), from_dict(TrainConfig, lm.train_config(), "lm.train"), n_steps,
                                       stack, cost, one_step=True)
    return to_dict(resolved), stacking


# -- step functions ----------------------------------------------------------------------------
@step_kind("attr_lm_docs", config=LMDocsStep)
def attr_lm_docs_step(ctx: StepContext) -> None:
    """The training documents: the first ``n_docs`` packed windows (n, T+1) of the mixture."""
    from ...data.shards import TokenShard
    from ...data.stream import TrainStream
    from ...data.tokenizer import load_tokenizer

    c = ctx.config
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    comps = [(TokenShard.open(ctx.inputs[f"shard:{s}"]), float(w), None) for s, w in sorted(c["mixture"].items())]
    stream = TrainStream(comps, context=c["context"], eos_id=tok.eos_id, seed=c["seed"])
    write_npy(ctx.out / "docs.npy", stream.batch(0, c["n_docs"]))


def _train_many(ctx: StepContext, pools: list[np.ndarray], seeds: list[int], outs: list[Path]) -> None:
    from ...attribute.retrain import train_lm_on_subsets

    c = ctx.cfg
    docs = np.load(ctx.inputs["docs"] / "docs.npy", allow_pickle=False)
    mode = {"stacked": "batched", "single": "sequential"}.get(c.stacking, "auto")
    train_lm_on_subsets(c.model, c.train, docs, pools, seeds, c.epochs, outs, mode=mode)


@step_kind("attr_lm_train", config=LMTrainStep)
def attr_lm_train_step(ctx: StepContext) -> None:
    """Train ``len(seeds)`` GPTs of one rung on every document (batched)."""
    n = len(np.load(ctx.inputs["docs"] / "docs.npy", mmap_mode="r", allow_pickle=False))
    seeds = ctx.config["seeds"]
    _train_many(ctx, [np.arange(n)] * len(seeds), seeds, [ctx.out / f"m{e}" for e in range(len(seeds))])


def _targets(ctx: StepContext) -> tuple[Any, Any]:
    import torch

    from ...data.testset import padded_batch, read_test_set

    tokens, mask, _, _ = padded_batch(list(read_test_set(ctx.inputs["targets"] / "test.parquet").examples))
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def _train_pairs(ctx: StepContext) -> tuple[Any, Any]:
    import torch

    # A document holds context + 1 tokens (a training window); the model reads at most `context`,
    # so its output is measured on the first `context` tokens: every next-token prediction in them.
    docs = np.load(ctx.inputs["docs"] / "docs.npy", allow_pickle=False)[:, :-1].astype(np.int64)
    return torch.from_numpy(docs), torch.ones(docs.shape[0], docs.shape[1] - 1)


@step_kind("attr_lm_trak", config=LMTrakStep)
def attr_lm_trak_step(ctx: StepContext) -> None:
    """TRAK scores (n_docs, n_targets) of one rung's GPT ensemble (mean per-token log-odds)."""
    from ...attribute.outputs import LMLogOdds
    from ...attribute.trak import TRAK
    from ...models.gpt import load_gpt

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


@step_kind("attr_lm_retrain", config=LMRetrainStep)
def attr_lm_retrain_step(ctx: StepContext) -> None:
    """Reference-rung GPTs on subsets [start, stop) × seeds: target outputs (chunk, seeds, T)."""
    from ...attribute.retrain import lm_target_outputs

    c: LMRetrainStep = ctx.cfg
    masks = np.load(ctx.inputs["subsets"] / "masks.npy", allow_pickle=False)[c.start:c.stop]
    jobs = [(c.start + i, r) for i in range(len(masks)) for r in range(c.n_seeds)]
    seeds = [derive_seed(c.seed, "subset", i, r) for i, r in jobs]
    outs = [ctx.out / "runs" / f"{i}-{r}" for i, r in jobs]
    _train_many(ctx, [np.flatnonzero(masks[i - c.start]) for i, _ in jobs], seeds, outs)
    tokens, mask = _targets(ctx)
    result = lm_target_outputs(outs, tokens, mask).reshape(len(masks), c.n_seeds, len(tokens))
    write_npy(ctx.out / "outputs.npy", result)
    shutil.rmtree(ctx.out / "runs", ignore_errors=True)  # the outputs are the result, not the weights

"""The LM-ladder fragment: train + eval of GPT rungs over training distributions × seeds.

Each rung's budget (params, tokens, optimiser steps, FLOPs) comes from the one table in
:mod:`proxyscale.models.ladder`; small rungs of one shape train together in one worker
(``batch_below_params``: vmap over stacked parameters).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from ...config import content_hash, suggest, to_dict
from ...errors import ConfigError
from ...models.ladder import Budget, GPTConfig, lm_budget
from ...run.plan import Plan, Step
from ...run.step import StepContext, step_kind
from ...seeding import derive_seed
from ...store import read_json, write_json, write_table
from ...train.optim import TrainConfig


@dataclass(frozen=True)
class RungSpec:
    """One model size of a GPT ladder."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int = 1
    context: Optional[int] = None  # training context of this rung (default: the study's)
    # data-parallel processes per model (GPUs on CUDA, gloo processes on CPU); SPEC §10. "auto":
    # chosen for the study's GPU (models/memory.choose_ranks); None: the ladder's `ranks`. The
    # planner resolves it to a whole number before any step is built.
    ranks: Union[int, Literal["auto"], None] = field(default=None, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        check_ranks(self.ranks, f"rung '{self.name}'")
        if self.d_model <= 0 or self.n_layers <= 0 or self.n_heads <= 0:
            raise ConfigError(f"rung '{self.name}': d_model, n_layers and n_heads must be positive")
        if self.d_model % self.n_heads:
            raise ConfigError(f"rung '{self.name}': d_model={self.d_model} is not divisible by "
                              f"n_heads={self.n_heads}; pick a head count that divides the width")

    def gpt(self, vocab_size: int, context: int, mup: bool = False) -> GPTConfig:
        """The model of this rung (``context``: the study's, unless the rung fixes its own)."""
        return GPTConfig(vocab_size=vocab_size, context=self.context or context, d_model=self.d_model,
                         n_layers=self.n_layers, n_heads=self.n_heads, mup=mup)


def check_ranks(ranks: Any, where: str) -> None:
    """``ranks`` is None, "auto" or a whole number ≥ 1 (a ConfigError naming ``where`` if not)."""
    if ranks is None or ranks == "auto":
        return
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ConfigError(f"{where}: ranks must be a whole number >= 1 or auto, got {ranks!r}")


def check_rungs(rungs: tuple[RungSpec, ...], reference: str, where: str = "ladder") -> None:
    """At least two distinct rungs, and the reference among them."""
    names = [r.name for r in rungs]
    if len(names) < 2:
        raise ConfigError(f"{where}.rungs: give at least two rungs (proxies and a reference)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.rungs: duplicate rung names in {names}")
    if reference not in names:
        raise ConfigError(f"{where}.reference: '{reference}' is not a rung{suggest(reference, names)}")
    ranked = [r.name for r in rungs if r.ranks not in (None, 1)]
    if ranked and where != "ladder":  # only the LM ladder's train steps start data-parallel jobs
        raise ConfigError(f"{where}: rung(s) {ranked} set ranks > 1, which only a scaling study's ladder "
                          "trains data-parallel; remove ranks here")


@dataclass(frozen=True)
class LadderSpec:
    """The ladder: proxies and one reference, trained on ``tokens_per_param`` × params tokens."""

    rungs: tuple[RungSpec, ...]
    reference: str
    tokens_per_param: float = 20.0
    proxy_seeds: tuple[int, ...] = (0,)
    reference_seeds: tuple[int, ...] = (0,)
    mup: bool = False
    ranks: Union[int, Literal["auto"]] = 1  # the default of rungs that give no `ranks`

    def __post_init__(self) -> None:
        check_rungs(self.rungs, self.reference)
        check_ranks(self.ranks, "ladder")
        if self.tokens_per_param <= 0:
            raise ConfigError("ladder.tokens_per_param must be positive (the paper uses about 20)")
        if not self.proxy_seeds or not self.reference_seeds:
            raise ConfigError("ladder: proxy_seeds and reference_seeds need at least one seed each")

    def rung(self, name: str) -> RungSpec:
        return next(r for r in self.rungs if r.name == name)

    def seeds(self, rung: RungSpec) -> tuple[int, ...]:
        return self.reference_seeds if rung.name == self.reference else self.proxy_seeds

    def budget(self, rung: RungSpec, vocab_size: int, context: int, batch_size: int) -> Budget:
        """Params, tokens, optimiser steps and FLOPs of one training run of ``rung``."""
        return lm_budget(rung.gpt(vocab_size, context), self.tokens_per_param, batch_size)


# -- step configs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainStep:
    distribution: str
    mixture: dict[str, float]
    rung: str
    model: GPTConfig
    train: TrainConfig
    n_steps: int
    seed: int
    replicate: int = 0
    # a model of a same-shape group: "stacked" or "auto" (measured in the worker); absent:
    # trained alone. A stacked model's bits may depend on its stack, so the plan fixes the stack
    # (its size, and this model's place in it) and both are part of the key.
    stacking: Literal["stacked", "auto", "single"] = "single"
    stack_size: int = 1
    stack_index: int = 0
    # data-parallel processes (RungSpec.ranks, resolved); in the key when > 1, but not in the
    # training run's hash, so the run's checkpoints resume under any number of ranks
    ranks: int = field(default=1, metadata={"omit_default": True})


@dataclass(frozen=True)
class EvalStep:
    batch_size: int = 64


# -- the fragment ------------------------------------------------------------------------------
def add_lm_ladder(plan: Plan, *, ladder: LadderSpec, distributions: Mapping[str, Mapping[str, float]],
                  train: TrainConfig, vocab_size: int, context: int, seed: int, tokenizer: str,
                  shard_inputs: Any, test_inputs: dict[str, str], batch_below_params: int, max_batch: int = 8,
                  windows: Optional[Mapping[str, tuple[str, str]]] = None,
                  setups: Optional[Mapping[str, tuple[int, TrainConfig]]] = None) -> dict[str, str]:
    """Add train + eval steps for every rung × distribution × seed. ``shard_inputs(mixture)``
    gives a mixture's shard roles; a distribution in ``windows`` (name → (pool step, selection
    step)) trains on the selected pool windows instead. A rung's models below
    ``batch_below_params`` are trained in stacks of at most ``max_batch`` that the plan fixes
    (:func:`.measured.plan_stacks`). ``setups``: rung → (ranks, train config with micro-batch)
    resolved for the GPU (:mod:`.gpu_plan`; default: one rank, ``train``). Returns
    ``{"eval:<dist>:<rung>:<seed>": key}``."""
    evals: dict[str, str] = {}
    for rung in ladder.rungs:
        b = ladder.budget(rung, vocab_size, context, train.batch_size)
        gpt = rung.gpt(vocab_size, context, ladder.mup)
        model, (ranks, base_train) = {**to_dict(gpt)}, (setups or {}).get(rung.name, (1, train))
        _check_split(rung.name, ranks, base_train)
        members = [(d, rep) for d in sorted(distributions) if not (windows and d in windows)
                   for rep in ladder.seeds(rung)]
        stackable = b.params < batch_below_params and ranks == 1 and not _splits(base_train)
        place, train_cfg, stacking = _stacks_and_choices(members, max_batch, stackable, gpt, base_train, b)
        selected = _window_models(plan, windows or {}, ladder, rung, gpt, base_train, b, seed,
                                  (max_batch, batch_below_params, ranks))
        for dname, mix in sorted(distributions.items()):
            for rep in ladder.seeds(rung):
                cfg = {"distribution": dname, "mixture": dict(mix), "rung": rung.name, "model": model,
                       "train": train_cfg, "n_steps": b.n_steps,
                       "seed": derive_seed(seed, "train", dname, rung.name, rep), "replicate": rep,
                       **({"ranks": ranks} if ranks != 1 else {})}
                bkey = None
                if stacking != "single" and (dname, rep) in place:
                    j, size, index = place[(dname, rep)]
                    bkey = f"train:{content_hash([model, train_cfg, b.n_steps])}:{j}"
                    cfg.update(stacking=stacking, stack_size=size, stack_index=index)
                if (dname, rep) in selected:
                    tkey = selected[(dname, rep)]
                else:
                    tkey = plan.add(Step("train", f"{dname}-{rung.name}-s{rep}", cfg,
                                         {"tokenizer": tokenizer, **shard_inputs(mix)}, bkey, b.flops,
                                         info={**b.as_dict(), "rung": rung.name, "distribution": dname},
                                         ranks=ranks, gpus=ranks if _on_cuda(base_train) else 0.0))
                ekey = plan.add(Step("eval", f"{dname}-{rung.name}-s{rep}", {"batch_size": 64},
                                     {"model": tkey, **test_inputs},
                                     cost=2 * b.params * 200 * max(1, len(test_inputs)) * context))
                evals[f"eval:{dname}:{rung.name}:{rep}"] = ekey
    return evals


def _stacks_and_choices(members: list, max_batch: int, stackable: bool, gpt: GPTConfig, train: TrainConfig,
                        b: Budget) -> tuple[dict, dict, str]:
    """(member -> stack place, train config dict with its measured choices, stacking) of a rung:
    the choices are resolved into the config, hence the key (see measured.py)."""
    from .measured import plan_stacks, train_choices

    place = plan_stacks(members, max_batch, b.flops) if stackable else {}
    rung_train, stacking = train_choices(gpt, train, b.n_steps, max((p[1] for p in place.values()), default=1),
                                         b.flops)
    return place, to_dict(rung_train), stacking


def _splits(train: TrainConfig) -> bool:
    """Whether the batch runs in several passes (micro-batches) or with activation checkpointing:
    the stacked path does neither."""
    return train.micro_batch_size not in (0, train.batch_size) or train.activation_checkpointing


def _on_cuda(train: TrainConfig) -> bool:
    """Whether a train step asks its backend for GPUs: only when its device says CUDA (a plan
    made on a login node without GPUs cannot tell what ``auto`` will find)."""
    return train.device.startswith("cuda")


def _check_split(rung: str, ranks: int, train: TrainConfig) -> None:
    """A rung's (resolved) ranks split the global batch evenly into whole micro-batches."""
    from ...train.split import check_split

    if ranks > 1:
        try:
            check_split(train.batch_size, ranks, train.micro_batch_size)
        except ConfigError as e:
            raise ConfigError(f"rung '{rung}' (ranks {ranks}): {e}") from None


def _window_models(plan: Plan, windows: Mapping[str, tuple[str, str]], ladder: LadderSpec, rung: RungSpec,
                   gpt: GPTConfig, train: TrainConfig, b: Budget, seed: int,
                   batching: tuple[int, int, int]) -> dict[tuple[str, int], str]:
    """The rung's models on selected pool windows (``windows``: distribution → (pool, selection)):
    one same-shape group with the rung's budget, in stacks the plan fixes (``batching``:
    max_batch, batch_below_params and the rung's resolved ranks). Returns
    ``(distribution, seed) -> train key``."""
    from .pool import WindowModel, add_window_models

    ids = [(d, rep) for d in sorted(windows) for rep in ladder.seeds(rung)]
    members = [WindowModel(f"{d}-{rung.name}-s{rep}", derive_seed(seed, "train", d, rung.name, rep), windows[d][0],
                           selection=windows[d][1]) for d, rep in ids]
    keys = add_window_models(plan, model=gpt, train=train, n_steps=b.n_steps, flops=b.flops, members=members,
                             max_batch=batching[0], batch_below_params=batching[1], ranks=batching[2])
    return dict(zip(ids, keys))


# -- step functions ----------------------------------------------------------------------------
def train_stream(ctx: StepContext, context: int, seed: int):
    """The training stream of a distribution: its sources' token shards mixed by weight."""
    from ...data.shards import TokenShard
    from ...data.stream import TrainStream
    from ...data.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    mix = ctx.config["mixture"]  # a train or an n-gram step
    comps = [(TokenShard.open(ctx.inputs[f"shard:{s}"]), float(w), None) for s, w in sorted(mix.items()) if w > 0]
    return TrainStream(comps, context=context, eos_id=tok.eos_id, seed=seed)


@step_kind("train", config=TrainStep, batch="train_batch")
def train_step(ctx: StepContext) -> None:
    """Train one model of the ladder on one distribution (resumes from its checkpoints)."""
    from ...train.loop import train_lm

    c: TrainStep = ctx.cfg
    stream = train_stream(ctx, c.model.context, c.seed)
    bs = c.train.batch_size
    stream.save_order(ctx.out / "data_order.npy", n_batches=c.n_steps, batch_size=bs)
    if c.ranks > 1:
        from ...run.ddp import launch_ranks

        launch_ranks(ctx, train_rank, c.ranks, c.train.device)
        return
    fn = ctx.tracked(lambda i: stream.batch(i, bs), c.n_steps, bs * c.model.context)
    if c.stacking == "stacked":  # a stack of one: trained by the stacked code, as its key says
        from ...train.batched import train_lm_batched

        train_lm_batched(c.model, c.train, [fn], c.n_steps, [ctx.out], [c.seed], mode="batched")
    else:
        train_lm(c.model, c.train, fn, c.n_steps, ctx.out, c.seed)


def train_rank(ctx: StepContext) -> None:
    """One data-parallel rank of a train step (run under torchrun by :func:`train_step`)."""
    from ...train.distributed import process_group
    from ...train.loop import train_lm

    c: TrainStep = ctx.cfg
    stream = train_stream(ctx, c.model.context, c.seed)
    bs = c.train.batch_size
    fn = ctx.tracked(lambda i: stream.batch(i, bs), c.n_steps, bs * c.model.context)
    with process_group(c.train.device) as ranks:
        train_lm(c.model, c.train, fn, c.n_steps, ctx.out, c.seed, ranks=ranks)


def train_batch(ctxs: list[StepContext]) -> None:
    """Train several same-shape small models at once (vmap over stacked parameters)."""
    from ...train.batched import train_lm_batched

    first: TrainStep = ctxs[0].cfg
    bs = first.train.batch_size
    fns = []
    for c in ctxs:
        stream = train_stream(c, first.model.context, c.cfg.seed)
        stream.save_order(c.out / "data_order.npy", n_batches=first.n_steps, batch_size=bs)
        fns.append(c.tracked(lambda i, s=stream: s.batch(i, bs), first.n_steps, bs * first.model.context))
    train_lm_batched(first.model, first.train, fns, first.n_steps, [c.out for c in ctxs], [c.cfg.seed for c in ctxs],
                     mode="batched" if first.stacking == "stacked" else "auto")


def test_set_paths(ctx: StepContext) -> dict[str, Path]:
    return {role.split(":", 1)[1]: path / "test.parquet"
            for role, path in ctx.inputs.items() if role.startswith("test:")}


@step_kind("eval", config=EvalStep)
def eval_step(ctx: StepContext) -> None:
    """Per-example losses of one trained model on every test set → one Parquet per test set."""
    from ...data.testset import read_test_set
    from ...evaluate.lm import evaluate_lm
    from ...models.gpt import load_gpt

    model = load_gpt(ctx.inputs["model"])
    t = read_json(ctx.inputs["model"] / "train.json")  # carried along so the analysis sees compute spent
    keys = ("flops", "tokens", "wall_s", "compute_wall_s", "params", "final_loss", "tokens_per_s", "train_mode",
            "group_size", "group_tokens_per_s", "precision_choice")
    write_json(ctx.out / "train_metrics.json", {k: t.get(k) for k in keys})
    for name, path in sorted(test_set_paths(ctx).items()):
        df = evaluate_lm(model, read_test_set(path), batch_size=ctx.config["batch_size"])
        write_table(ctx.out / f"{name}.parquet", df)



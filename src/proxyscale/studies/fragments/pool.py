"""The pool fragment: a fixed-size document pool cut from token shards, and GPTs trained on
subsets of it (random subsets for DsDm proxies, a selection for a reference).

A pool "document" is one packed window of ``context + 1`` tokens of the pool sources' training
shards (held-out documents never enter a shard), with id ``w<index>`` and its decoded text. A
window packs the end of one document and the start of the next; text-based selectors (DSIR, the
classifier) read it through :func:`window_texts`, its documents apart::

    tokenizer, shards ─► pool_windows ─► window_train (random subset × seed) ─► proxies
                                    └──► window_train (a selection's windows × seed) ─► reference
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np

from ...config import content_hash, to_dict
from ...errors import ConfigError, DataError
from ...models.ladder import GPTConfig
from ...run.plan import Plan, Step
from ...run.step import StepContext, step_kind
from ...seeding import epoch_order, np_rng
from ...store import write_json, write_npy, write_table
from ...train.optim import TrainConfig

WINDOWS = "windows.npy"  # (N, T+1) token ids
TEXTS = "texts.parquet"  # id, text (decoded windows)
CHOSEN = "chosen.npy"  # (n,) int64 window indices of a selection, best first
METHODS = ("random", "dsir", "classifier", "dsdm", "bot-dsdm")  # what select_windows can run
TEXT_METHODS = ("dsir", "classifier")  # those that featurise the windows' text


@dataclass(frozen=True)
class PoolSpec:
    """The pool: ``n_windows`` windows of ``context + 1`` tokens of these sources' training text."""

    sources: dict[str, float]
    n_windows: int = 20_000

    def __post_init__(self) -> None:
        if not self.sources or self.n_windows < 10:
            raise ConfigError("pool: name at least one source (with a weight) and n_windows ≥ 10")


@dataclass(frozen=True)
class DsDmSpec:
    """DsDm's proxies: ``models`` per proxy rung, each on its own random pool subset of the
    rung's Chinchilla size; TRAK with projection ``k`` and ridge ``lambda_ratio``."""

    models: int = 3
    k: int = 1024
    lambda_ratio: float = 1.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.models < 1 or self.k < 1 or self.batch_size < 1 or self.lambda_ratio < 0:
            raise ConfigError("dsdm: models ≥ 1, k ≥ 1, batch_size ≥ 1 and lambda_ratio ≥ 0 are needed")


@dataclass(frozen=True)
class PoolStep:
    mixture: dict[str, float]
    n_windows: int
    context: int
    seed: int

    def __post_init__(self) -> None:
        if self.n_windows < 1 or self.context < 2:
            raise ConfigError(f"pool: n_windows={self.n_windows} must be ≥ 1 and context={self.context} ≥ 2")


@dataclass(frozen=True)
class WindowTrainStep:
    """One GPT trained for ``n_steps`` on pool windows: a seeded random subset of
    ``subset_size`` windows, or (with a ``selection`` input) the selected windows, visited in
    seeded epochs."""

    model: GPTConfig
    train: TrainConfig
    n_steps: int
    seed: int
    subset_size: Optional[int] = None
    subset_seed: int = 0
    # as the LM ladder's TrainStep: a stacked model's bits may depend on its stack, so the plan
    # fixes the stack and both its size and this model's place are in the key
    stacking: Literal["stacked", "auto", "single"] = "single"
    stack_size: int = 1
    stack_index: int = 0
    ranks: int = field(default=1, metadata={"omit_default": True})  # data-parallel processes, as TrainStep's

    def __post_init__(self) -> None:
        if self.n_steps < 1 or (self.subset_size is not None and self.subset_size < 1):
            raise ConfigError("window_train: n_steps and subset_size must be ≥ 1")


def add_pool(plan: Plan, *, tokenizer: str, shard_inputs: Mapping[str, str], mixture: Mapping[str, float],
             n_windows: int, context: int, seed: int) -> str:
    """The pool step: the first ``n_windows`` packed windows of the mixture's training shards."""
    return plan.add(Step("pool_windows", f"n{n_windows}-T{context}",
                         {"mixture": dict(mixture), "n_windows": n_windows, "context": context, "seed": seed},
                         {"tokenizer": tokenizer, **shard_inputs}, cost=1e8))


@dataclass(frozen=True)
class WindowModel:
    """One model of a group of same-shape window models: its step name, training seed, pool
    step, and either a selection step or a random subset (``subset_size`` windows)."""

    name: str
    seed: int
    pool: str
    selection: Optional[str] = None
    subset_size: Optional[int] = None
    subset_seed: int = 0


def add_window_models(plan: Plan, *, model: GPTConfig, train: TrainConfig, n_steps: int, flops: float,
                      members: Sequence[WindowModel], max_batch: int = 8,
                      batch_below_params: int = 500_000, ranks: int = 1) -> list[str]:
    """One ``window_train`` step per member, all of one shape and budget (``flops``: one run's).

    As for the LM ladder's train steps, the bits may depend on everything the step does not
    choose itself, so the plan fixes it: precision and stacking are resolved into the config
    (:func:`.measured.train_choices`), and models below ``batch_below_params`` train in stacks
    of at most ``max_batch`` (:func:`.measured.plan_stacks`) whose size and place are in the
    config, one batch key per stack. ``ranks > 1`` trains each model alone as that many
    data-parallel processes. Returns the members' keys, in order."""
    from ...models.ladder import param_count
    from .measured import plan_stacks, train_choices

    if not members:
        return []
    names = [m.name for m in members]
    stackable = param_count(model) < batch_below_params and ranks == 1 and train.micro_batch_size in (
        0, train.batch_size) and not train.activation_checkpointing
    place = plan_stacks(names, max_batch, flops) if stackable else {}
    resolved, stacking = train_choices(model, train, n_steps, max((p[1] for p in place.values()), default=1),
                                       flops)
    base = {"model": to_dict(model), "train": to_dict(resolved), "n_steps": n_steps,
            **({"ranks": ranks} if ranks > 1 else {})}
    keys = []
    for m in members:
        cfg = {**base, "seed": m.seed, "subset_size": m.subset_size, "subset_seed": m.subset_seed}
        bkey = None
        if stacking != "single" and m.name in place:
            j, size, index = place[m.name]
            # one key per stack: two groups of one shape and budget never share a batch
            bkey = f"window_train:{content_hash([base, [n for n in names if place[n][0] == j]])}"
            cfg.update(stacking=stacking, stack_size=size, stack_index=index)
        inputs = {"pool": m.pool, **({"selection": m.selection} if m.selection else {})}
        keys.append(plan.add(Step("window_train", m.name, cfg, inputs, bkey, flops, ranks=ranks,
                                  gpus=ranks if train.device.startswith("cuda") and ranks > 1 else 0.0)))
    return keys


def add_dsdm_scores(plan: Plan, *, name: str, pool: str, model: GPTConfig, train: TrainConfig, n_steps: int,
                    windows: int, flops: float, trak: Mapping[str, Any], targets: Mapping[str, str], seed: int,
                    cost: float, batching: tuple[int, int] = (8, 500_000)) -> str:
    """DsDm at one proxy scale: ``trak["models"]`` GPTs, each on its own random pool subset of
    ``windows`` windows (the scale's Chinchilla size), then their TRAK weights toward every target
    (``targets``: target name → target-part step). ``batching``: the executor's ``(max_batch,
    batch_below_params)``, which fix the proxies' stacks. Returns the ``dsdm_scores`` step's key."""
    from ...seeding import derive_seed

    members = [WindowModel(f"proxy-{name}-m{m}", derive_seed(seed, "proxy", name, m), pool, subset_size=windows,
                           subset_seed=derive_seed(seed, "proxy-subset", name, m)) for m in range(int(trak["models"]))]
    keys = add_window_models(plan, model=model, train=train, n_steps=n_steps, flops=flops, members=members,
                             max_batch=batching[0], batch_below_params=batching[1])
    models = {f"model:{m}": k for m, k in enumerate(keys)}
    return plan.add(Step("dsdm_scores", name, {**trak, "seed": derive_seed(seed, "trak", name)},
                         {"pool": pool, **models, **{f"target:{t}": k for t, k in targets.items()}}, cost=cost))


def add_selection(plan: Plan, *, name: str, method: str, n: int, seed: int, pool: str,
                  target: Optional[tuple[str, str]] = None, tokenizer: Optional[str] = None,
                  weights: Optional[str] = None, settings: Optional[Mapping[str, Any]] = None) -> str:
    """A ``select_windows`` step: ``n`` pool windows by ``method`` toward ``target`` = (target
    name, target-part step) — DsDm reads ``weights`` (a dsdm_scores step), DSIR and the
    classifier the target's text (decoded with ``tokenizer``)."""
    inputs = {"pool": pool}
    if target is not None:
        inputs.update(target=target[1], tokenizer=tokenizer)
    if weights is not None:
        inputs["weights"] = weights
    cfg = {"method": method, "n": n, "target": None if target is None else target[0],
           "settings": dict(settings or {}), "seed": seed}
    if method in TEXT_METHODS and tokenizer is not None:  # only these read text: other keys stay as they were
        cfg["segments"] = True
    return plan.add(Step("select_windows", name, cfg, inputs, cost=1e9))


# -- step functions ----------------------------------------------------------------------------
@step_kind("pool_windows", config=PoolStep)
def pool_windows_step(ctx: StepContext) -> None:
    """Windows (N, T+1) of the mixture's training stream, and their decoded text."""
    import pandas as pd

    from ...data.shards import TokenShard
    from ...data.stream import TrainStream
    from ...data.tokenizer import load_tokenizer

    c: PoolStep = ctx.cfg
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    comps = [(TokenShard.open(ctx.inputs[f"shard:{s}"]), float(w), None) for s, w in sorted(c.mixture.items())
             if w > 0]
    stream = TrainStream(comps, context=c.context, eos_id=tok.eos_id, seed=c.seed)
    # Windows go to a memmap in blocks, so a pool larger than memory is cut in bounded memory.
    windows = np.lib.format.open_memmap(ctx.out / WINDOWS, mode="w+", dtype=np.int32,
                                        shape=(c.n_windows, c.context + 1))
    texts: list[str] = []
    for start in range(0, c.n_windows, 4096):
        block = np.stack([stream.window(w) for w in range(start, min(start + 4096, c.n_windows))])
        windows[start:start + len(block)] = block
        texts += [tok.decode(w[:-1].tolist()) for w in block]  # what the model reads: the first T tokens
    windows.flush()
    del windows
    write_table(ctx.out / TEXTS, pd.DataFrame({"id": [f"w{i}" for i in range(c.n_windows)], "text": texts}))
    write_json(ctx.out / "pool.json", {"n_windows": c.n_windows, "context": c.context,
                                       "tokens": c.n_windows * c.context})


def _items(ctx: StepContext, n_pool: int) -> np.ndarray:
    c: WindowTrainStep = ctx.cfg
    if "selection" in ctx.inputs:
        chosen = np.load(ctx.inputs["selection"] / CHOSEN, allow_pickle=False)
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_pool:
            raise DataError(f"{ctx.inputs['selection']}: the selection does not index this pool; re-run it")
        return np.sort(chosen)  # the order is the seeded permutation's job
    if c.subset_size is None or c.subset_size > n_pool:
        raise ConfigError(f"window_train: subset_size={c.subset_size} must be set and at most the pool's {n_pool}")
    return np.sort(np_rng(c.subset_seed, "window-subset").permutation(n_pool)[:c.subset_size])


def _batch_fn(ctx: StepContext, record: bool = True):
    """The step's batches; ``record`` writes their order (the launching process does, ranks not)."""
    c: WindowTrainStep = ctx.cfg
    windows = np.load(ctx.inputs["pool"] / WINDOWS, mmap_mode="r", allow_pickle=False)
    items = _items(ctx, len(windows))
    order = epoch_order(items, c.n_steps * c.train.batch_size, c.seed, "window-epoch")
    if record:
        write_npy(ctx.out / "data_order.npy", order.reshape(c.n_steps, c.train.batch_size))
    b, t = c.train.batch_size, c.model.context + 1  # a shorter-context model reads each window's first tokens
    return ctx.tracked(lambda i: np.asarray(windows[np.sort(order[i * b:(i + 1) * b]), :t]).astype(np.int64),
                       c.n_steps, b * c.model.context)


@step_kind("window_train", config=WindowTrainStep, batch="window_train_batch")
def window_train_step(ctx: StepContext) -> None:
    """Train one GPT on pool windows (resumes from its checkpoints)."""
    from ...train.loop import train_lm

    c: WindowTrainStep = ctx.cfg
    if c.ranks > 1:
        from ...run.ddp import launch_ranks

        _batch_fn(ctx)  # checks the inputs and records the order before the ranks start
        launch_ranks(ctx, window_train_rank, c.ranks, c.train.device)
        return
    if c.stacking == "stacked":  # a stack of one: trained by the stacked code, as its key says
        from ...train.batched import train_lm_batched

        train_lm_batched(c.model, c.train, [_batch_fn(ctx)], c.n_steps, [ctx.out], [c.seed], mode="batched")
    else:
        train_lm(c.model, c.train, _batch_fn(ctx), c.n_steps, ctx.out, c.seed)


def window_train_rank(ctx: StepContext) -> None:
    """One data-parallel rank of a window_train step (run under torchrun)."""
    from ...train.distributed import process_group
    from ...train.loop import train_lm

    c: WindowTrainStep = ctx.cfg
    fn = _batch_fn(ctx, record=False)
    with process_group(c.train.device) as ranks:
        train_lm(c.model, c.train, fn, c.n_steps, ctx.out, c.seed, ranks=ranks)


def window_train_batch(ctxs: list[StepContext]) -> None:
    """One stack the plan fixed: same-shape GPTs with one budget at once (vmap over stacked
    parameters)."""
    from ...train.batched import train_lm_batched

    first: WindowTrainStep = ctxs[0].cfg
    train_lm_batched(first.model, first.train, [_batch_fn(c) for c in ctxs], first.n_steps,
                     [c.out for c in ctxs], [c.cfg.seed for c in ctxs],
                     mode="batched" if first.stacking == "stacked" else "auto")


def pool_texts(pool_dir: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a pool step's windows."""
    from ...store import read_table

    t = read_table(pool_dir / TEXTS)
    return list(t["id"]), list(t["text"])


def window_texts(pool_dir: Path, tokenizer_dir: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a pool step's windows with their documents kept apart: each window's first
    T tokens split at end-of-text tokens, decoded piece by piece and joined by
    :data:`~proxyscale.select.base.DOC_BREAK` (which text selectors count no n-gram across)."""
    from ...data.tokenizer import load_tokenizer
    from ...select.base import DOC_BREAK

    tok = load_tokenizer(tokenizer_dir / "tokenizer.json")
    windows = np.load(pool_dir / WINDOWS, mmap_mode="r", allow_pickle=False)
    texts = []
    for start in range(0, len(windows), 4096):  # bounded memory, as the pool step cut them
        for w in np.asarray(windows[start:start + 4096]):
            cut = np.flatnonzero(w[:-1] == tok.eos_id)
            pieces = np.split(w[:-1], cut)  # each piece after the first starts with its end-of-text token
            texts.append(DOC_BREAK.join(tok.decode(p.tolist()) for p in pieces))
    return [f"w{i}" for i in range(len(texts))], texts


def selection_record(out: Path, chosen: np.ndarray, settings: dict[str, Any]) -> None:
    """A selection step's outputs: the chosen window indices (best first) and its settings."""
    write_npy(out / CHOSEN, np.asarray(chosen, dtype=np.int64))
    write_json(out / "selection.json", {"n": int(len(chosen)), **settings})

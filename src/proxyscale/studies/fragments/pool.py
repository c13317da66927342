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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

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

    def __post_init__(self) -> None:
        if self.n_steps < 1 or (self.subset_size is not None and self.subset_size < 1):
            raise ConfigError("window_train: n_steps and subset_size must be ≥ 1")


def add_pool(plan: Plan, *, tokenizer: str, shard_inputs: Mapping[str, str], mixture: Mapping[str, float],
             n_windows: int, context: int, seed: int) -> str:
    """The pool step: the first ``n_windows`` packed windows of the mixture's training shards."""
    return plan.add(Step("pool_windows", f"n{n_windows}-T{context}",
                         {"mixture": dict(mixture), "n_windows": n_windows, "context": context, "seed": seed},
                         {"tokenizer": tokenizer, **shard_inputs}, cost=1e8))


def add_window_model(plan: Plan, *, name: str, pool: str, model: GPTConfig, train: TrainConfig, n_steps: int,
                     seed: int, selection: Optional[str] = None, subset_size: Optional[int] = None,
                     subset_seed: int = 0, flops: float = 1.0) -> str:
    """One GPT on pool windows (a random subset, or ``selection``'s windows); same-shape models
    with the same budget train together in one worker."""
    cfg = {"model": to_dict(model), "train": to_dict(train), "n_steps": n_steps, "seed": seed,
           "subset_size": subset_size, "subset_seed": subset_seed}
    inputs = {"pool": pool, **({"selection": selection} if selection else {})}
    bkey = f"window_train:{content_hash([cfg['model'], cfg['train'], n_steps])}"
    return plan.add(Step("window_train", name, cfg, inputs, bkey, flops))


def add_dsdm_scores(plan: Plan, *, name: str, pool: str, model: GPTConfig, train: TrainConfig, n_steps: int,
                    windows: int, flops: float, trak: Mapping[str, Any], targets: Mapping[str, str], seed: int,
                    cost: float) -> str:
    """DsDm at one proxy scale: ``trak["models"]`` GPTs, each on its own random pool subset of
    ``windows`` windows (the scale's Chinchilla size), then their TRAK weights toward every target
    (``targets``: target name → target-part step). Returns the ``dsdm_scores`` step's key."""
    from ...seeding import derive_seed

    models = {f"model:{m}": add_window_model(
        plan, name=f"proxy-{name}-m{m}", pool=pool, model=model, train=train, n_steps=n_steps,
        seed=derive_seed(seed, "proxy", name, m), subset_size=windows,
        subset_seed=derive_seed(seed, "proxy-subset", name, m), flops=flops) for m in range(int(trak["models"]))}
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


def _batch_fn(ctx: StepContext):
    c: WindowTrainStep = ctx.cfg
    windows = np.load(ctx.inputs["pool"] / WINDOWS, mmap_mode="r", allow_pickle=False)
    items = _items(ctx, len(windows))
    order = epoch_order(items, c.n_steps * c.train.batch_size, c.seed, "window-epoch")
    write_npy(ctx.out / "data_order.npy", order.reshape(c.n_steps, c.train.batch_size))
    b = c.train.batch_size
    return ctx.tracked(lambda i: np.asarray(windows[np.sort(order[i * b:(i + 1) * b])]).astype(np.int64),
                       c.n_steps, b * c.model.context)


@step_kind("window_train", config=WindowTrainStep, batch="window_train_batch")
def window_train_step(ctx: StepContext) -> None:
    """Train one GPT on pool windows (resumes from its checkpoints)."""
    from ...train.loop import train_lm

    c: WindowTrainStep = ctx.cfg
    train_lm(c.model, c.train, _batch_fn(ctx), c.n_steps, ctx.out, c.seed)


def window_train_batch(ctxs: list[StepContext]) -> None:
    """Several same-shape GPTs with one budget at once (vmap over stacked parameters)."""
    from ...train.batched import train_lm_batched

    first: WindowTrainStep = ctxs[0].cfg
    train_lm_batched(first.model, first.train, [_batch_fn(c) for c in ctxs], first.n_steps,
                     [c.out for c in ctxs], [c.cfg.seed for c in ctxs])


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

"""The selection fragment's steps: target/holdout parts of a target set (the holdout
decontaminated against the pool and the target), DsDm weights per proxy scale, and selections
of pool windows by any method. Any study that selects data composes them (see
:func:`proxyscale.studies.fragments.pool.add_dsdm_scores` and ``add_selection``)."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from ...errors import ConfigError, DataError
from ...run.step import StepContext, step_kind
from ...store import write_json, write_npy
from .pool import WINDOWS, pool_texts, selection_record, window_texts


@dataclass(frozen=True)
class TargetPartStep:
    part: Literal["target", "holdout"]
    n_target: int
    n_holdout: int
    seed: int


@dataclass(frozen=True)
class DsDmStep:
    models: int
    k: int
    lambda_ratio: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class SelectStep:
    method: str
    n: int
    seed: int
    target: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)
    segments: bool = False  # text methods read each window's documents apart (split at end-of-text)

    def __post_init__(self) -> None:
        """The method's settings are checked when the plan is built, not when the step runs."""
        if self.method in ("dsdm", "bot-dsdm"):
            if self.settings:
                raise ConfigError(f"{self.method}: takes no settings here (got {sorted(self.settings)}); "
                                  "DsDm is set in the `dsdm:` section")
            return
        if "work_dir" in self.settings:
            raise ConfigError(f"{self.method} settings: work_dir would write outside the run store; drop it "
                              "(without it, streams beyond memory_mb are re-hashed instead of spilled)")
        from ...select import make_selector

        make_selector(self.method, **self.settings)


def _example_text(tok: Any, e: Any) -> str:
    return tok.decode(list(e.candidates[e.label]))


@step_kind("target_part", config=TargetPartStep)
def target_part_step(ctx: StepContext) -> None:
    """The target examples, or the holdout examples minus any whose text (13-gram hashes) occurs
    in the pool or in the target part (recorded in ``leakage.json``)."""
    from ...data.testset import TestSet, read_test_set, write_test_set
    from ...data.tokenizer import load_tokenizer
    from ...seeding import np_rng
    from ...select.leakage import overlaps

    c: TargetPartStep = ctx.cfg
    full = read_test_set(ctx.inputs["testset"] / "test.parquet")
    if len(full) < c.n_target + 2:
        raise DataError(f"target set '{full.name}' built {len(full)} examples; {c.n_target} target + at least 2 "
                        "holdout are needed: lower n_target/n_holdout or give the target more held-out text")
    order = np_rng(c.seed, "split").permutation(len(full))
    target = [full.examples[i] for i in sorted(order[:c.n_target])]
    if c.part == "target":
        write_test_set(TestSet(full.name, full.kind, tuple(target)), ctx.out / "test.parquet")
        write_json(ctx.out / "part.json", {"part": "target", "n": len(target)})
        return
    hold = [full.examples[i] for i in sorted(order[c.n_target:c.n_target + c.n_holdout])]
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    texts = [_example_text(tok, e) for e in hold]
    in_pool = overlaps(texts, pool_texts(ctx.inputs["pool"])[1])
    in_target = overlaps(texts, [_example_text(tok, e) for e in target])
    keep = [e for e, a, b in zip(hold, in_pool, in_target) if not (a or b)]
    if len(keep) < 2:
        raise DataError(f"holdout of '{full.name}': {len(hold) - len(keep)} of {len(hold)} examples share text with "
                        "the pool or the target; the target's text is in the pool — choose other sources")
    write_test_set(TestSet(full.name, full.kind, tuple(keep)), ctx.out / "test.parquet")
    write_json(ctx.out / "part.json", {"part": "holdout", "n": len(keep), "n_before": len(hold),
                                       "dropped_in_pool": int(sum(in_pool)), "dropped_in_target": int(sum(in_target)),
                                       "check": "13-gram hashes of normalised text (whole text below 13 words)"})


def _targets(path: Any) -> tuple[Any, Any]:
    """(tokens, prediction mask) of a target part's correct candidates."""
    import torch

    from ...data.testset import Example, padded_batch, read_test_set

    ex = [Example(e.example_id, (e.candidates[e.label],), (e.pred_start[e.label],))
          for e in read_test_set(path / "test.parquet").examples]
    tokens, mask, _, _ = padded_batch(ex)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


@step_kind("dsdm_scores", config=DsDmStep)
def dsdm_scores_step(ctx: StepContext) -> None:
    """Featurise the pool with one proxy rung's models, then DsDm weights (N,) toward each target."""
    from ...models.gpt import load_gpt
    from ...select.dsdm import DsDmConfig, DsDmScorer

    c: DsDmStep = ctx.cfg
    t0 = time.time()
    runs = [ctx.inputs[f"model:{m}"] for m in range(c.models)]
    windows = np.load(ctx.inputs["pool"] / WINDOWS, mmap_mode="r", allow_pickle=False)
    scorer = DsDmScorer(load_gpt(runs[0]), DsDmConfig(k=c.k, lambda_ratio=c.lambda_ratio, batch_size=c.batch_size,
                                                       seed=c.seed), work_dir=ctx.out / "work")
    scorer.featurize([load_gpt(r).state_dict() for r in runs], windows)  # a memmap, read batch by batch
    t_feat = time.time() - t0
    record = {"n_windows": int(len(windows)), "featurize_s": t_feat, "params": scorer.trak.p, "targets": {}}
    for role in sorted(r for r in ctx.inputs if r.startswith("target:")):
        name = role.split(":", 1)[1]
        w = scorer.weights(_targets(ctx.inputs[role]), name=name)
        write_npy(ctx.out / f"weights-{name}.npy", w)
        record["targets"][name] = {"mean": float(w.mean()), "std": float(w.std())}
    shutil.rmtree(ctx.out / "work", ignore_errors=True)  # features and score matrices: intermediates
    record["wall_s"] = time.time() - t0
    record["windows_per_s"] = len(windows) * c.models / max(t_feat, 1e-9)  # featurised, over all proxies
    write_json(ctx.out / "dsdm.json", record)


@step_kind("select_windows", config=SelectStep)
def select_windows_step(ctx: StepContext) -> None:
    """Choose ``n`` pool windows with one method (toward the target part, if any)."""
    from ...data.sources import Document
    from ...select import make_selector
    from ...select.dsdm import select_by_weights
    from ...select.io import score_table
    from ...store import write_table

    c: SelectStep = ctx.cfg
    ids, texts = (window_texts(ctx.inputs["pool"], ctx.inputs["tokenizer"]) if c.segments
                  else pool_texts(ctx.inputs["pool"]))
    if c.method in ("dsdm", "bot-dsdm"):
        w = np.load(ctx.inputs["weights"] / f"weights-{c.target}.npy", allow_pickle=False)
        sel = select_by_weights(ids, w, c.n, c.seed, bottom=c.method == "bot-dsdm")
    else:
        target = _target_texts(ctx) if "target" in ctx.inputs else []
        docs = [Document(i, t) for i, t in zip(ids, texts)]
        settings = dict(c.settings)
        if c.method == "dsir":  # hash on this step's share of the cores, not on every core again
            settings.setdefault("workers", ctx.threads)
        sel = make_selector(c.method, **settings).select(lambda: iter(docs), target, c.n, c.seed)
    write_table(ctx.out / "scores.parquet", score_table(sel))
    selection_record(ctx.out, sel.chosen, {"method": c.method, "target": c.target, "settings": sel.settings})


def _target_texts(ctx: StepContext) -> list[str]:
    """The target part's examples as text (what DSIR and the classifier compare the pool to)."""
    from ...data.testset import read_test_set
    from ...data.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    return [_example_text(tok, e) for e in read_test_set(ctx.inputs["target"] / "test.parquet").examples]

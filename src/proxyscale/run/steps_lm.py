"""Step functions of the small-to-large study: train, eval, ngram, analyze.

Each takes a :class:`~proxyscale.run.worker.StepContext` and writes only inside ``ctx.out``.
Heavy imports happen inside the functions so the runner imports without torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store import read_json, read_table, write_json, write_table
from .worker import StepContext


def _train_stream(ctx: StepContext, context: int, seed: int):
    """The training stream of a distribution: its sources' token shards mixed by weight."""
    from ..data.shards import TokenShard
    from ..data.stream import TrainStream
    from ..data.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    mix = ctx.config["mixture"]
    comps = [(TokenShard.open(ctx.inputs[f"shard:{s}"]), float(w), None) for s, w in sorted(mix.items()) if w > 0]
    return TrainStream(comps, context=context, eos_id=tok.eos_id, seed=seed)


def _configs(cfg: dict[str, Any]):
    from ..config import from_dict
    from ..models.gpt import GPTConfig
    from ..train.optim import TrainConfig

    return from_dict(GPTConfig, cfg["model"], "model"), from_dict(TrainConfig, cfg["train"], "train")


def train_step(ctx: StepContext) -> None:
    """Train one model of the ladder on one distribution (resumes from its checkpoints)."""
    from ..train.loop import train_lm

    model_cfg, train_cfg = _configs(ctx.config)
    stream = _train_stream(ctx, model_cfg.context, ctx.config["seed"])
    bs = train_cfg.batch_size
    stream.save_order(ctx.out / "data_order.npy", n_batches=ctx.config["n_steps"], batch_size=bs)
    train_lm(model_cfg, train_cfg, lambda i: stream.batch(i, bs), ctx.config["n_steps"], ctx.out, ctx.config["seed"])


def train_batch(ctxs: list[StepContext]) -> None:
    """Train several same-shape small models at once (vmap over stacked parameters)."""
    from ..train.batched import train_lm_batched

    model_cfg, train_cfg = _configs(ctxs[0].config)
    bs = train_cfg.batch_size
    fns = []
    for c in ctxs:
        stream = _train_stream(c, model_cfg.context, c.config["seed"])
        stream.save_order(c.out / "data_order.npy", n_batches=c.config["n_steps"], batch_size=bs)
        fns.append(lambda i, s=stream: s.batch(i, bs))
    train_lm_batched(model_cfg, train_cfg, fns, ctxs[0].config["n_steps"], [c.out for c in ctxs],
                     [c.config["seed"] for c in ctxs])


def _test_sets(ctx: StepContext) -> dict[str, Path]:
    return {role.split(":", 1)[1]: path / "test.parquet" for role, path in ctx.inputs.items() if role.startswith("test:")}


def eval_step(ctx: StepContext) -> None:
    """Per-example losses of one trained model on every test set → one Parquet per test set."""
    from ..data.testset import read_test_set
    from ..evaluate.lm import evaluate_lm
    from ..models.gpt import load_gpt

    model = load_gpt(ctx.inputs["model"])
    t = read_json(ctx.inputs["model"] / "train.json")  # carried along so the analysis sees compute spent
    write_json(ctx.out / "train_metrics.json", {k: t.get(k) for k in ("flops", "tokens", "wall_s", "params",
                                                                      "final_loss", "tokens_per_s")})
    for name, path in sorted(_test_sets(ctx).items()):
        df = evaluate_lm(model, read_test_set(path), batch_size=ctx.config["batch_size"])
        write_table(ctx.out / f"{name}.parquet", df)


def ngram_step(ctx: StepContext) -> None:
    """A zero-compute proxy: an n-gram count model of the distribution, scored on every test set."""
    import numpy as np

    from ..analyze.ngram import fit_ngram, score_test_set
    from ..data.testset import read_test_set

    cfg = ctx.config
    stream = _train_stream(ctx, cfg["context"], cfg["seed"])
    n_batches = max(1, cfg["tokens"] // (64 * cfg["context"]))
    docs = [row for i in range(n_batches) for row in np.asarray(stream.batch(i, 64))]  # one doc per window
    model = fit_ngram(docs, cfg["order"], cfg["vocab_size"])
    for name, path in sorted(_test_sets(ctx).items()):
        write_table(ctx.out / f"{name}.parquet", score_test_set(model, read_test_set(path)))


def _gather_results(ctx: StepContext):
    import pandas as pd

    from .study import NGRAM_NAMES

    frames = []
    for role, path in sorted(ctx.inputs.items()):
        parts = role.split(":")
        if parts[0] == "eval":
            dist, model, seed = parts[1], parts[2], int(parts[3])
        else:
            dist, model, seed = parts[1], NGRAM_NAMES.get(int(parts[2]), f"{parts[2]}gram"), 0
        for f in sorted(path.glob("*.parquet")):
            df = read_table(f)
            frames.append(pd.DataFrame({"test_set": f.stem, "example_id": df["example_id"], "distribution": dist,
                                        "model": model, "seed": seed, "loss": df["loss"],
                                        "n_tokens": df["n_pred_tokens"], "correct": df["correct"]}))
    return pd.concat(frames, ignore_index=True)


def analyze_step(ctx: StepContext) -> None:
    """All small-to-large tables of the study (pure analysis over the per-example results)."""
    import pandas as pd

    from ..analyze.correlate import analyze_study
    from ..analyze.io import write_analysis

    cfg = ctx.config
    results = _gather_results(ctx)
    write_table(ctx.out / "results.parquet", results)
    models = pd.DataFrame(cfg["models"])
    dists = pd.DataFrame([{"distribution": d, "sources": s} for d, s in sorted(cfg["distributions"].items())])
    tests = pd.DataFrame([{"test_set": t, **v} for t, v in sorted(cfg["test_sets"].items())])
    a = cfg["analysis"]
    analysis = analyze_study(results, models, dists, tests, seed=cfg["seed"], r2_threshold=a["r2_threshold"],
                             decision_threshold=a["decision_threshold"], n_boot=a["n_boot"])
    write_analysis(analysis, ctx.out)
    write_json(ctx.out / "compute.json", _compute_spent(ctx))


def _compute_spent(ctx: StepContext) -> dict[str, Any]:
    """Training FLOPs and wall time actually spent per model, as each eval step recorded it."""
    return {role[5:]: read_json(path / "train_metrics.json") for role, path in sorted(ctx.inputs.items())
            if role.startswith("eval:") and (path / "train_metrics.json").is_file()}

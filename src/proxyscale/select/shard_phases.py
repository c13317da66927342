"""The per-shard phases of :mod:`proxyscale.select.shards` (run in tasks) and each method's merge
(run by the driver). A phase reads one shard's documents and returns named arrays."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..data.sources import Document, SourceSpec, iter_file
from ..errors import ConfigError
from . import dsdm_shards
from .base import Selection, top_n
from .progress import phase
from .shards import (
    METHODS,
    Mapper,
    WorkDir,
    digest,
    file_sha256,
    inline_map,
    load,
    save_arg,
    save_atomic,
    shard_ids,
    shards_of,
)


def _dsir_fit(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """Pass 1: the shard's bucket stream, tokens per document and bucket totals."""
    from .dsir import NgramHasher, _batches, featurise, stream_counts

    s = job["settings"]
    hasher, ids, lens, streams = NgramHasher(s["num_buckets"]), [], [], []
    for bids, texts in _batches(((d.id, d.text) for d in docs), s["batch_chars"]):
        f = featurise(texts, hasher, s["ngrams"])
        ids += bids
        lens.append(f.n_tokens)
        streams.append(f.stream)
    dtype = np.uint16 if s["num_buckets"] < 1 << 16 else np.uint32
    stream = np.concatenate(streams, axis=1) if streams else np.zeros((s["ngrams"], 0), dtype=dtype)
    return {"ids": np.array(ids, dtype=str), "n_tokens": np.concatenate(lens) if lens else np.zeros(0, np.int64),
            "stream": stream, "counts": stream_counts(stream, s["num_buckets"])}


def _dsir_score(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """Pass 2: log weights of the shard's documents under the merged log ratios."""
    from .dsir import stream_weights

    stream, n_tokens = load(job["input"], "stream", "n_tokens")
    (ld,) = load(job["settings"]["ld"], "ld")
    return {"lw": stream_weights(stream, n_tokens, ld)}


def _raw_counts(selector: Any, fits: Sequence[str]) -> tuple[np.ndarray, int]:
    """p_r's bucket totals over the pool in shard order, up to the raw cap (as ``_fit_raw``)."""
    from .dsir import n_features, stream_counts

    cap, total, seen, n_fit = selector.cap(), np.zeros(selector.num_buckets, dtype=np.int64), 0, 0
    for path in fits:
        (n_tokens,) = load(path, "n_tokens")
        if cap is not None and seen > cap:
            break
        nf = n_features(n_tokens, selector.ngrams)
        before = seen + np.cumsum(nf) - nf
        keep = len(nf) if cap is None else int(np.count_nonzero(before <= cap))
        if keep == len(nf):
            total += load(path, "counts")[0]
        else:  # the cap falls inside this shard: count the prefix from its stream
            total += stream_counts(load(path, "stream")[0], selector.num_buckets, int(n_tokens[:keep].sum()))
        seen += int(nf[:keep].sum())
        n_fit += keep
    return total, n_fit


def _dsir(selector: Any, shards: Sequence[tuple[Path, str]], source: dict[str, Any], target: list[str], n: int,
          seed: int, work: WorkDir, mapper: Mapper) -> Selection:
    from .dsir import DSIRWeights, distribution, example_length, hashed_counts, log_diff

    settings = {k: getattr(selector, k) for k in ("num_buckets", "ngrams", "batch_chars")}
    fits = run_phase("dsir-fit", shards, settings, source, work, mapper)
    ids = shard_ids(fits)
    raw, n_fit = _raw_counts(selector, fits)
    p_t = distribution(hashed_counts(target, selector.num_buckets, selector.ngrams).sum(axis=0), "target")
    ld = log_diff(p_t, distribution(raw, "pool"))
    scored = run_phase("dsir-score", shards, {**settings, "ld": save_arg(work, {"ld": ld})}, source, work, mapper, fits)
    lw = np.concatenate([load(p, "lw")[0] for p in scored])
    n_tokens = np.concatenate([load(p, "n_tokens")[0] for p in fits])
    long_enough = example_length(n_tokens, selector.ngrams) >= selector.min_example_length
    w = DSIRWeights(ids, lw, np.where(long_enough, lw, -np.inf), n_tokens, ld, n_fit)
    return selector.choose(w, n, seed)


def _clf_sample(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """The shard's ids, and the texts of its best negatives under the seeded key (the global
    sample's members from this shard are among them)."""
    from .classifier import ClassifierSelector

    s = job["settings"]
    ids, texts = [], []
    for d in docs:
        ids.append(d.id)
        texts.append(d.text)
    keys = ClassifierSelector(max_negatives=s["max_negatives"]).negative_keys(ids, s["seed"])
    rows = np.sort(top_n(keys, min(s["max_negatives"], len(ids)), ids, s["seed"])) if ids else np.zeros(0, np.int64)
    return {"ids": np.array(ids, dtype=str), "rows": rows,
            "texts": np.array([texts[r] for r in rows.tolist()], dtype=str)}


def _clf_score(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    from .classifier import ClassifierSelector, fitted_model

    vec = ClassifierSelector(n_features=job["settings"]["n_features"])._vectorizer()
    model = fitted_model(*load(job["settings"]["model"], "coef", "intercept", "classes"))
    probs = [np.zeros(0)]
    while batch := list(islice(docs, job["settings"]["batch_size"])):
        probs.append(model.predict_proba(vec.transform([d.text for d in batch]))[:, 1])
    return {"p": np.concatenate(probs)}


def _classifier(selector: Any, shards: Sequence[tuple[Path, str]], source: dict[str, Any], target: list[str], n: int,
                seed: int, work: WorkDir, mapper: Mapper) -> Selection:
    settings = {"max_negatives": selector.max_negatives, "seed": seed}
    samples = run_phase("clf-sample", shards, settings, source, work, mapper)
    ids = shard_ids(samples)
    keep = set(top_n(selector.negative_keys(ids, seed), min(selector.max_negatives, len(ids)), ids, seed).tolist())
    negatives, start = [], 0
    for path in samples:
        k, rows, texts = load(path, "ids", "rows", "texts")
        negatives += [t for r, t in zip(rows.tolist(), texts.tolist()) if start + r in keep]
        start += len(k)
    _vec, fit = selector.fit_texts(target, negatives, seed)
    model = save_arg(work, {"coef": fit.coef_, "intercept": fit.intercept_, "classes": fit.classes_}, "arg-model")
    scored = run_phase("clf-score", shards, {"model": model, "batch_size": selector.batch_size,
                                             "n_features": selector.n_features}, source, work, mapper)
    return selector.choose(ids, np.concatenate([load(p, "p")[0] for p in scored]), n, seed)


def _ids(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"ids": np.array([d.id for d in docs], dtype=str)}


def _random(selector: Any, shards: Sequence[tuple[Path, str]], source: dict[str, Any], target: list[str], n: int,
            seed: int, work: WorkDir, mapper: Mapper) -> Selection:
    from .base import check_n
    from .rand import random_pick, random_scores

    ids = shard_ids(run_phase("ids", shards, {}, source, work, mapper))
    check_n(n, len(ids), selector.name)
    return Selection(selector.name, ids, random_scores(ids, seed), random_pick(ids, n, seed), {})


def _dsdm(*args: Any) -> Selection:
    return dsdm_shards.sharded_dsdm(*args, run_phase=run_phase)


PHASES: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "dsir-fit": _dsir_fit, "dsir-score": _dsir_score, "clf-sample": _clf_sample, "clf-score": _clf_score, "ids": _ids,
    **dsdm_shards.PHASES}
MERGERS = {"dsir": _dsir, "classifier": _classifier, "random": _random, "dsdm": _dsdm, "bot-dsdm": _dsdm}


def shard_task(job_json: str) -> str:
    """One shard's phase (a module-level function: Ray and process pools import it by name).
    Skips the work when its result file exists; returns the result file's path."""
    job = json.loads(job_json)
    path = Path(job["path"])
    key = digest([file_sha256(path), job["prefix"], job["phase"], job["settings"], job["source"]])
    out = Path(job["work"]) / f"res-{job['phase']}-{key[:40]}.npz"
    if out.is_file():
        return str(out)
    job["result"] = str(out)  # phases that write more than their arrays put it beside this
    spec = SourceSpec("local", path=str(path), **job["source"])
    docs = iter_file(path, job["prefix"], spec)
    arrays = PHASES[job["phase"]](docs, job)
    save_atomic(out, lambda f: np.savez(f, **arrays))
    return str(out)


GPU_PHASES = frozenset({"dsdm-features"})  # phases whose tasks featurise with torch on a GPU if they get one


def run_phase(name: str, shards: Sequence[tuple[Path, str]], settings: dict[str, Any], source: dict[str, Any],
              work: WorkDir, mapper: Mapper, inputs: Optional[Sequence[str]] = None,
              label: Optional[str] = None) -> list[str]:
    """Run phase ``name`` over every shard (skipping finished ones); result paths in shard order.
    ``settings`` key the results; ``inputs``: each shard's earlier result (named by its own key);
    ``label``: the progress bar's name (default: featurising or scoring, by the phase's name)."""
    jobs = [json.dumps({"path": str(p), "prefix": pre, "phase": name, "settings": settings, "source": source,
                        "work": str(work.path), "input": inputs[k] if inputs else None})
            for k, (p, pre) in enumerate(shards)]
    out = []
    label = label or ("featurising" if name.endswith(("fit", "sample")) else "scoring")
    with phase(label, total=len(jobs), unit="shard") as bar:
        for res in mapper(shard_task, jobs, gpu=name in GPU_PHASES):
            out.append(res)
            bar.update(1)
    return out


def sharded_select(selector: Any, spec: SourceSpec, target: list[str], n: int, seed: int, out: str,
                   mapper: Optional[Mapper] = None) -> tuple[Selection, WorkDir]:
    """``selector``'s selection of the sharded pool ``spec`` (the same as ``selector.select``)."""
    if selector.name not in METHODS:
        raise ConfigError(f"--workers/--backend run {', '.join(METHODS)} per shard; run {selector.name} without them")
    shards = shards_of(spec)
    source = {"text_field": spec.text_field, "id_field": spec.id_field, "txt_unit": spec.txt_unit}
    work = WorkDir(out)
    sel = MERGERS[selector.name](selector, shards, source, target, n, seed, work, mapper or inline_map)
    return sel, work

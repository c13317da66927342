"""``proxyscale select`` from start to finish: check every input before any work, read the pool
once (count, hash, lengths), run the method, warn about what its numbers hide, and write the
selection with a complete manifest (:mod:`proxyscale.select.io`).

Phases, each with a progress bar (``progress``) and its wall time in the manifest: reading,
then the method's own (featurising, proxy training, TRAK featurisation, scoring), then writing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..data.sources import SourceSpec, local_files, named_by_flags
from .base import Pool, parse_n, resolve_n
from .io import check_format, hash_texts, update_hash, write_selection
from .progress import Tracker, phase, tracking

# The CLI's flag for each source setting, so that errors say what to type.
FLAGS = {"text_field": "--text-field", "id_field": "--id-field", "name": "--hub-name", "split": "--split",
         "revision": "--revision", "max_docs": "--max-docs"}


@dataclass(frozen=True)
class Hub:
    """Where on the Hugging Face hub ``--pool``/``--target`` are (``--hub``)."""

    name: Optional[str] = None  # the dataset's config, e.g. "en" for allenai/c4
    split: str = "train"
    revision: Optional[str] = None  # a branch, tag or commit
    streaming: bool = True


@dataclass(frozen=True)
class Request:
    """One ``select``: what :func:`run` needs (see :func:`proxyscale.api.select` for each field)."""

    method: str
    pool: str
    target: str
    n: Any
    out: str
    seed: int = 0
    hub: Optional[Hub] = None
    text_field: str = "text"
    id_field: Optional[str] = None
    target_text_field: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    write: Optional[str] = None
    max_docs: Optional[int] = None  # read at most this many documents of the pool
    progress: Optional[bool] = None  # None: when stderr is a terminal
    mapper: Optional[Any] = None  # set: the pool's files are shards, run per shard by it (select/shards.py)


def run(req: Request) -> Path:
    """Do the selection ``req`` describes; returns the output directory."""
    from ..data.checks import check_source
    from ..store.output import check_output
    from . import make_selector
    from .pool import open_pool, read_texts

    t0 = time.perf_counter()
    wanted = parse_n(req.n, "--n")
    check_format(req.write)
    selector = make_selector(req.method, "--set", **req.settings)
    inputs = [(flag, p) for flag, p in (("--pool", req.pool), ("--target", req.target))
              if req.hub is None or Path(p).exists()]
    check_output(req.out, inputs=inputs, overwrite=req.overwrite)  # refuse before reading a large pool
    psrc, tsrc = _sources(req)
    with named_by_flags(FLAGS), tracking(req.progress) as tracker:
        if req.hub is not None and not tracker.show:
            _quiet_datasets()
        if req.hub is None:
            check_source(psrc, where="--pool")
            check_source(tsrc, where="--target")
        revision = req.hub.revision if req.hub else None
        docs = open_pool(psrc, revision)
        ids, lengths, pool_sha = _read(docs, psrc, tracker)
        with phase("reading", total=None) as bar:
            texts = read_texts(tsrc, revision)
            bar.update(len(texts))
        n = resolve_n(wanted, len(ids))
        tracker.pool_size = len(ids)
        if req.mapper is not None:
            _check_empty(req, selector.name, ids, lengths, texts)
        sel, work = _select(req, selector, docs, psrc, texts, n)
        if tuple(ids) != sel.ids:
            _changed(req, work)
        from .checks import check_length_bias

        check_length_bias(req.method, sel.scores, lengths)
        record = _record(req, selector, sel, wanted, n, pool_sha, texts, tracker)
        tracker.seconds["before writing"] = round(time.perf_counter() - t0, 3)
        path = write_selection(sel, req.out, record, inputs=inputs, overwrite=req.overwrite,
                               documents=(req.write, docs) if req.write else None)
        if work is not None:
            work.remove()  # the selection is written: the per-shard results have served
        return path


def _select(req: Request, selector: Any, docs: Pool, psrc: SourceSpec, texts: list[str], n: int) -> tuple[Any, Any]:
    """The method's selection: in this process, or per shard through ``req.mapper`` (and the
    work directory that holds the per-shard results until the selection is written)."""
    if req.mapper is None:
        return selector.select(docs, texts, n, req.seed), None
    from ..errors import ConfigError
    from .shard_phases import sharded_select

    if req.hub is not None or req.max_docs is not None:
        raise ConfigError("--workers/--backend read local shards whole; leave out --hub and --max-docs, or run "
                          "without --workers/--backend")
    return sharded_select(selector, psrc, texts, n, req.seed, req.out, req.mapper)


def _check_empty(req: Request, method: str, ids: list[str], lengths: np.ndarray, texts: list[str]) -> None:
    """DsDm needs a token in every document and target: on a sharded pool, refuse empty ones
    before any per-shard work starts (one process finds them when it encodes)."""
    if method not in ("dsdm", "bot-dsdm"):
        return
    from ..errors import DataError

    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise DataError(f"{req.pool}: {len(empty)} documents are empty (the first: '{ids[int(empty[0])]}'); drop "
                        f"empty documents from the pool; {method} scores a document by its tokens")
    blank = sum(not t for t in texts)
    if blank:
        raise DataError(f"{req.target}: {blank} target examples are empty; drop them; {method} scores toward their "
                        "tokens")


def _changed(req: Request, work: Any) -> None:
    """The method's documents are not those the reading pass saw: a shard changed under a sharded
    run (a user error), else a method that reorders (a bug)."""
    if work is None:
        raise RuntimeError(f"{req.method} returned its documents out of pool order")  # a bug, not a user error
    from ..errors import DataError

    raise DataError(f"{req.pool}: the pool's shards changed while they were being selected from (their documents "
                    "differ from the first reading); leave them unchanged until the selection is written, then "
                    "run the same command again")


def _quiet_datasets() -> None:
    """No progress bars from ``datasets`` either when ours are off."""
    try:
        import datasets
    except ImportError:
        return  # reading will say how to install it
    datasets.disable_progress_bars()


def _sources(req: Request) -> tuple[SourceSpec, SourceSpec]:
    from .pool import source_of

    hub = req.hub or Hub()
    common = dict(hub=req.hub is not None, split=hub.split, name=hub.name, streaming=hub.streaming)
    psrc = source_of(str(req.pool), text_field=req.text_field, id_field=req.id_field, max_docs=req.max_docs,
                     **common)
    tsrc = source_of(str(req.target), text_field=req.target_text_field or req.text_field, **common)
    return psrc, tsrc


def _read(docs: Pool, spec: SourceSpec, tracker: Tracker) -> tuple[list[str], np.ndarray, str]:
    """One pass over the pool: ids, lengths in characters, and the sha256 of ids and texts."""
    total = sum(p.stat().st_size for p, _ in local_files(spec)) if spec.kind == "local" else spec.max_docs
    unit = "B" if spec.kind == "local" else "doc"
    h = hashlib.sha256()
    ids: list[str] = []
    lengths: list[int] = []
    with tracker.phase("reading", total=total, unit=unit) as bar:
        for d in docs():
            update_hash(h, d)
            ids.append(d.id)
            lengths.append(len(d.text))
            bar.update(len(d.text.encode("utf-8")) + len(d.id) + 16 if unit == "B" else 1)
        if total is not None:
            bar.n = total  # the files' bytes include their markup: the pass is done
            bar.refresh()
    return ids, np.asarray(lengths, dtype=np.int64), h.hexdigest()


def _record(req: Request, selector: Any, sel: Any, wanted: Any, n: int, pool_sha: str, texts: list[str],
            tracker: Tracker) -> dict[str, Any]:
    """The manifest's content: every setting (defaults included), the inputs and their hashes,
    versions, phase times, warnings and diagnostics."""
    settings = {f.name: getattr(selector, f.name) for f in dataclasses.fields(selector) if f.name != "name"}
    hub = dataclasses.asdict(req.hub) if req.hub else None
    return {
        "n": n, "n_requested": wanted, "seed": req.seed, "settings": settings, "resolved_settings": sel.settings,
        "pool": {"path": str(req.pool), "n": len(sel.ids), "sha256": pool_sha, "text_field": req.text_field,
                 "id_field": req.id_field, "max_docs": req.max_docs},
        "target": {"path": str(req.target), "n": len(texts), "sha256": hash_texts(texts),
                   "text_field": req.target_text_field or req.text_field},
        "hub": hub, "write": req.write, "versions": versions(hub is not None),
        "seconds": tracker.seconds,  # the same dict: "writing" is added as it ends
        "warnings": list(tracker.warnings), "diagnostics": dict(tracker.notes),
        "command": ["proxyscale", *sys.argv[1:]] if Path(sys.argv[0]).name in ("proxyscale", "cli.py") else None,
    }


def versions(hub: bool = False) -> dict[str, Optional[str]]:
    """Versions of Python and of the packages a selection's numbers depend on (None: not installed)."""
    from importlib import metadata

    from .. import __version__

    out: dict[str, Optional[str]] = {"proxyscale": __version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "pandas", "pyarrow", "scikit-learn", "tokenizers", *(("datasets",) if hub else ())):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out

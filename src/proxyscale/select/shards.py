"""Selection over a sharded pool: each file of the pool is a shard, featurised and scored by its
own task (inline, on a local process pool, or as a Ray task), and the per-shard results merge
into exactly the selection a single process makes (byte-identical ``chosen.txt``).

- **dsir**: pass 1 per shard keeps its bucket stream and integer bucket totals; the driver adds
  the totals in pool order (the raw cap cuts inside one shard: that shard's prefix is counted
  from its stream), then pass 2 scores each shard with the merged ``log_diff``.
- **classifier**: each shard sends its ids and the texts of its best negatives under the seeded
  key; the global sample (the same for any sharding) trains the model once; shards score.
- **random**: scores are seeded hashes of global ids.
- **dsdm**, **bot-dsdm**: the driver trains the BPE and the proxies once; shards encode, featurise
  and score (:mod:`proxyscale.select.dsdm_shards`).

Memory follows the shard: a task holds one shard; the driver holds ids and one float per document.

**Resume.** Results go to a work directory beside the output, ``<out>.work/``, marked by
``.proxyscale-work.json``; each result file is named by the sha256 of its shard's bytes, the
shard's id prefix, the phase and the settings it depends on, and written atomically (temporary
name, then rename). A re-run after a kill skips finished shards. The directory is removed once
the selection is written; proxyscale refuses to use a ``<out>.work`` it did not make.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data.compressed import data_format
from ..data.sources import SourceSpec, local_files
from ..errors import ConfigError, DataError

MARKER = ".proxyscale-work.json"
METHODS = ("dsir", "classifier", "random", "dsdm", "bot-dsdm")
# (task, jobs, gpu=...) -> results in job order; ``gpu``: the tasks can use a GPU (a mapper that
# schedules devices, Ray's, gives each one; the others run them where they run everything)
Mapper = Callable[..., Iterator[str]]


def inline_map(fn: Callable[[str], str], jobs: list[str], gpu: bool = False) -> Iterator[str]:
    """Run the tasks one after another in this process."""
    return map(fn, jobs)


def process_map(workers: int) -> Mapper:
    """Run the tasks on a local pool of ``workers`` processes, results in job order. One pool
    serves every phase (started on the first call: spawned processes import proxyscale once);
    it stops when the process ends, or at once when a task fails."""
    held: list[Any] = []

    def run(fn: Callable[[str], str], jobs: list[str], gpu: bool = False) -> Iterator[str]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if not held:
            held.append(ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")))
        try:
            yield from held[0].map(fn, jobs)
        except BaseException:
            held.pop().shutdown(wait=False, cancel_futures=True)
            raise
    return run


def shards_of(spec: SourceSpec) -> list[tuple[Path, str]]:
    """The pool's shards (its files, in pool order); one data format across them."""
    files = local_files(spec)
    formats = {data_format(p) for p, _ in files}
    if len(formats) > 1:
        by = {f: next(str(p) for p, _ in files if data_format(p) == f) for f in sorted(formats)}
        raise DataError(f"{spec.path}: shards of mixed formats ({', '.join(f'{k} e.g. {v}' for k, v in by.items())}); "
                        "a sharded pool holds one format: convert the odd shards or point at one kind")
    return files


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class WorkDir:
    """``<out>.work/``: per-shard results of one selection (see the module docstring)."""

    def __init__(self, out: str) -> None:
        self.path = Path(str(Path(out).resolve()) + ".work")
        marker = self.path / MARKER
        if self.path.exists() and not marker.is_file():
            raise ConfigError(f"{self.path} exists and was not made by proxyscale; move it away (proxyscale keeps "
                              "resumable per-shard results there)")
        self.path.mkdir(exist_ok=True)
        if not marker.is_file():
            marker.write_text(json.dumps({"proxyscale": "select work directory", "out": str(out)}) + "\n")

    def remove(self) -> None:
        """Remove the results this module wrote, the marker, then the directory (if then empty)."""
        for p in self.path.iterdir():
            if p.name.startswith(("res-", "arg-", ".tmp-")):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        (self.path / MARKER).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            pass  # something else was put there: leave it


def save_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` by ``write(file)`` under a temporary name in its folder, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()




def save_arg(work: WorkDir, arrays: dict[str, np.ndarray], kind: str = "arg") -> str:
    """Put large task arguments (log ratios, a model's coefficients) into the work dir once, as
    one ``.npz`` of plain arrays (read back with :func:`load`, never unpickled), named by their
    content; its path."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        if a.dtype.hasobject:
            raise TypeError(f"task argument {name!r} is an object array; give plain numbers or strings")
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    path = work.path / f"{kind}-{h.hexdigest()[:40]}.npz"
    if not path.is_file():
        save_atomic(path, lambda f: np.savez(f, **arrays))
    return str(path)


def load(path: str, *keys: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[k] for k in keys]


def shard_ids(paths: Sequence[str]) -> tuple[str, ...]:
    """Every document's id, in pool order, from the phase results ``paths``."""
    out: list[str] = []
    for p in paths:
        out.extend(load(p, "ids")[0].tolist())
    if len(set(out)) != len(out):
        raise DataError("the pool's document ids are not unique across its shards; set --id-field to a unique "
                        "column, or leave it unset")
    return tuple(out)

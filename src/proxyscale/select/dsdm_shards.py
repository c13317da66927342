"""DsDm and Bot-DsDm over a sharded pool (see :mod:`proxyscale.select.shards`): the selection
``DsDmDocsSelector.select`` makes of the whole pool, with the per-document work done per shard.

1. The driver trains the BPE on the pool's first ``tokenizer_bytes`` of text, in shard order
   (what the single-process run reads first).
2. ``dsdm-encode`` (per shard): each document's window; the windows go to a raw int32 file
   beside the shard's result, so the driver reads them memory-mapped.
3. The driver trains the proxies once, on the windows of every shard seen as one array
   (:class:`Rows`, rows fetched from the shard files on demand): the same random subsets, the
   same batches, so the same bits as the single-process run. They are kept in the work
   directory under a key of their inputs, so a resumed run does not train them again.
4. ``dsdm-features`` (per shard): TRAK features under every proxy of the rows the shard owns:
   the batches (or projection groups) of the single-process run that start in it, so that
   every row is featurised with the same rows beside it, hence to the same bits. The task runs
   on its own worker's device (:func:`task_device`: cuda if the worker sees a GPU, else the
   CPU); the driver sends none. On a GPU the features, hence the scores, agree with the CPU's
   to float32 rounding only (the result records the device).
5. The driver reads the features of all shards as one array, in the single-process run's row
   blocks, for λ and the k×k kernel, and solves for the targets' right-hand sides.
6. ``dsdm-score`` (per shard): the shard's weights, the mean over targets of its scores.
   When k exceeds the pool's documents TRAK takes the n×n kernel, whose solve covers the whole
   pool: the driver then scores (a pool smaller than k documents is small).
7. The driver takes the global top (or bottom) n, ties broken as the single-process run does.

Memory: a task holds its shard's rows (and at most one batch group of the next shard's); the
driver holds ids, lengths and weights (per document), the proxies, the target features and the
k×k kernel, and reads windows and features memory-mapped in blocks. Every result is named by its
shard's bytes and its inputs (the tokenizer, the proxies), so a changed shard is encoded again and,
as the proxies then change, everything after them is redone.
"""
from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data.sources import Document, iter_file
from ..errors import ConfigError, DataError
from .base import Selection, check_n
from .dsdm import DsDmConfig, select_by_weights
from .dsdm_checks import model_loss, report_overlap, report_proxies, unigram_loss
from .progress import phase
from .shards import Mapper, WorkDir, digest, load, save_arg, save_atomic, shard_ids

ENCODE_BATCH = 256  # documents tokenised at once: their encodings (~100 bytes a character) are the phase's peak


class Rows:
    """Row-stacked 2-D arrays (memory-mapped shard files) seen as one array: ``len``, ``shape``,
    slices and sorted integer indices, each read from the files that hold those rows."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        width = parts[0].shape[1] if parts else 0
        self.shape, self.dtype = (int(self.starts[-1]), width), parts[0].dtype if parts else np.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                raise IndexError("Rows takes contiguous slices only")
            return self._take(np.arange(lo, max(lo, hi)))
        return self._take(np.asarray(key, dtype=np.int64))

    def _take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(part):
            at = np.flatnonzero(part == k)
            local = rows[at] - self.starts[k]
            if len(local) and (np.diff(local) == 1).all():  # a run: one contiguous read
                out[at] = self.parts[k][int(local[0]):int(local[-1]) + 1]
            else:
                out[at] = self.parts[k][local]
        return out


def windows_path(result: str) -> Path:
    """The raw int32 windows file of a ``dsdm-encode`` result."""
    return Path(result[:-len(".npz")] + "-windows.bin")


def shard_windows(result: str, context: int) -> np.ndarray:
    """A shard's windows (n, context + 1), memory-mapped; checked against its result's count."""
    (ids,) = load(result, "ids")
    path = windows_path(result)
    want = len(ids) * (context + 1) * 4
    if not path.is_file() or path.stat().st_size != want:
        raise DataError(f"{path}: damaged (not {want} bytes); delete {path.parent} and run the selection again")
    if not len(ids):
        return np.zeros((0, context + 1), dtype=np.int32)
    return np.memmap(path, dtype=np.int32, mode="r", shape=(len(ids), context + 1))


def encode_phase(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """``dsdm-encode``: ids, window lengths, and the windows (written beside the result)."""
    from ..data.tokenizer import load_tokenizer
    from .dsdm_docs import DsDmDocsSelector

    s = job["settings"]
    tok, sel = load_tokenizer(Path(s["tokenizer"])), DsDmDocsSelector(context=s["context"])
    ids: list[str] = []
    lengths: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]

    def write(f: Any) -> None:
        batch: list[Document] = []
        for d in chain(docs, [None]):
            if d is not None:
                batch.append(d)
            if batch and (d is None or len(batch) == ENCODE_BATCH):
                try:
                    w, n = sel._encode(tok, [x.text for x in batch])
                except DataError as e:
                    raise DataError(f"{job['path']}: {e}") from None
                f.write(w.astype(np.int32).tobytes())
                ids.extend(x.id for x in batch)
                lengths.append(n)
                batch = []
    save_atomic(windows_path(job["result"]), write)
    return {"ids": np.array(ids, dtype=str), "lengths": np.concatenate(lengths)}


def _models(paths: Sequence[str], device: Any = "cpu") -> list[Any]:
    from ..models.gpt import load_gpt

    return [load_gpt(p, device) for p in paths]


def task_device() -> Any:
    """The device a shard task featurises on: its worker's GPU when the worker has one, else its
    CPU. Chosen inside the task, never sent by the driver, whose devices may differ from the
    worker's (a CPU driver with GPU workers, or the reverse)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _scorer_cfg(s: dict[str, Any]) -> DsDmConfig:
    return DsDmConfig(k=s["k"], lambda_ratio=s["lambda_ratio"], batch_size=s["batch_size"], seed=s["seed"])


def _alignment(model: Any, k: int, batch_size: int) -> int:
    """Rows between the boundaries where the single-process featurisation starts a batch of
    gradients (or a group of batches projected together; see ``TRAK._featurize_grouped``). A
    row's features depend, in their last bits, on the rows featurised with it, so each task
    featurises whole such groups: those that start in its shard."""
    from ..attribute.grads import num_params, select_params
    from ..attribute.trak import GROUP_ABOVE_BYTES, PROJECT_BYTES

    p = num_params(model, select_params(model, None))
    limit = min(256, PROJECT_BYTES // (4 * max(1, p)))
    if p * k * 4 < GROUP_ABOVE_BYTES or limit <= batch_size:
        return batch_size
    return batch_size * -(-limit // batch_size)


def owned_rows(starts: Sequence[int], shard: int, align: int) -> tuple[int, int]:
    """The pool rows [lo, hi) whose features shard ``shard``'s task computes: from the first
    group boundary at or after its first row to the first at or after its end (the pool's end
    for the last shard). ``starts``: each shard's first row, then the pool's size."""
    def up(x: int) -> int:
        return min(-(-x // align) * align, starts[-1])
    return up(starts[shard]), up(starts[shard + 1])


def features_phase(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """``dsdm-features``: TRAK features under every proxy of the rows this shard owns
    (:func:`owned_rows`; resumable batch by batch in the result's folder)."""
    from .dsdm import DsDmScorer

    s = job["settings"]
    lens = [load(p, "lengths")[0] for p in s["encoded"]]
    starts = np.concatenate([[0], np.cumsum([len(x) for x in lens])]).astype(int).tolist()
    device = task_device()
    models = _models(s["proxies"], device)
    lo, hi = owned_rows(starts, s["encoded"].index(job["input"]), _alignment(models[0], s["k"], s["batch_size"]))
    if hi > lo:
        windows = Rows([shard_windows(p, s["context"]) for p in s["encoded"]])[lo:hi]
        lengths = np.concatenate(lens)[lo:hi]
        scorer = DsDmScorer(models[0], _scorer_cfg(s), features_dir(job["result"]), device=device)
        scorer.featurize([m.state_dict() for m in models], windows, lengths)
    return {"rows": np.array([lo, hi], dtype=np.int64), "device": np.array(device.type)}


def features_dir(result: str) -> Path:
    return Path(result[:-len(".npz")] + "-trak")


def shard_phi(result: str, model: int, k: int) -> np.ndarray:
    """One proxy's features of one shard (n, k), memory-mapped."""
    (lo, hi) = load(result, "rows")[0].tolist()
    if hi == lo:
        return np.zeros((0, k), dtype=np.float32)
    return np.load(features_dir(result) / "features" / f"model-{model}" / "features.npy", mmap_mode="r")


def score_rows(phis: Sequence[Any], blocks: Sequence[tuple[int, int, Sequence[np.ndarray]]], n: int, m: int,
               row_block: int) -> np.ndarray:
    """Weights (n,) from each model's features ``phis`` and its right-hand sides per target block
    (t0, t1, [W_model (k, t1 - t0)]): the arithmetic of ``kernel.ensemble_scores`` (float64 sums,
    float32 scores), then the mean over targets in float64 as ``DsDmScorer.weights``."""
    scores = np.zeros((n, m), dtype=np.float32)
    for t0, t1, ws in blocks:
        for r0 in range(0, n, row_block):
            r1 = min(r0 + row_block, n)
            acc = np.zeros((r1 - r0, t1 - t0), dtype=np.float64)
            for phi, w in zip(phis, ws):
                acc += _matmul(phi[r0:r1], w)
            acc /= len(phis)
            scores[r0:r1, t0:t1] = acc
    return scores.astype(np.float64).mean(axis=1) if n else np.zeros(0)


def _matmul(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(np.asarray(rows, dtype=np.float64)) @ torch.from_numpy(w)).numpy()


def score_phase(docs: Iterator[Document], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """``dsdm-score``: the shard's weights under the driver's solved right-hand sides."""
    from ..attribute.kernel import ROW_BLOCK

    s = job["settings"]
    blocks = load_rhs(s["rhs"], s["models"])
    phis = [shard_phi(job["input"], m, s["k"]) for m in range(s["models"])]
    return {"w": score_rows(phis, blocks, len(phis[0]), s["targets"], ROW_BLOCK)}


def save_rhs(work: WorkDir, blocks: Sequence[tuple[int, int, Sequence[np.ndarray]]]) -> str:
    """The solved right-hand sides as one ``.npz`` in the work directory (plain arrays, read back
    without pickle), named by their content; its path (the score tasks' setting)."""
    arrays = {"bounds": np.array([[t0, t1] for t0, t1, _ in blocks], dtype=np.int64).reshape(-1, 2)}
    for b, (_, _, ws) in enumerate(blocks):
        arrays.update({f"w-{b}-{m}": np.ascontiguousarray(w) for m, w in enumerate(ws)})
    return save_arg(work, arrays, "arg-rhs")


def load_rhs(path: str, models: int) -> list[tuple[int, int, list[np.ndarray]]]:
    """The blocks :func:`save_rhs` wrote: (t0, t1, [W_model (k, t1 - t0)])."""
    with np.load(path, allow_pickle=False) as z:
        return [(t0, t1, [z[f"w-{b}-{m}"] for m in range(models)])
                for b, (t0, t1) in enumerate(z["bounds"].tolist())]


PHASES = {"dsdm-encode": encode_phase, "dsdm-features": features_phase, "dsdm-score": score_phase}


def _tokenizer(selector: Any, shards: Sequence[tuple[Path, str]], source: dict[str, Any], work: WorkDir) -> Any:
    """The BPE of the single-process run (the pool's first bytes, in shard order), saved in the
    work directory under its content hash (the shards' encodings are keyed by it)."""
    from ..data.sources import SourceSpec

    def pool() -> Iterator[Document]:
        for path, prefix in shards:
            yield from iter_file(path, prefix, SourceSpec("local", path=str(path), **source))
    tok = selector._tokenizer(pool)
    path = work.path / f"arg-tokenizer-{tok.sha256[:40]}.json"
    if not path.is_file():
        save_atomic(path, lambda f: f.write(tok.to_json().encode("utf-8")))
    return tok, str(path)


def _settings(selector: Any) -> dict[str, Any]:
    """The settings a selection records (as the single-process run)."""
    from dataclasses import fields

    return {f.name: getattr(selector, f.name) for f in fields(selector) if f.name not in ("name", "work_dir")}


def _proxies(selector: Any, windows: Rows, seed: int, work: WorkDir, encoded: Sequence[str]) -> list[str]:
    """The proxies, trained once on every shard's windows (skipped when a resumed run finds them)."""
    folder = work.path / f"res-dsdm-proxies-{digest([[Path(p).name for p in encoded], _settings(selector), seed])[:40]}"
    folder.mkdir(exist_ok=True)
    return [str(p) for p in selector._proxies(windows, seed, folder)]


def _solve(selector: Any, models: Sequence[Any], targets: tuple[np.ndarray, np.ndarray], phis: Sequence[Rows],
           seed: int) -> tuple[str, Any]:
    """("nxn", the weights) or ("kxk", right-hand sides per target block), as ``TRAK.score``
    computes them: λ and the kernel over every shard's features in its row blocks."""
    import torch

    from ..attribute.kernel import TARGET_BUDGET_BYTES, choose_form, ensemble_scores, make_solver, ridge_lambda
    from ..attribute.outputs import LMLogOdds
    from ..attribute.trak import TRAK
    from .dsdm import attributable

    cfg = DsDmConfig(k=selector.k, lambda_ratio=selector.lambda_ratio, batch_size=selector.batch_size, seed=seed)
    trak = TRAK(models[0], LMLogOdds(), k=cfg.k, projector=cfg.projector, lambda_ratio=cfg.lambda_ratio,
                seed=cfg.seed, batch_size=cfg.batch_size, keep_q=False)
    tt, tm = attributable(*targets)
    batch = (torch.from_numpy(tt), torch.from_numpy(tm))
    phis_t = [trak.target_features(batch, m, checkpoint=model.state_dict()) for m, model in enumerate(models)]
    n, k, mt = len(phis[0]), cfg.k, len(tt)
    form = choose_form(trak.config.form, n, k)
    solvers = [make_solver(form, phi, ridge_lambda(phi, cfg.lambda_ratio)) for phi in phis]
    if form == "nxn":  # the solve spans the whole pool, which is smaller than k documents
        scores = ensemble_scores(solvers, phis_t, np.zeros((n, mt), dtype=np.float32))
        return form, scores.astype(np.float64).mean(axis=1)
    step, blocks = max(1, TARGET_BUDGET_BYTES // (8 * len(solvers) * max(n, k))), []
    for t0 in range(0, mt, step):
        t1 = min(t0 + step, mt)
        for solver, phi_t in zip(solvers, phis_t):
            solver.prepare(phi_t[t0:t1])
        blocks.append((t0, t1, [solver._w.numpy() for solver in solvers]))
    return form, blocks


def sharded_dsdm(selector: Any, shards: Sequence[tuple[Path, str]], source: dict[str, Any], target: list[str],
                 n: int, seed: int, work: WorkDir, mapper: Mapper, run_phase: Callable[..., list[str]]) -> Selection:
    """DsDm or Bot-DsDm of the sharded pool: ``selector.select``'s selection (module docstring).
    ``run_phase``: :func:`proxyscale.select.shard_phases.run_phase` (passed in: that module
    imports this one)."""
    if not target:
        raise ConfigError(f"{selector.name}: the target set is empty; give at least one target example")
    tok, tok_path = _tokenizer(selector, shards, source, work)
    encoded = run_phase("dsdm-encode", shards, {"tokenizer": tok_path, "context": selector.context}, source, work,
                        mapper, label="featurising")
    ids = shard_ids(encoded)
    check_n(n, len(ids), selector.name)
    windows = Rows([shard_windows(p, selector.context) for p in encoded])
    lengths = np.concatenate([load(p, "lengths")[0] for p in encoded])
    targets = selector._encode(tok, target)
    proxies = _proxies(selector, windows, seed, work, encoded)
    models = _models(proxies)
    report_proxies([model_loss(m, *targets) for m in models],
                   unigram_loss(windows, lengths, *targets, selector.vocab_size))
    s = {"proxies": proxies, "k": selector.k, "lambda_ratio": selector.lambda_ratio, "seed": seed,
         "batch_size": selector.batch_size, "context": selector.context, "models": selector.models}
    feats = run_phase("dsdm-features", shards, {**s, "encoded": encoded}, source, work, mapper, encoded,
                      label="TRAK featurisation")
    phis = [Rows([shard_phi(p, m, selector.k) for p in feats]) for m in range(selector.models)]
    with phase("scoring", total=None):
        form, solved = _solve(selector, models, targets, phis, seed)
    if form == "nxn":
        w = solved
    else:
        rhs = {"rhs": save_rhs(work, solved), "k": selector.k, "models": selector.models, "targets": len(target)}
        scored = run_phase("dsdm-score", shards, rhs, source, work, mapper, feats, label="scoring")
        w = np.concatenate([load(p, "w")[0] for p in scored])
    sel = select_by_weights(ids, w, n, seed, bottom=selector.name == "bot-dsdm", settings=_settings(selector))
    report_overlap(sel.ids, sel.chosen, seed)
    return sel

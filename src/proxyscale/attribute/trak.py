"""TRAK data attribution (SPEC §5, Algorithm 2): featurise, then score.

    trak = TRAK(model, task="classification", k=2048, store_dir=step_dir / "trak")
    for m, state in enumerate(checkpoints):          # independent seeds and/or checkpoints
        trak.featurize(state, (x_train, y_train), model_id=m)
    scores = trak.score((x_target, y_target))        # (n_train, n_targets)

Per model m: per-example gradients g_i = ∇_θ f(z_i; θ_m) (all parameters or a subset), a
random projection φ_i = P_mᵀ g_i, and scores τ(z)_i = (1/M) Σ_m φ_m(z)ᵀ(Φ_mᵀΦ_m + λI)⁻¹ φ_{m,i}
with λ = r · mean ‖φ_i‖². Higher scores mean the train example raises f on the target.
``use_q`` multiplies each train row by its mean Q = 1 − p (original TRAK; the paper's variant
drops it). ``compat`` reproduces the ``traker`` 0.3.2 package's scores exactly (see compat.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..config import content_hash, from_dict, to_dict
from ..errors import ConfigError
from ..store import write_npy
from ..train.calibrate import keep_freed_memory
from . import compat as _compat
from .features import ModelFeatures, dataset_size, iter_batches
from .grads import ParamFilter, PerExampleGrads, checkpoint_tensors, num_params, select_params
from .kernel import choose_form, ensemble_scores, make_solver, ridge_lambda
from .outputs import OutputFunction, get_output
from .projectors import Projector, make_projector

PROJECT_BYTES = 128 << 20  # gradients gathered for one projection matmul (see _featurize_grouped)
GROUP_ABOVE_BYTES = 64 << 20  # gather batches only when the p×k projection matrix is at least this big


@dataclass(frozen=True)
class TRAKConfig:
    """Settings of a TRAK run (what a study spec holds; the model and data are passed separately).

    ``lambda_ratio`` r sets λ = r · mean‖φ_i‖²; ``form`` picks the k×k or n×n kernel (``auto``:
    n×n when k > n); ``compat_lambda`` is the absolute λ of compat mode (the reference's 0);
    ``cache_bytes`` bounds the cached projection matrix; ``vmap_chunk`` bounds the examples
    ``vmap`` differentiates at once; ``param_filter`` names parameters or module prefixes.
    ``keep_q=False`` skips the Q weights while featurising (their forward pass is 20–30% of the
    time on small LMs): for runs that will never weight by Q (not with ``use_q`` or ``compat``).
    """

    k: int = 2048
    projector: Literal["gaussian", "rademacher", "sparse"] = "rademacher"
    lambda_ratio: float = 1.0
    use_q: bool = False
    compat: bool = False
    compat_lambda: float = 0.0
    form: Literal["auto", "kxk", "nxn"] = "auto"
    seed: int = 0
    batch_size: int = 32
    vmap_chunk: int | None = None
    cache_bytes: int = 1 << 30
    sparse_nnz: int = 8
    param_filter: tuple[str, ...] | None = None
    keep_q: bool = True

    def __post_init__(self) -> None:
        if not self.keep_q and (self.use_q or self.compat):
            raise ConfigError("keep_q=False drops the Q weights that use_q / compat need; keep them")
        if self.k < 1 or self.batch_size < 1:
            raise ConfigError(f"k and batch_size must be >= 1 (got k={self.k}, batch_size={self.batch_size})")
        if self.lambda_ratio < 0 or self.compat_lambda < 0:
            raise ConfigError("lambda_ratio and compat_lambda must be >= 0")
        if self.compat and self.projector == "sparse":
            raise ConfigError("compat mode reproduces the reference's dense projector: use 'gaussian' "
                              "(its CPU choice) or 'rademacher'")


class TRAK:
    """TRAK attribution for one architecture and an ensemble of its checkpoints.

    Args:
        model: the architecture (``nn.Module``); checkpoints are passed as state dicts. It is
            put in eval mode. For ``task="lm"`` it maps tokens (B, L) to logits (B, L, V).
        task: ``"classification"`` (batch ``(x, y)``), ``"lm"`` (batch ``(tokens, mask)``) or an
            :class:`~proxyscale.attribute.outputs.OutputFunction`.
        k: projection dimension. projector: ``"rademacher"`` (default), ``"gaussian"`` (default
            in compat mode, as the reference on a CPU) or ``"sparse"``.
        lambda_ratio: r in λ = r · mean‖φ_i‖² (default 1; 0 is the unregularised kernel).
        use_q: weight train rows by the mean Q = 1 − p (original TRAK).
        compat: reproduce the ``traker`` package's arithmetic (implies Q weighting,
            λ = ``compat_lambda``, integer model ids, classification only).
        param_filter: None (all parameters), names/prefixes, or a predicate on the name.
        seed: root seed of the projections. store_dir: where per-model feature memmaps go
            (resumable); None keeps everything in memory.
        **settings: the other :class:`TRAKConfig` fields (batch_size, form, cache_bytes, ...).
    """

    def __init__(self, model: nn.Module, task: str | OutputFunction = "classification", k: int = 2048,
                 projector: str | None = None, lambda_ratio: float = 1.0, use_q: bool = False,
                 compat: bool = False, param_filter: ParamFilter = None, seed: int = 0,
                 store_dir: str | Path | None = None, **settings: Any) -> None:
        named = None if param_filter is None or callable(param_filter) else (
            [param_filter] if isinstance(param_filter, str) else list(param_filter))
        if projector is None:  # the reference package picks the Gaussian matrix on a CPU
            projector = "gaussian" if compat else "rademacher"
        self.config = from_dict(TRAKConfig, dict(k=k, projector=projector, lambda_ratio=lambda_ratio, use_q=use_q,
                                                 compat=compat, seed=seed, param_filter=named, **settings))
        self.model = model
        self.output = get_output(task)
        if compat:
            _compat.check_compat_task(self.output)
        self.names = select_params(model, param_filter)
        self.p = num_params(model, self.names)
        self.grads = PerExampleGrads(model, self.output, self.names, self.config.vmap_chunk)
        self.store_dir = None if store_dir is None else Path(store_dir)
        self.models: dict[Any, ModelFeatures] = {}
        self.checkpoints: dict[Any, dict[str, Tensor]] = {}
        self._projector: tuple[Any, Projector] | None = None
        self._solvers: dict[Any, Any] = {}

    # -- features -----------------------------------------------------------------------------
    def projector(self, model_id: Any) -> Projector:
        """The projection of ``model_id`` (one is kept at a time, so its cache is reused)."""
        if self._projector is None or self._projector[0] != model_id:
            c = self.config
            if c.compat:
                proj: Projector = _compat.TrakerProjector(self.p, c.k, seed=c.seed, model_id=model_id,
                                                          kind=c.projector, cache_bytes=c.cache_bytes)
            else:
                opts = {"nnz": c.sparse_nnz} if c.projector == "sparse" else {}
                proj = make_projector(c.projector, self.p, c.k, seed=c.seed, model_id=model_id,
                                      cache_bytes=c.cache_bytes, **opts)
            self._projector = None  # release the old cache before building the new one
            self._projector = (model_id, proj)
        return self._projector[1]

    def batch_features(self, tensors: Mapping[str, Tensor], batch: Sequence[Tensor],
                       model_id: Any) -> tuple[np.ndarray, np.ndarray]:
        """(φ (B, k) float32, Q (B,) float32) of one batch under one checkpoint."""
        self.output.check_batch(batch)
        g = self.grads(tensors, batch)  # (B, p_sub)
        phi = self.projector(model_id).project(g)  # (B, k)
        return phi.cpu().numpy(), self._q(tensors, batch)

    def _q(self, tensors: Mapping[str, Tensor], batch: Sequence[Tensor]) -> np.ndarray:
        if not self.config.keep_q:
            return np.full(len(batch[0]), np.nan, dtype=np.float32)
        if self.config.compat:
            q = _compat.traker_q(self.model, tensors, tuple(batch))
        else:
            q = self.output.q_weights(self.model, tensors, batch)
        return q.to(torch.float32).cpu().numpy()

    def _featurize_grouped(self, tensors: Mapping[str, Tensor], train_data: Any, feats: ModelFeatures,
                           model_id: Any) -> None:
        """Features of every batch not stored yet. Where the p×k matrix is large (above
        ``GROUP_ABOVE_BYTES``), gradients of consecutive batches are gathered (up to 256 rows and
        ``PROJECT_BYTES``) and projected by one matmul: a (32 × p)·(p × k) product reads the
        whole matrix for 32 rows, and measured 63–101 GFLOP/s against 144–149 at 256 rows
        (p = 265K, k = 512, 2 threads). Each batch is still written on its own; a kill loses at
        most the group in flight."""
        limit = min(256, PROJECT_BYTES // (4 * max(1, self.p)))
        if self.p * self.config.k * 4 < GROUP_ABOVE_BYTES or limit <= self.config.batch_size:
            for r0, batch in iter_batches(train_data, self.config.batch_size):
                if not feats.has(r0, r0 + len(batch[0])):
                    feats.write(r0, *self.batch_features(tensors, batch, model_id))
            return
        group: list[tuple[int, Sequence[Tensor], Tensor]] = []
        for r0, batch in iter_batches(train_data, self.config.batch_size):
            if feats.has(r0, r0 + len(batch[0])):
                continue
            self.output.check_batch(batch)
            group.append((r0, batch, self.grads(tensors, batch)))
            if sum(len(b[0]) for _, b, _ in group) >= limit:
                self._write_group(tensors, feats, model_id, group)
                group = []
        if group:
            self._write_group(tensors, feats, model_id, group)

    def _write_group(self, tensors: Mapping[str, Tensor], feats: ModelFeatures, model_id: Any,
                     group: list[tuple[int, Sequence[Tensor], Tensor]]) -> None:
        g = group[0][2] if len(group) == 1 else torch.cat([gb for _, _, gb in group])
        phi = self.projector(model_id).project(g).cpu().numpy()  # (Σ B, k)
        row = 0
        for r0, batch, gb in group:
            feats.write(r0, phi[row:row + len(gb)], self._q(tensors, batch))
            row += len(gb)

    def _meta(self, model_id: Any) -> dict[str, Any]:
        cfg = {k: v for k, v in to_dict(self.config).items() if not (k == "keep_q" and v)}  # as before keep_q
        return {"config": content_hash(cfg), "params": content_hash(list(self.names)),
                "task": self.output.name, "model_id": str(model_id)}

    def featurize(self, checkpoint: Mapping[str, Tensor], train_data: Any, model_id: Any = 0) -> np.ndarray:
        """Compute (or resume, or load) the train features Φ (n, k) of one checkpoint.

        ``train_data`` is a tuple of arrays sharing the first axis, or a non-shuffling
        DataLoader. With ``store_dir`` the features go to ``store_dir/model-<id>/`` and a run
        that was killed resumes after its last completed batch.
        """
        keep_freed_memory()  # per-batch gradients (B × p floats) are too big for malloc's reuse by default
        tensors = checkpoint_tensors(self.model, checkpoint)
        n = dataset_size(train_data)
        if self.models and n != next(iter(self.models.values())).n:
            raise ConfigError("every model of an ensemble must be featurised on the same train set")
        directory = None if self.store_dir is None else self.store_dir / f"model-{model_id}"
        feats = ModelFeatures(directory, n, self.config.k, self._meta(model_id))
        self.models[model_id], self.checkpoints[model_id] = feats, tensors
        self._solvers.pop(model_id, None)
        if not feats.complete:
            self._featurize_grouped(tensors, train_data, feats, model_id)
        if not feats.complete:
            raise ConfigError(f"the data yielded fewer rows than its length {n}; check the DataLoader")
        return feats.phi

    def target_features(self, targets: Any, model_id: Any,
                        checkpoint: Mapping[str, Tensor] | None = None) -> np.ndarray:
        """φ(z) (m, k) of the targets under one featurised model (kept in memory)."""
        tensors = self.checkpoints[model_id] if checkpoint is None else checkpoint_tensors(self.model, checkpoint)
        rows = [self.batch_features(tensors, b, model_id)[0] for _, b in iter_batches(targets, self.config.batch_size)]
        return np.concatenate(rows, axis=0)

    # -- scores -------------------------------------------------------------------------------
    def _solver(self, model_id: Any) -> Any:
        if model_id in self._solvers:
            return self._solvers[model_id]
        c, phi = self.config, self.models[model_id].phi
        form = "compat" if c.compat else choose_form(c.form, phi.shape[0], c.k)
        lam = c.compat_lambda if c.compat else ridge_lambda(phi, c.lambda_ratio)
        cache = None
        if self.store_dir is not None:
            cache = (self.store_dir / f"model-{model_id}"
                     / f"kernel-{form}-{content_hash([lam, self._meta(model_id)])}.npy")
        factor = np.load(cache, allow_pickle=False) if cache is not None and cache.is_file() else None
        solver = (_compat.TrakerSolver(phi, lam, factor) if c.compat else make_solver(form, phi, lam, factor))
        if cache is not None and factor is None:
            write_npy(cache, solver.state())
        self._solvers[model_id] = solver
        return solver

    def score(self, targets: Any, checkpoints: Mapping[Any, Mapping[str, Tensor]] | None = None,
              out: str | Path | None = None) -> np.ndarray:
        """TRAK scores (n_train, n_targets), averaged over every featurised model.

        ``checkpoints`` maps model ids to state dicts (default: those given to ``featurize``).
        With ``out`` the scores are written block-wise into an ``.npy`` memmap at that path
        (for score matrices larger than memory) and the memmap is returned.
        """
        if not self.models:
            raise ConfigError("no model featurised yet; call featurize(checkpoint, train_data, model_id) first")
        ids = list(self.models)
        ckpts = checkpoints or {}
        phis_t = [self.target_features(targets, i, ckpts.get(i)) for i in ids]
        solvers = [self._solver(i) for i in ids]
        n, m = self.models[ids[0]].n, phis_t[0].shape[0]
        q = self.mean_q() if (self.config.use_q or self.config.compat) else None
        if out is None:
            result = np.zeros((n, m), dtype=np.float32)
            return ensemble_scores(solvers, phis_t, result, q)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, m))
        return ensemble_scores(solvers, phis_t, result, q)

    def score_candidates(self, targets: Any, lambda_ratios: Sequence[float], q_options: Sequence[bool] = (False,),
                         n_models: Sequence[int] | None = None) -> list[tuple[dict[str, Any], np.ndarray]]:
        """Scores (n, m) for every candidate setting, from features computed once.

        Candidates are all (λ ratio, Q weighting, number of models) combinations; ``n_models``
        (default: all) uses the first M featurised models, so LDS against M costs no new
        gradients. Returns ``[({"lambda_ratio", "use_q", "n_models"}, scores)]``. Choose among
        them on held-out subsets (:func:`proxyscale.attribute.lds.choose_by_lds`), never on
        the subsets the LDS is reported on."""
        if not self.models:
            raise ConfigError("no model featurised yet; call featurize(checkpoint, train_data, model_id) first")
        if self.config.compat:
            raise ConfigError("score_candidates varies λ; compat mode fixes it (use score())")
        if not lambda_ratios or min(lambda_ratios) < 0:
            raise ConfigError(f"lambda_ratios {list(lambda_ratios)}: give one or more ratios ≥ 0")
        if any(q_options) and not self.config.keep_q:
            raise ConfigError("Q-weighted candidates need the Q weights, but these features were made with "
                              "keep_q=False; featurise again with keep_q=True")
        ids = list(self.models)
        counts = [len(ids)] if n_models is None else sorted(set(int(m) for m in n_models))
        if counts[0] < 1 or counts[-1] > len(ids):
            raise ConfigError(f"n_models {counts}: each must be in 1..{len(ids)} (the featurised models)")
        phis_t = [self.target_features(targets, i) for i in ids]
        n, m = self.models[ids[0]].n, phis_t[0].shape[0]
        out = []
        for ratio in lambda_ratios:
            solvers = []
            for i in ids:
                phi = self.models[i].phi
                solvers.append(make_solver(choose_form(self.config.form, phi.shape[0], self.config.k), phi,
                                           ridge_lambda(phi, ratio)))
            for use_q in q_options:
                for count in counts:
                    q = np.mean([np.asarray(self.models[i].q, dtype=np.float64) for i in ids[:count]], axis=0)
                    scores = ensemble_scores(solvers[:count], phis_t[:count], np.zeros((n, m), dtype=np.float32),
                                             q if use_q else None)
                    out.append(({"lambda_ratio": float(ratio), "use_q": bool(use_q), "n_models": count}, scores))
        return out

    def mean_q(self) -> np.ndarray:
        """Mean over models of Q_i = 1 − p_i of each train example (n,)."""
        if not self.config.keep_q:
            raise ConfigError("these features were made with keep_q=False: no Q weights to use; featurise again "
                              "with keep_q=True")
        return np.mean([np.asarray(f.q, dtype=np.float64) for f in self.models.values()], axis=0)

    def grad_dot(self, targets: Any, checkpoints: Mapping[Any, Mapping[str, Tensor]] | None = None) -> np.ndarray:
        """Baseline: mean over models of the projected-gradient inner product φ_iᵀ φ(z), (n, m)."""
        ckpts = checkpoints or {}
        total = None
        for i, feats in self.models.items():
            part = (np.asarray(feats.phi, dtype=np.float64)
                    @ self.target_features(targets, i, ckpts.get(i)).T.astype(np.float64))
            total = part if total is None else total + part
        assert total is not None
        return total / len(self.models)


def trak_scores(model: nn.Module, state_dicts: Sequence[Mapping[str, Tensor]], train_data: Any, target_data: Any,
                task: str | OutputFunction = "classification", **settings: Any) -> np.ndarray:
    """One call: featurise every state dict (model ids 0..M-1) and score the targets, (n, m)."""
    trak = TRAK(model, task, **settings)
    for i, state in enumerate(state_dicts):
        trak.featurize(state, train_data, model_id=i)
    return trak.score(target_data)


def grad_dot_scores(model: nn.Module, state_dicts: Sequence[Mapping[str, Tensor]], train_data: Any,
                    target_data: Any, task: str | OutputFunction = "classification", projected: bool = False,
                    param_filter: ParamFilter = None, batch_size: int = 32, **settings: Any) -> np.ndarray:
    """Baseline: mean over models of gradient inner products g_iᵀ g(z) (n, m).

    ``projected=False`` uses the exact (unprojected) gradients; ``projected=True`` uses the
    TRAK features φ (``settings`` go to :class:`TRAK`).
    """
    if projected:
        trak = TRAK(model, task, param_filter=param_filter, batch_size=batch_size, **settings)
        for i, state in enumerate(state_dicts):
            trak.featurize(state, train_data, model_id=i)
        return trak.grad_dot(target_data)
    output = get_output(task)
    grads = PerExampleGrads(model, output, select_params(model, param_filter))
    n, total = dataset_size(train_data), None
    for state in state_dicts:
        tensors = checkpoint_tensors(model, state)
        g_t = torch.cat([grads(tensors, b) for _, b in iter_batches(target_data, batch_size)]).double()  # (m, p)
        part = np.zeros((n, g_t.shape[0]), dtype=np.float64)
        for r0, b in iter_batches(train_data, batch_size):
            part[r0:r0 + len(b[0])] = (grads(tensors, b).double() @ g_t.T).numpy()
        total = part if total is None else total + part
    assert total is not None
    return total / len(state_dicts)


__all__ = ["TRAK", "TRAKConfig", "trak_scores", "grad_dot_scores"]

"""The TRAK kernel and block-wise ensemble scoring, in float64.

Per model m with train features Φ (n, k) and target features φ(z):

    τ_m(z)_i = φ_iᵀ (ΦᵀΦ + λI)⁻¹ φ(z),   λ = r · mean_i ‖φ_i‖²

k×k form: factor ΦᵀΦ + λI (Cholesky) and solve for W = (ΦᵀΦ + λI)⁻¹ φ(z)ᵀ (k, m); the
scores of a block of train rows are Φ_block W. n×n form (cheaper when k > n): by the
push-through identity (ΦᵀΦ + λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ + λI)⁻¹ the scores are
(ΦΦᵀ + λI)⁻¹ Φ φ(z)ᵀ (n, m). Both read Φ in row blocks, so Φ may be an on-disk memmap.

Scores of an ensemble are the mean over models; with Q weighting (original TRAK) each train
row is multiplied by the mean over models of its Q. The result is written block by block
(train rows × targets) into ``out``, which may be a memmap larger than memory.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from ..errors import ProxyscaleError

ROW_BLOCK = 8192
TARGET_BUDGET_BYTES = 256 << 20


class Solver(Protocol):
    """One model's kernel: ``prepare`` a block of target features, then score train row blocks."""

    def prepare(self, phi_targets: np.ndarray) -> None: ...

    def block(self, r0: int, r1: int) -> np.ndarray: ...


def _rows(phi: np.ndarray, r0: int, r1: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(phi[r0:r1], dtype=np.float64))  # (rows, k) float64 copy


def ridge_lambda(phi: np.ndarray, ratio: float, row_block: int = ROW_BLOCK) -> float:
    """λ = ratio · mean_i ‖φ_i‖² (mean squared feature norm), computed in float64."""
    total = sum(float((_rows(phi, r, r + row_block) ** 2).sum()) for r in range(0, phi.shape[0], row_block))
    return ratio * total / phi.shape[0]


def _cholesky(a: torch.Tensor, what: str) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ProxyscaleError(f"{what} is singular (too few examples for k, or λ = 0); "
                              "set lambda_ratio > 0 (the default 1.0 is safe) or lower k")
    return factor


class KxKSolver:
    """(ΦᵀΦ + λI)⁻¹ through a Cholesky factor of the k×k matrix."""

    def __init__(self, phi: np.ndarray, lam: float, factor: np.ndarray | None = None,
                 row_block: int = ROW_BLOCK) -> None:
        self.phi, self.lam, self.row_block = phi, lam, row_block
        if factor is None:
            k = phi.shape[1]
            xtx = torch.zeros(k, k, dtype=torch.float64)
            for r in range(0, phi.shape[0], row_block):
                blk = _rows(phi, r, r + row_block)
                xtx += blk.T @ blk
            xtx.diagonal().add_(lam)
            self.factor = _cholesky(xtx, "ΦᵀΦ + λI")  # (k, k) lower triangular
        else:
            self.factor = torch.from_numpy(np.asarray(factor, dtype=np.float64))
        self._w: torch.Tensor | None = None

    def state(self) -> np.ndarray:
        return self.factor.numpy()

    def prepare(self, phi_targets: np.ndarray) -> None:
        t = torch.from_numpy(np.asarray(phi_targets, dtype=np.float64))  # (m, k)
        self._w = torch.cholesky_solve(t.T.contiguous(), self.factor)  # (k, m)

    def block(self, r0: int, r1: int) -> np.ndarray:
        assert self._w is not None, "call prepare() first"
        return (_rows(self.phi, r0, r1) @ self._w).numpy()  # (rows, m)


class NxNSolver:
    """(ΦΦᵀ + λI)⁻¹ Φ φ(z)ᵀ through a Cholesky factor of the n×n matrix (use when k > n)."""

    def __init__(self, phi: np.ndarray, lam: float, factor: np.ndarray | None = None,
                 row_block: int = ROW_BLOCK) -> None:
        self.phi, self.lam, self.row_block = phi, lam, row_block
        n = phi.shape[0]
        if factor is None:
            gram = torch.zeros(n, n, dtype=torch.float64)
            for r in range(0, n, row_block):
                a = _rows(phi, r, r + row_block)
                for c in range(0, n, row_block):
                    gram[r:r + row_block, c:c + row_block] = a @ _rows(phi, c, c + row_block).T
            gram.diagonal().add_(lam)
            self.factor = _cholesky(gram, "ΦΦᵀ + λI")  # (n, n)
        else:
            self.factor = torch.from_numpy(np.asarray(factor, dtype=np.float64))
        self._s: torch.Tensor | None = None

    def state(self) -> np.ndarray:
        return self.factor.numpy()

    def prepare(self, phi_targets: np.ndarray) -> None:
        t = torch.from_numpy(np.asarray(phi_targets, dtype=np.float64))  # (m, k)
        n = self.phi.shape[0]
        c = torch.empty(n, t.shape[0], dtype=torch.float64)  # Φ φ(z)ᵀ, (n, m)
        for r in range(0, n, self.row_block):
            c[r:r + self.row_block] = _rows(self.phi, r, r + self.row_block) @ t.T
        self._s = torch.cholesky_solve(c, self.factor)  # (n, m)

    def block(self, r0: int, r1: int) -> np.ndarray:
        assert self._s is not None, "call prepare() first"
        return self._s[r0:r1].numpy()


def choose_form(form: str, n: int, k: int) -> str:
    """``kxk`` or ``nxn``; ``auto`` picks the smaller system."""
    if form == "auto":
        return "nxn" if k > n else "kxk"
    return form


def make_solver(form: str, phi: np.ndarray, lam: float, factor: np.ndarray | None = None) -> KxKSolver | NxNSolver:
    return (NxNSolver if form == "nxn" else KxKSolver)(phi, lam, factor)


def ensemble_scores(solvers: Sequence[Solver], targets: Sequence[np.ndarray], out: np.ndarray,
                    q_mean: np.ndarray | None = None, row_block: int = ROW_BLOCK,
                    target_block: int | None = None) -> np.ndarray:
    """Mean over models of each solver's scores, times ``q_mean`` per train row if given,
    written into ``out`` (n, m) in blocks of ``row_block`` train rows × ``target_block`` targets."""
    n, m = out.shape
    if target_block is None:  # keep each model's prepared right-hand side (≤ max(n, k) × block) in budget
        k = targets[0].shape[1]
        target_block = max(1, TARGET_BUDGET_BYTES // (8 * len(solvers) * max(n, k)))
    for t0 in range(0, m, target_block):
        t1 = min(t0 + target_block, m)
        for s, phi_t in zip(solvers, targets):
            s.prepare(phi_t[t0:t1])
        for r0 in range(0, n, row_block):
            r1 = min(r0 + row_block, n)
            acc = np.zeros((r1 - r0, t1 - t0), dtype=np.float64)
            for s in solvers:
                acc += s.block(r0, r1)
            acc /= len(solvers)
            if q_mean is not None:
                acc *= np.asarray(q_mean[r0:r1], dtype=np.float64)[:, None]
            out[r0:r1, t0:t1] = acc
    if isinstance(out, np.memmap):
        out.flush()
    return out

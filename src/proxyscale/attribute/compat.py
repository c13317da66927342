"""Arithmetic of the ``traker`` package (version 0.3.2), reproduced so scores can be checked
against it. Only used when TRAK is built with ``compat=True``.

What the reference code does, step by step (fp32, CPU):

1. Per-example gradients of the classification margin w.r.t. the chosen parameters, flattened
   in ``named_parameters`` order.
2. Projection with its block-wise CPU projector: P is cut into column blocks of 100 (or k if
   smaller); block ``i`` is a (p, 100) tensor filled by ``normal_`` (or ``bernoulli_(0.5)``
   mapped to ±1) from a CPU ``torch.Generator`` seeded ``seed + 1000·i + 100000·model_id``.
   On a CPU it chooses the Gaussian matrix. Then φ is divided by √p.
3. Per model: XᵀX in fp32, plus an absolute ridge λ (default 0), inverted in fp32, and the
   inverse divided by the mean of its absolute entries; features Φ·inv.
4. Scores: Σ_m (Φ_m inv_m) φ_m(z)ᵀ / M, multiplied row-wise by the mean over models of
   Q = 1 − softmax(logits)[y] of the train examples.

The reference regenerates every column block for every batch; here the blocks are cached
within a memory budget (the projection itself is identical).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ProxyscaleError
from .outputs import ClassificationMargin, Params

TRAKER_BLOCK = 100
TRAKER_ROW_BLOCK = 20_000  # rows of X per XᵀX accumulation step in the reference


class TrakerProjector:
    """The reference CPU projector, followed by its division by √p; blocks cached."""

    def __init__(self, p: int, k: int, *, seed: int = 0, model_id: int = 0, kind: str = "gaussian",
                 cache_bytes: int = 1 << 30) -> None:
        if kind not in ("gaussian", "rademacher"):
            raise ConfigError(f"compat mode supports the gaussian or rademacher projector, not '{kind}'")
        if not isinstance(model_id, int) or isinstance(model_id, bool):
            raise ConfigError(f"compat mode needs integer model ids (the reference seeds with them); got {model_id!r}")
        self.p, self.k, self.seed, self.model_id, self.kind = p, k, int(seed), model_id, kind
        self.width = min(k, TRAKER_BLOCK)
        self.n_blocks = math.ceil(k / self.width)
        self.cache_bytes = cache_bytes
        self._full_t: Tensor | None = None
        self.generated = 0
        self.scale = torch.sqrt(torch.tensor(p, dtype=torch.float32))

    def _block(self, i: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed + 1000 * i + 100_000 * self.model_id)
        m = torch.empty(self.p, self.width, dtype=torch.float32)  # (p, width), filled row-major as the reference
        if self.kind == "gaussian":
            m.normal_(generator=g)
        else:
            m.bernoulli_(p=0.5, generator=g).mul_(2.0).sub_(1.0)
        self.generated += 1
        return m

    def _columns(self, i: int) -> Tensor:
        st, ed = i * self.width, min((i + 1) * self.width, self.k)
        return self._block(i)[:, : ed - st]

    def project(self, grads: Tensor) -> Tensor:
        """(B, p) -> (B, k): the reference's projection and √p normalisation."""
        grads = grads.to(torch.float32)
        if self._full_t is None and self.p * self.k * 4 <= self.cache_bytes:
            # Pᵀ (k, p), filled one block at a time; g @ (Pᵀ)ᵀ with a contiguous Pᵀ is ~1.7× faster
            # on CPU than g @ P with P stored (p, k)
            self._full_t = torch.empty(self.k, self.p, dtype=torch.float32)
            for i in range(self.n_blocks):
                self._full_t[i * self.width:(i + 1) * self.width] = self._columns(i).T
        if self._full_t is not None:
            if self._full_t.device != grads.device:  # generated on the CPU (as the reference), kept where used
                self._full_t = self._full_t.to(grads.device)
            out = grads @ self._full_t.T
        else:
            out = torch.cat([grads @ self._columns(i).to(grads.device) for i in range(self.n_blocks)], dim=1)
        return out / self.scale.to(grads.device)

    def matrix(self) -> Tensor:
        return self.project(torch.eye(self.p))


def traker_q(model: torch.nn.Module, params: Params, batch: tuple[Tensor, ...]) -> Tensor:
    """Q as the reference computes it: ``1 − softmax(logits)[y]`` in fp32 (B,)."""
    x, y = batch
    with torch.no_grad():
        logits = torch.func.functional_call(model, dict(params), (x,))
        return 1 - torch.softmax(logits, -1)[torch.arange(logits.shape[0]), y]


def check_compat_task(output: object) -> None:
    if not isinstance(output, ClassificationMargin):
        raise ConfigError("compat mode reproduces the reference's classification margin only; "
                          "use task='classification' or compat=False")


class TrakerSolver:
    """One model's kernel in the reference arithmetic: inv(XᵀX + λI) / mean|inv|, all fp32."""

    def __init__(self, phi: np.ndarray, lam: float = 0.0, factor: np.ndarray | None = None,
                 row_block: int = TRAKER_ROW_BLOCK) -> None:
        self.phi = phi
        self._targets: Tensor | None = None
        if factor is not None:
            self.inv = torch.from_numpy(np.asarray(factor, dtype=np.float32))
            return
        k = phi.shape[1]
        xtx = torch.zeros(k, k, dtype=torch.float32)
        for r in range(0, phi.shape[0], row_block):
            blk = torch.from_numpy(np.ascontiguousarray(phi[r:r + row_block], dtype=np.float32))
            xtx += blk.T @ blk
        try:
            inv = torch.linalg.inv(xtx + lam * torch.eye(k, dtype=torch.float32))
        except torch.linalg.LinAlgError as e:
            raise ProxyscaleError("XᵀX is exactly singular in compat mode (the reference's λ defaults to 0); "
                                  "set compat_lambda > 0 or lower k") from e
        self.inv = inv / inv.abs().mean()  # (k, k)

    def state(self) -> np.ndarray:
        return self.inv.numpy()

    def prepare(self, phi_targets: np.ndarray) -> None:
        self._targets = torch.from_numpy(np.ascontiguousarray(phi_targets, dtype=np.float32))  # (m, k)

    def block(self, r0: int, r1: int) -> np.ndarray:
        """Scores of train rows r0:r1 against the prepared targets, (r1-r0, m) float32."""
        assert self._targets is not None
        feats = torch.from_numpy(np.ascontiguousarray(self.phi[r0:r1], dtype=np.float32)) @ self.inv
        return (feats @ self._targets.T).numpy()

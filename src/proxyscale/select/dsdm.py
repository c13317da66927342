"""DsDm (Engstrom, Feldmann & Madry 2024; SPEC §6): choose the pool documents whose TRAK
attribution says they most lower the loss on the target examples.

For every proxy model m (trained on a random pool subset of its scale's Chinchilla size), TRAK
featurises every pool document — train-side output: the mean per-token log-odds over the
document — and scores it toward every target example — target-side output: the log-odds on the
target's prediction tokens (the answer, the last word). A document's weight is the mean over
targets of its score, ``w_i = mean_z τ(z)_i``; DsDm keeps the top ``n`` by ``w`` and Bot-DsDm
the bottom ``n`` (a deliberately harmful distribution), ties broken by a seeded hash.

Features live out of core in ``work_dir`` (one memmap per proxy, written in blocks, resumed after
a kill) and the (documents × targets) scores are streamed into a memmap, so a pool larger than
memory is scored in bounded memory: one featurisation serves any number of target sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from .base import Selection, bottom_n, top_n


@dataclass(frozen=True)
class DsDmConfig:
    """TRAK settings of DsDm (the paper's released scores used k = 2048 on 3 proxies)."""

    k: int = 1024
    lambda_ratio: float = 1.0
    projector: str = "rademacher"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.lambda_ratio < 0:
            raise ConfigError("dsdm: k ≥ 1, batch_size ≥ 1 and lambda_ratio ≥ 0 are needed")


def _check_windows(windows: np.ndarray) -> None:
    if windows.ndim != 2 or windows.shape[1] < 3:
        raise ConfigError(f"pool windows must be (N, T+1) token ids with T ≥ 2, got shape {windows.shape}")


def attributable(windows: np.ndarray, lengths: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Training windows (N, T+1) as TRAK's LM input: the model reads the first T tokens and every
    next-token prediction in them is scored (mask (N, T-1)); ``lengths`` (N,) marks where a
    shorter, padded document ends (positions past it are not scored)."""
    _check_windows(windows)
    tokens = np.ascontiguousarray(windows[:, :-1]).astype(np.int64)
    mask = np.ones((tokens.shape[0], tokens.shape[1] - 1), dtype=np.float32)
    if lengths is not None:
        mask[np.arange(tokens.shape[1] - 1)[None, :] + 2 > np.asarray(lengths)[:, None]] = 0.0
    return tokens, mask


class _WindowRows:
    """The pool as a non-shuffling loader of (tokens, mask) batches cut from ``windows`` (which may
    be a memmap): only one batch is in memory at a time."""

    def __init__(self, windows: np.ndarray, lengths: Optional[np.ndarray], batch_size: int,
                 progress: Optional[Callable[[int], Any]] = None, device: Any = None) -> None:
        _check_windows(windows)  # before any work, not at the first batch
        self.windows, self.lengths, self.batch_size, self.progress = windows, lengths, batch_size, progress
        self.device = device
        self.dataset = range(len(windows))  # what TRAK reads the size from

    def __iter__(self):
        import torch

        for i in range(0, len(self.windows), self.batch_size):
            rows = np.asarray(self.windows[i:i + self.batch_size])
            lens = None if self.lengths is None else self.lengths[i:i + self.batch_size]
            tokens, mask = attributable(rows, lens)
            yield torch.from_numpy(tokens).to(self.device), torch.from_numpy(mask).to(self.device)
            if self.progress is not None:  # the batch before has been featurised (or was on disk)
                self.progress(len(rows))


class DsDmScorer:
    """Featurise a pool once with an ensemble of proxies; score it toward any target set.
    ``device``: where the pool's batches go for featurisation (None: the CPU); the state dicts
    given to :meth:`featurize` must be on it too."""

    def __init__(self, model: Any, cfg: DsDmConfig = DsDmConfig(), work_dir: Optional[Path] = None,
                 device: Any = None) -> None:
        from ..attribute.outputs import LMLogOdds
        from ..attribute.trak import TRAK

        self.cfg, self.work_dir, self.device = cfg, None if work_dir is None else Path(work_dir), device
        self.trak = TRAK(model, LMLogOdds(), k=cfg.k, projector=cfg.projector, lambda_ratio=cfg.lambda_ratio,
                         seed=cfg.seed, batch_size=cfg.batch_size, keep_q=False,  # DsDm never weights by Q
                         store_dir=None if self.work_dir is None else self.work_dir / "features")

    def featurize(self, state_dicts: Sequence[Mapping[str, Any]], windows: np.ndarray,
                  lengths: Optional[np.ndarray] = None, progress: Optional[Callable[[int], Any]] = None) -> None:
        """Features of every pool window under every proxy (resumes a killed run in ``work_dir``);
        ``progress(rows)`` is called as each batch of rows is done."""
        pool = _WindowRows(windows, lengths, self.cfg.batch_size, progress, self.device)
        for m, sd in enumerate(state_dicts):
            self.trak.featurize(sd, pool, model_id=m)

    def scores(self, targets: tuple[Any, Any], name: str = "targets") -> np.ndarray:
        """TRAK scores (N, n_targets) toward ``targets`` = (tokens (B, L), prediction mask (B, L-1))."""
        out = None if self.work_dir is None else self.work_dir / f"scores-{name}.npy"
        return self.trak.score(targets, out=out)

    def weights(self, targets: tuple[Any, Any], name: str = "targets", block: int = 65536) -> np.ndarray:
        """``w_i`` = mean over targets of the scores (N,) float64, read in blocks of rows."""
        s = self.scores(targets, name)
        return np.concatenate([np.asarray(s[i:i + block], dtype=np.float64).mean(axis=1)
                               for i in range(0, s.shape[0], block)])


def select_by_weights(ids: Sequence[str], weights: np.ndarray, n: int, seed: int, *, bottom: bool = False,
                      settings: Optional[dict[str, Any]] = None) -> Selection:
    """DsDm (top ``n`` by weight) or Bot-DsDm (bottom ``n``) as a :class:`Selection`."""
    if len(ids) != len(weights):
        raise ConfigError(f"{len(ids)} ids but {len(weights)} weights")
    if not np.isfinite(weights).all():
        raise ConfigError("dsdm: some weights are not finite; the proxies or their features are broken")
    pick = bottom_n if bottom else top_n
    name = "bot-dsdm" if bottom else "dsdm"
    return Selection(name, tuple(ids), np.asarray(weights, np.float64), pick(weights, n, ids, seed), settings or {})

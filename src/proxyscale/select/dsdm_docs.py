"""DsDm and Bot-DsDm on a document pool (what ``proxyscale select --method dsdm`` runs).

Everything DsDm needs is built from the pool itself, seeded: a byte-level BPE on a sample of the
pool's text; each document as its first ``context + 1`` tokens (shorter ones padded, their
padding never scored); ``models`` proxy GPTs of the given shape, each trained on its own random
subset of the documents of the proxy's Chinchilla size (repeated as epochs if the pool is
smaller); TRAK features of every document (out of core in ``work_dir``, resumable); and each
target text, whose every token is a prediction token. A document's weight is the mean over
targets of its TRAK score; DsDm keeps the top ``n``, Bot-DsDm the bottom ``n``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..seeding import derive_seed, epoch_order, np_rng
from .base import SELECTORS, Pool, Selection, check_n
from .dsdm import DsDmConfig, DsDmScorer, select_by_weights
from .dsdm_checks import model_loss, report_overlap, report_proxies, unigram_loss
from .progress import phase, pool_size


@dataclass(frozen=True)
class DsDmDocsSelector:
    """DsDm: TRAK scores of proxy GPTs trained on the pool; keeps the documents that most help the target.

    Settings: the proxy shape, how many proxies, their training (tokens per parameter, batch
    size, learning rate), the tokenizer (vocabulary, bytes of pool text it learns from) and
    window size, TRAK's k and λ, and where the features go (``work_dir``; default: a
    temporary directory)."""

    name: str = "dsdm"
    d_model: int = 16
    n_layers: int = 1
    n_heads: int = 2
    models: int = 3
    context: int = 128
    vocab_size: int = 512
    tokens_per_param: float = 20.0
    k: int = 1024
    lambda_ratio: float = 1.0
    batch_size: int = 32
    lr: float = 3e-3
    tokenizer_bytes: int = 4_000_000
    work_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.models < 1 or self.context < 8 or self.batch_size < 1:
            raise ConfigError("dsdm: models ≥ 1, context ≥ 8 and batch_size ≥ 1 are needed")

    def _encode(self, tok, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(windows (N, T+1) of each text's first tokens, lengths (N,)); short texts are padded."""
        out = np.full((len(texts), self.context + 1), tok.eos_id, dtype=np.int64)
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, ids in enumerate(tok.encode_batch(list(texts))):
            ids = (list(ids) + [tok.eos_id])[: self.context + 1]
            out[i, : len(ids)], lengths[i] = ids, len(ids)
        if (lengths < 2).any():
            raise DataError(f"{int((lengths < 2).sum())} documents are empty; drop empty documents from the pool "
                            "and the target")
        return out, lengths

    def _proxies(self, windows: np.ndarray, seed: int, work: Path) -> list[Path]:
        from ..models.ladder import GPTConfig, lm_budget
        from ..train.batched import train_lm_batched
        from ..train.optim import TrainConfig

        cfg = GPTConfig(vocab_size=self.vocab_size, context=self.context, d_model=self.d_model,
                        n_layers=self.n_layers, n_heads=self.n_heads)
        train = TrainConfig(lr=self.lr, batch_size=self.batch_size, warmup_frac=0.05, checkpoint_every=0)
        b = lm_budget(cfg, self.tokens_per_param, self.batch_size)
        size = min(len(windows), b.n_steps * self.batch_size)
        fns = []
        for m in range(self.models):
            subset = np_rng(seed, "dsdm-subset", m).permutation(len(windows))[:size]
            order = epoch_order(subset, b.n_steps * self.batch_size, seed, "dsdm-epoch", m)
            fns.append(lambda i, o=order: np.asarray(windows[np.sort(o[i * self.batch_size:(i + 1) * self.batch_size])],
                                                     dtype=np.int64))
        outs = [work / f"proxy-{m}" for m in range(self.models)]
        seeds = [derive_seed(seed, "dsdm-proxy", m) for m in range(self.models)]
        with phase("proxy training", total=self.models * b.n_steps, unit="step") as bar:
            train_lm_batched(cfg, train, fns, b.n_steps, outs, seeds, progress=_stepper(bar, b.n_steps))
        return outs

    def _tokenizer(self, pool: Pool):
        """A BPE on the pool's first ``tokenizer_bytes`` of text (deterministic: stream order)."""
        from ..data.tokenizer import train_tokenizer

        sample, budget = [], self.tokenizer_bytes
        for d in pool():
            sample.append(d.text)
            budget -= len(d.text.encode("utf-8"))
            if budget <= 0:
                break
        return train_tokenizer(sample, self.vocab_size)

    def _encode_pool(self, tok, pool: Pool, work: Path, bar) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, windows (N, T+1) int32 memmap in ``work``, lengths (N,)): the pool streamed in
        batches, so only its ids and lengths are held in memory."""
        ids: list[str] = []
        lengths: list[np.ndarray] = []
        path = work / "windows.bin"
        with open(path, "wb") as f:
            batch: list = []
            for d in chain(pool(), [None]):
                if d is not None:
                    batch.append(d)
                if batch and (d is None or len(batch) == 4096):
                    w, n = self._encode(tok, [x.text for x in batch])
                    f.write(w.astype(np.int32).tobytes())
                    ids += [x.id for x in batch]
                    lengths.append(n)
                    bar.update(len(batch))
                    batch = []
        windows = np.memmap(path, dtype=np.int32, mode="r", shape=(len(ids), self.context + 1))
        return ids, windows, np.concatenate(lengths)

    def select(self, pool: Pool, target: Sequence[str], n: int, seed: int) -> Selection:
        if not target:
            raise ConfigError(f"{self.name}: the target set is empty; give at least one target example")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(self.work_dir) if self.work_dir else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            with phase("featurising", total=pool_size()) as bar:  # a BPE on the pool, then every document's window
                tok = self._tokenizer(pool)
                t_windows, t_lengths = self._encode(tok, target)
                ids, windows, lengths = self._encode_pool(tok, pool, work, bar)
            check_n(n, len(ids), self.name)
            w = self._weights(windows, lengths, (t_windows, t_lengths), seed, work)
            del windows
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "work_dir")}
        sel = select_by_weights(ids, w, n, seed, bottom=self.name == "bot-dsdm", settings=settings)
        report_overlap(sel.ids, sel.chosen, seed)
        return sel

    def _weights(self, windows: np.ndarray, lengths: np.ndarray, targets: tuple[np.ndarray, np.ndarray], seed: int,
                 work: Path) -> np.ndarray:
        """Train the proxies, report their target loss, and return every document's weight (N,)."""
        import torch

        from ..models.gpt import load_gpt
        from .dsdm import attributable

        runs = self._proxies(windows, seed, work)
        models = [load_gpt(r) for r in runs]
        report_proxies([model_loss(m, *targets) for m in models],
                       unigram_loss(windows, lengths, *targets, self.vocab_size))
        scorer = DsDmScorer(models[0], DsDmConfig(k=self.k, lambda_ratio=self.lambda_ratio,
                                                  batch_size=self.batch_size, seed=seed), work / "trak")
        with phase("TRAK featurisation", total=self.models * len(windows)) as bar:
            scorer.featurize([m.state_dict() for m in models], windows, lengths, progress=bar.update)
        with phase("scoring", total=len(windows)) as bar:
            tt, tm = attributable(*targets)
            w = scorer.weights((torch.from_numpy(tt), torch.from_numpy(tm)))
            bar.update(len(windows))
        return w


def _stepper(bar, n_steps: int):
    """A training progress callback that moves ``bar`` to the steps done over every proxy (the
    proxies train together, reporting a shared step, or one after another, each from 0)."""
    state = {"base": 0, "last": 0}

    def progress(info: dict) -> None:
        step = int(info["step"])
        if step < state["last"]:  # the next proxy (trained one after another) started
            state["base"] += n_steps
        state["last"] = step
        k = len(info["loss"]) if isinstance(info.get("loss"), list) else 1  # models reporting this step
        bar.n = min(bar.total, state["base"] + step * k)
        bar.refresh()
    return progress


@dataclass(frozen=True)
class BotDsDmDocsSelector(DsDmDocsSelector):
    """Bot-DsDm: DsDm's scores, keeping the documents that most hurt the target (a harmful control)."""

    name: str = "bot-dsdm"


SELECTORS.add("dsdm", DsDmDocsSelector)
SELECTORS.add("bot-dsdm", BotDsDmDocsSelector)

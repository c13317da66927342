"""A synthetic study with known structure, for demos, tests and report previews.

Each distribution d has a latent quality q_d per test set. Model m (compute C_m) has mean loss

    L(m, d) = E_d + A_d · (C_m / C_ref)^(−α) + σ_m · ε(m, d) + seed noise,

with E_d and A_d increasing in q_d, so every model ranks distributions alike up to its own
distortion σ_m (small for big models). N-gram "proxies" see q_d through their own σ. Each
example adds a fixed offset and an example-specific slope on q_d and an example × distribution
effect shared by all models, plus per-run noise, so per-example correlations are positive but
imperfect. Nothing here is a result: it only exercises the analysis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..models.ladder import train_flops


@dataclass(frozen=True)
class SyntheticModel:
    """One model of the synthetic study; ``sigma`` is its distortion of the latent ranking."""

    name: str
    kind: str
    params: int
    sigma: float
    n_seeds: int = 2

    @property
    def train_tokens(self) -> int:
        return 20 * self.params

    @property
    def flops(self) -> float:
        return train_flops(self.params, self.train_tokens) if self.kind == "neural" else 0.0


DEFAULT_MODELS = (
    SyntheticModel("unigram", "ngram", 0, 0.9, 1),
    SyntheticModel("bigram", "ngram", 0, 0.5, 1),
    SyntheticModel("L1d16", "neural", 10_000, 0.8),
    SyntheticModel("L2d32", "neural", 40_000, 0.4),
    SyntheticModel("L2d64", "neural", 120_000, 0.2),
    SyntheticModel("L4d96", "neural", 400_000, 0.05, 3),
)


def make_synthetic_study(rng: np.random.Generator, *, n_dist: int = 8, n_examples: int = 12,
                         models: tuple[SyntheticModel, ...] = DEFAULT_MODELS,
                         sources: tuple[str, ...] = ("web", "code", "books"), alpha: float = 0.3,
                         seed_sd: float = 0.01) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(results, models, distributions, test_sets) tables; the largest neural model is the reference."""
    ref = max((m for m in models if m.kind == "neural"), key=lambda m: m.params)
    dist_names = [f"d{i}" for i in range(n_dist)]
    dist_sources = [[s for s in sources if rng.random() < 0.5] or [sources[i % len(sources)]] for i in range(n_dist)]
    test_sets = [("mixed_lm", "lm", None), (f"{sources[0]}_held", "lm", sources[0]), ("qa_never", "qa", "unseen")]
    rows = []
    for ts, _, _ in test_sets:
        q = rng.normal(size=n_dist)  # (D,) latent quality
        e_d, a_d = 2.0 + 0.3 * q, 1.0 + 0.2 * q
        ex_off = rng.normal(0, 0.3, size=n_examples)  # (E,)
        ex_slope = rng.normal(1.0, 0.5, size=n_examples)  # (E,)
        ex_dist = 0.2 * rng.normal(size=(n_examples, n_dist))  # (E, D) what every model sees alike
        for m in models:
            # Count models sit well above every neural rung but still track q.
            scale = (m.flops / ref.flops) ** (-alpha) if m.kind == "neural" else 4.0
            mean = e_d + a_d * scale + m.sigma * 0.3 * rng.normal(size=n_dist)  # (D,)
            for s in range(m.n_seeds):
                run = mean + seed_sd * rng.normal(size=n_dist)  # (D,)
                loss = (run[None, :] + ex_off[:, None] + 0.3 * (ex_slope[:, None] - 1) * q[None, :]
                        + ex_dist + 0.1 * rng.normal(size=(n_examples, n_dist)))  # (E, D)
                for e in range(n_examples):
                    for d in range(n_dist):
                        rows.append((ts, f"ex{e}", dist_names[d], m.name, s, float(loss[e, d]), 8, np.nan))
    results = pd.DataFrame(rows, columns=["test_set", "example_id", "distribution", "model", "seed", "loss",
                                          "n_tokens", "correct"])
    models_df = pd.DataFrame([{"model": m.name, "kind": m.kind, "params": m.params, "train_tokens": m.train_tokens,
                               "flops": m.flops, "is_reference": m is ref} for m in models])
    mixtures = [", ".join(f"{src} {1 / len(srcs):.2f}" for src in srcs) for srcs in dist_sources]  # equal weights
    dists = pd.DataFrame({"distribution": dist_names, "sources": dist_sources, "mixture": mixtures})
    ts_df = pd.DataFrame(test_sets, columns=["test_set", "kind", "source"])
    return results, models_df, dists, ts_df

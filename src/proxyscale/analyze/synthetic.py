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


# DataDecide's 14 sizes (parameters); each trained on 100 tokens per parameter here.
SUITE_SIZES = (4_000_000, 6_000_000, 8_000_000, 10_000_000, 14_000_000, 16_000_000, 20_000_000, 60_000_000,
               90_000_000, 150_000_000, 300_000_000, 530_000_000, 750_000_000, 1_000_000_000)


@dataclass(frozen=True)
class SuiteDesign:
    """A synthetic suite: distributions × scales × seeds, evaluated on test sets of examples."""

    n_dist: int = 25
    n_scales: int = 14
    n_seeds: int = 3
    n_test_sets: int = 10
    n_examples: int = 2000
    vocab_size: int = 50_000
    alpha: float = 0.1
    seed_sd: float = 0.01
    noise_sd: float = 0.3

    @property
    def n_models(self) -> int:
        return self.n_dist * self.n_scales * self.n_seeds


def _suite_params(rng: np.random.Generator, d: SuiteDesign, sizes: np.ndarray) -> dict[str, np.ndarray]:
    """One test set's latent structure: cell means mu (K, D) and the examples' parts."""
    q = rng.normal(size=d.n_dist)
    flops = 600.0 * sizes.astype(np.float64) ** 2
    sigma = np.linspace(0.8, 0.05, len(sizes))  # small scales distort the ranking most
    scale = (flops / flops[-1]) ** (-d.alpha)
    mu = (2.0 + 0.3 * q)[None] + (1.0 + 0.2 * q)[None] * scale[:, None] \
        + 0.3 * sigma[:, None] * rng.normal(size=(len(sizes), d.n_dist))  # (K, D)
    ex_off = rng.normal(0, 0.3, size=d.n_examples)  # (E,)
    ex_dist = 0.1 * rng.normal(size=(d.n_examples, d.n_dist))  # (E, D) seen alike by every model
    n_bytes = rng.integers(20, 81, size=d.n_examples)  # (E,)
    return {"mu": mu, "ex_off": ex_off, "ex_dist": ex_dist, "n_bytes": n_bytes,
            "n_tokens": np.maximum(1, n_bytes // 4), "threshold": mu[-1].mean() + ex_off}


def _suite_rows(p: dict[str, np.ndarray], d: SuiteDesign, names: dict[str, list[str]], ts: str,
                rng: np.random.Generator) -> pd.DataFrame:
    """Every row of one test set: per-token loss, bpb, correct-choice probability, accuracy."""
    k_, d_, s_ = (a.ravel() for a in np.meshgrid(np.arange(d.n_scales), np.arange(d.n_dist), np.arange(d.n_seeds),
                                                  indexing="ij"))  # (R,) each
    run = p["mu"][k_, d_] + d.seed_sd * rng.normal(size=len(k_))  # (R,)
    loss = (run[:, None] + p["ex_off"][None] + p["ex_dist"][:, d_].T
            + d.noise_sd * rng.normal(size=(len(k_), d.n_examples)))  # (R, E)
    prob = 1.0 / (1.0 + np.exp(1.5 * (loss - p["threshold"][None])))  # higher loss, less likely correct
    n_r, n_e = loss.shape
    cat = pd.Categorical.from_codes
    return pd.DataFrame({
        "test_set": cat(np.zeros(n_r * n_e, dtype=np.int8), [ts]),
        "example_id": cat(np.tile(np.arange(n_e), n_r), names["examples"]),
        "distribution": cat(np.repeat(d_, n_e), names["dists"]), "model": cat(np.repeat(k_, n_e), names["models"]),
        "seed": np.repeat(s_, n_e).astype(np.int16), "loss": loss.ravel(),
        "n_tokens": np.tile(p["n_tokens"], n_r),
        "bpb": (loss * p["n_tokens"][None] / (np.log(2) * p["n_bytes"][None])).ravel(),
        "correct_prob": prob.ravel(), "correct": (rng.random(prob.shape) < prob).ravel().astype(np.float64)})


def make_synthetic_suite(seed: int, design: SuiteDesign = SuiteDesign()) -> dict[str, object]:
    """A suite whose results are built one test set at a time (``results``: test set -> loader).

    Returns ``results``, ``models``, ``distributions``, ``test_sets`` (the analysis inputs) and
    ``truth``: per test set × model × distribution the expected seed-mean per-token loss over
    this test set's examples (the cell mean without seed and per-row noise), which the
    analysis's points should recover."""
    rng = np.random.default_rng(seed)
    sizes = np.array(SUITE_SIZES if design.n_scales == len(SUITE_SIZES)
                     else np.geomspace(4e6, 1e9, design.n_scales).astype(np.int64))
    names = {"models": [f"s{i:02d}" for i in range(design.n_scales)],
             "dists": [f"d{i:02d}" for i in range(design.n_dist)],
             "examples": [f"ex{i}" for i in range(design.n_examples)]}
    ts_names = [f"task{i:02d}" for i in range(design.n_test_sets)]
    params = {ts: _suite_params(rng, design, sizes) for ts in ts_names}
    results = {ts: (lambda ts=ts, i=i: _suite_rows(params[ts], design, names, ts, np.random.default_rng([seed, i])))
               for i, ts in enumerate(ts_names)}
    models = pd.DataFrame({"model": names["models"], "kind": "neural", "params": sizes, "train_tokens": 100 * sizes,
                           "flops": [train_flops(int(s), int(100 * s)) for s in sizes],
                           "is_reference": np.arange(design.n_scales) == design.n_scales - 1,
                           "vocab_size": design.vocab_size})
    truth = pd.concat([pd.DataFrame({"test_set": ts, "model": np.repeat(names["models"], design.n_dist),
                                     "distribution": np.tile(names["dists"], design.n_scales),
                                     "loss": (p["mu"] + p["ex_off"].mean() + p["ex_dist"].mean(axis=0)[None]).ravel()})
                       for ts, p in params.items()], ignore_index=True)
    dists = pd.DataFrame({"distribution": names["dists"], "sources": [["web"]] * design.n_dist})
    test_sets = pd.DataFrame({"test_set": ts_names, "kind": "qa", "source": None})
    return {"results": results, "models": models, "distributions": dists, "test_sets": test_sets, "truth": truth}

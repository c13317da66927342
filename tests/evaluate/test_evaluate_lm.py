"""evaluate_lm: per-example losses equal a direct per-sequence loop and an analytic bigram model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxyscale.data import testset as tsm  # module import: pytest would try to collect a bare TestSet
from proxyscale.data.testset import Example, read_test_set, write_test_set
from proxyscale.errors import DataError
from proxyscale.evaluate.lm import evaluate_lm
from proxyscale.models.gpt import GPT, GPTConfig

torch.set_num_threads(1)
V = 23


def _random_set(kind: str, n: int, n_cands: int, seed: int) -> tsm.TestSet:
    rng = np.random.default_rng(seed)
    exs = []
    for i in range(n):
        cands, starts = [], []
        for _ in range(n_cands):
            L = int(rng.integers(3, 20))
            cands.append(tuple(int(t) for t in rng.integers(0, V, L)))
            starts.append(1 if kind == "lm" else int(rng.integers(1, L)))
        exs.append(Example(f"{kind}-{i}", tuple(cands), tuple(starts), int(rng.integers(0, n_cands))))
    return tsm.TestSet(kind, kind, tuple(exs))


def _direct(model: nn.Module, ex: Example) -> tuple[float, int, float]:
    """Loss sum and count of the correct candidate, and correctness, one sequence at a time."""
    means, sums, counts = [], [], []
    for cand, s in zip(ex.candidates, ex.pred_start):
        x = torch.tensor(cand)[None]
        with torch.no_grad():
            nll = F.cross_entropy(model(x[:, :-1])[0].float(), x[0, 1:], reduction="none")
        sums.append(float(nll[s - 1:].sum()))
        counts.append(len(cand) - s)
        means.append(sums[-1] / counts[-1])
    correct = float(int(np.argmin(means)) == ex.label) if len(means) > 1 else float("nan")
    return sums[ex.label], counts[ex.label], correct


@pytest.mark.parametrize("kind,n_cands,batch_size", [("lm", 1, 4), ("qa", 1, 32), ("choice", 4, 6), ("choice", 3, 1)])
def test_matches_direct_per_example_loop(tmp_path, kind, n_cands, batch_size):
    model = GPT(GPTConfig(V, 24, 32, 2, 4), torch.Generator().manual_seed(0))
    ts = _random_set(kind, 9, n_cands, seed=len(kind) + n_cands)
    write_test_set(ts, tmp_path / "t.parquet")
    df = evaluate_lm(model, read_test_set(tmp_path / "t.parquet"), batch_size=batch_size)
    assert list(df.columns) == ["example_id", "n_pred_tokens", "loss_sum", "loss", "correct"]
    assert list(df["example_id"]) == [e.example_id for e in ts.examples]
    for row, ex in zip(df.itertuples(), ts.examples):
        s, n, c = _direct(model, ex)
        assert row.n_pred_tokens == n
        assert row.loss_sum == pytest.approx(s, rel=1e-5, abs=1e-5)
        assert row.loss == pytest.approx(s / n, rel=1e-5, abs=1e-5)
        assert (np.isnan(row.correct) and np.isnan(c)) or row.correct == c


class Bigram(nn.Module):
    """logits[t] = table[x[t]]: the next-token distribution depends only on the current token."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_analytic_losses_and_accuracy_on_a_bigram_model():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(V, V)).astype(np.float32)
    logp = table - np.log(np.exp(table).sum(1, keepdims=True))
    best = logp.argmax(1)
    exs = []
    for i in range(6):
        ctx = [int(t) for t in rng.integers(0, V, 4)]
        good = ctx + [int(best[ctx[-1]])]
        bad = ctx + [int((best[ctx[-1]] + 1 + i) % V)]
        cands = (good, bad) if i % 2 == 0 else (bad, good)
        exs.append(Example(f"c{i}", (tuple(cands[0]), tuple(cands[1])), (4, 4), label=i % 2))
    df = evaluate_lm(Bigram(torch.from_numpy(table)), tsm.TestSet("mc", "choice", tuple(exs)), batch_size=3)
    assert df["correct"].tolist() == [1.0] * 6  # the argmax continuation always has the lowest loss
    for row, ex in zip(df.itertuples(), exs):
        c = ex.candidates[ex.label]
        assert row.loss_sum == pytest.approx(-logp[c[3], c[4]], rel=1e-5)
        assert row.n_pred_tokens == 1
    # Swap labels: now the model always picks the wrong ending.
    flipped = tuple(Example(e.example_id, e.candidates, e.pred_start, 1 - e.label) for e in exs)
    assert evaluate_lm(Bigram(torch.from_numpy(table)), tsm.TestSet("mc", "choice", flipped))["correct"].sum() == 0


def test_rejects_sequences_longer_than_the_context():
    model = GPT(GPTConfig(V, 8, 16, 1, 2))
    ts = tsm.TestSet("long", "lm", (Example("a", (tuple(range(12)),), (1,)),))
    with pytest.raises(DataError, match="reads at most 8"):
        evaluate_lm(model, ts)


def test_restores_training_mode():
    model = GPT(GPTConfig(V, 8, 16, 1, 2)).train()
    evaluate_lm(model, tsm.TestSet("s", "lm", (Example("a", ((1, 2, 3),), (1,)),)))
    assert model.training

"""DsDm: TRAK LM scores of pool windows toward target prediction tokens equal a brute-force
computation on a tiny GPT; weights are the mean over targets; top-n / bottom-n selections."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from proxyscale.errors import ConfigError
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.seeding import torch_gen
from proxyscale.select.dsdm import DsDmConfig, DsDmScorer, attributable, select_by_weights
from proxyscale.select.methods import defaults_of

CFG = GPTConfig(vocab_size=13, context=8, d_model=8, n_layers=1, n_heads=2)


def _log_odds(model, tokens, mask) -> torch.Tensor:
    """Mean over masked positions of log p/(1-p) of the true next token, in float64 (direct)."""
    p = torch.softmax(model(tokens.unsqueeze(0))[0, :-1].double(), -1)
    pt = p[torch.arange(len(tokens) - 1), tokens[1:]]
    return (torch.log(pt / (1 - pt)) * mask).sum() / mask.sum()


def _features(model, state, tokens, mask, proj) -> np.ndarray:
    model.load_state_dict(state)
    params = list(model.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(_log_odds(model, t, m), params)]).double().numpy()
            for t, m in zip(tokens, mask)]
    return np.stack(rows) @ proj


def _brute_weights(states, windows, targets, k, ratio=1.0, seed=0) -> np.ndarray:
    model = GPT(CFG)
    p = sum(v.numel() for v in model.parameters())
    tokens = torch.from_numpy(windows[:, :-1].astype(np.int64))
    mask = torch.ones(tokens.shape[0], tokens.shape[1] - 1)
    total = 0.0
    for m, state in enumerate(states):
        block = torch.randn(k, p, generator=torch_gen(seed, "projector", "gaussian", m, 0))
        proj = (block.T / math.sqrt(k)).double().numpy()
        phi = _features(model, state, tokens, mask, proj)
        phi_t = _features(model, state, *targets, proj)
        lam = ratio * np.mean(np.sum(phi ** 2, axis=1))
        total = total + phi @ np.linalg.inv(phi.T @ phi + lam * np.eye(k)) @ phi_t.T
    return (total / len(states)).mean(axis=1)


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 13, (20, 9), generator=g).numpy()  # (N, T+1): training windows
    t_tokens = torch.randint(0, 13, (4, 8), generator=g)
    t_mask = torch.zeros(4, 7)
    t_mask[:, 5:] = 1.0  # only the answer's tokens count, as for a QA / last-word target
    states = [GPT(CFG, generator=torch.Generator().manual_seed(s)).state_dict() for s in (1, 2)]
    return windows, (t_tokens, t_mask), states


def test_dsdm_weights_equal_brute_force(world, tmp_path):
    windows, targets, states = world
    scorer = DsDmScorer(GPT(CFG), DsDmConfig(k=8, projector="gaussian", batch_size=7), work_dir=tmp_path)
    scorer.featurize(states, windows)
    w = scorer.weights(targets)
    ref = _brute_weights(states, windows, targets, k=8)
    assert np.abs(w - ref).max() <= 1e-4 * np.abs(ref).max(), (w, ref)
    # one featurisation serves another target set, and the features are on disk (resumable)
    w2 = scorer.weights((targets[0][:2], targets[1][:2]), name="two")
    np.testing.assert_allclose(w2, _brute_weights(states, windows, (targets[0][:2], targets[1][:2]), k=8),
                               rtol=1e-4, atol=1e-4 * np.abs(w2).max())
    assert (tmp_path / "features").is_dir() and (tmp_path / "scores-two.npy").is_file()


def test_top_and_bottom_selections(world):
    ids = [f"c{i}" for i in range(6)]
    w = np.array([0.3, -1.0, 2.0, 0.3, 0.0, -0.5])
    top = select_by_weights(ids, w, 3, seed=0)
    bot = select_by_weights(ids, w, 2, seed=0, bottom=True)
    assert top.chosen_ids[0] == "c2" and set(top.chosen_ids) == {"c2", "c0", "c3"} and top.method == "dsdm"
    assert bot.chosen_ids == ["c1", "c5"] and bot.method == "bot-dsdm"
    with pytest.raises(ConfigError, match="not finite"):
        select_by_weights(ids, np.r_[w[:5], np.nan], 2, seed=0)


def test_windows_are_cut_to_what_the_model_reads():
    tokens, mask = attributable(np.arange(30).reshape(3, 10))
    assert tokens.shape == (3, 9) and mask.shape == (3, 8) and tokens.dtype == np.int64
    with pytest.raises(ConfigError, match="T\\+1"):
        attributable(np.zeros(5, dtype=np.int64))


def test_document_dsdm_through_the_cli_selects_toward_the_target(text_pool, tmp_path):
    """`proxyscale select --method dsdm/bot-dsdm` end to end on a tiny pool: proxies trained on the
    pool, TRAK toward the targets; DsDm and Bot-DsDm choose disjoint sets, reproducibly."""
    import subprocess
    import sys

    pool, target, code_ids = text_pool
    small = ["--set", "d_model=8", "--set", "n_heads=1", "--set", "models=2", "--set", "context=32",
             "--set", "vocab_size=300", "--set", "k=32", "--set", "tokens_per_param=5", "--set", "batch_size=16"]
    chosen, said = {}, {}
    for method in ("dsdm", "bot-dsdm", "dsdm", "random"):
        out = tmp_path / f"{method}-{len(chosen)}"
        res = subprocess.run([sys.executable, "-m", "proxyscale.cli", "select", "--method", method, "--pool", str(pool),
                              "--target", str(target), "--n", "10", "--id-field", "id", "--out", str(out),
                              *(small if method != "random" else ())], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        chosen[out.name] = (out / "chosen.txt").read_text().split()
        said[out.name] = res.stderr
    top, bottom, again, rand = chosen.values()
    assert top == again and not set(top) & set(bottom)
    assert len(set(top) & code_ids) > len(set(bottom) & code_ids)  # code targets: DsDm leans to code
    # what the user is told: the proxies against unigram, and the overlap with random's choice
    man = json.loads((tmp_path / "dsdm-0" / "manifest.json").read_text())
    loss, overlap = man["diagnostics"]["proxy_target_loss"], man["diagnostics"]["random_overlap"]
    assert len(loss["proxies"]) == 2 and loss["mean"] == pytest.approx(np.mean(loss["proxies"]), abs=1e-3)
    assert 0 < loss["mean"] < 3 * math.log(300) and 0 < loss["unigram"] < math.log(300)  # below uniform over V
    assert overlap == {"n": 10, "shared_with_random": len(set(top) & set(rand)),
                       "expected_by_chance": round(100 / man["n_pool"], 2)}
    lines = said["dsdm-0"].strip().splitlines()
    assert lines[0] == (f"dsdm: the proxies' loss on the target is {loss['mean']:.3f} nats/token; a unigram model "
                        f"of the pool gets {loss['unigram']:.3f}")
    assert lines[-1] == (f"dsdm: the selection shares {overlap['shared_with_random']} of its 10 documents with a "
                         f"random selection of the same size (chance alone: {100 / man['n_pool']:.1f})")
    beats = loss["mean"] < loss["unigram"]
    assert not beats  # proxies this small learn less than token frequencies: the user is told so
    assert len(lines) == 3 and lines[1].startswith("warning: dsdm: the proxies (") and "--set d_model=" in lines[1]
    assert man["warnings"] == [lines[1][len("warning: "):]]
    assert man["settings"] == {**defaults_of("dsdm"), "d_model": 8, "n_heads": 1, "models": 2, "context": 32,
                               "vocab_size": 300, "k": 32, "tokens_per_param": 5.0, "batch_size": 16}
    assert {"featurising", "proxy training", "TRAK featurisation", "scoring"} <= set(man["seconds"])


def test_unigram_loss_and_the_proxy_verdict(capsys):
    from proxyscale.select.dsdm_checks import report_proxies, target_mask, unigram_loss
    from proxyscale.select.progress import tracking

    pool = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])  # (N, T+1); the second has 2 real tokens, then padding
    lengths = np.array([4, 2])
    assert target_mask(pool, lengths).tolist() == [[True, True, True], [True, False, False]]
    target = np.array([[1, 2, 3, 0]])
    # counted next tokens: 1, 1, 2 and 2 → add-one over V=4: p = (0+1, 2+1, 2+1, 0+1) / 8
    expect = -np.mean(np.log([3 / 8, 1 / 8, 1 / 8]))  # the target's next tokens: 2, 3, 0
    assert unigram_loss(pool, lengths, target, np.array([4]), 4) == pytest.approx(expect, rel=1e-12)
    with tracking(False) as t:
        report_proxies([2.0, 2.2], 2.05)
    assert t.notes["proxy_target_loss"] == {"proxies": [2.0, 2.2], "mean": 2.1, "unigram": 2.05}
    assert t.warnings == ["dsdm: the proxies (2.100 nats/token on the target) do not beat a unigram model (2.050): "
                          "they learned too little for their scores to mean much; use larger proxies "
                          "(--set d_model=64) or more tokens (--set tokens_per_param=40, or a larger pool)"]
    assert capsys.readouterr().err.splitlines()[1] == f"warning: {t.warnings[0]}"
    with tracking(False) as t:
        report_proxies([1.0, 1.2], 2.05)
    assert t.warnings == [] and "warning" not in capsys.readouterr().err

"""Ladder size table: token budgets, 6PD compute and the paper's compute gaps."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from proxyscale.errors import ConfigError
from proxyscale.models.ladder import (
    PAPER_LM_LADDER,
    PAPER_VOCAB,
    compute_ratio,
    get_rung,
    param_count,
    train_flops,
    train_steps,
    train_tokens,
)


def _p(name: str) -> int:
    return get_rung(name).params(PAPER_VOCAB)


def test_train_tokens_rounds_up_to_whole_steps():
    P = 37_479_936
    batch_tokens = 256 * 1024
    D = train_tokens(P, 20.0, batch_tokens)
    assert D % batch_tokens == 0
    assert 20 * P <= D < 20 * P + batch_tokens
    assert train_steps(P, batch_tokens) == D // batch_tokens
    assert train_tokens(1000) == 20_000
    assert train_tokens(1000, 20.5, 7) == math.ceil(20_500 / 7) * 7


def test_flops_are_six_p_d():
    assert train_flops(10, 20) == 1200.0
    ref = _p("760M")
    assert train_flops(ref, train_tokens(ref)) == pytest.approx(6 * ref * 20 * ref)


def test_compute_gaps_of_the_paper_ladder():
    ref = _p("760M")
    # At exactly 20 tokens/param the gap is (P_ref/P_proxy)^2.
    for rung in PAPER_LM_LADDER:
        assert compute_ratio(ref, rung.params(PAPER_VOCAB)) == pytest.approx((ref / rung.params(PAPER_VOCAB)) ** 2)
    gap_37 = compute_ratio(ref, _p("37M"))
    assert gap_37 == pytest.approx(411.69, abs=0.01)
    # The SPEC's 370x matches the realised budgets (22.4 tokens/param on the 37M, 20.1 on the 760M).
    realised = compute_ratio(ref, _p("37M"), ref_tokens=20.1 * ref, proxy_tokens=22.4 * _p("37M"))
    assert realised == pytest.approx(370, rel=0.01)
    assert compute_ratio(ref, _p("350M")) == pytest.approx(4.56, abs=0.01)
    assert compute_ratio(ref, _p("125M")) == pytest.approx(36.8, abs=0.1)


def test_rungs_build_configs_and_reject_bad_input():
    cfg = get_rung("125M").config(PAPER_VOCAB)
    assert (cfg.d_model, cfg.n_layers, cfg.context) == (768, 12, 2048)
    assert param_count(cfg) == 125_311_488
    with pytest.raises(ConfigError, match="did you mean '125M'"):
        get_rung("125m")
    with pytest.raises(ConfigError):
        train_tokens(0)


def test_ladder_and_configs_import_without_torch():
    code = ("import sys; from proxyscale.models import GPTConfig, PAPER_LM_LADDER, train_tokens; "
            "from proxyscale.train import TrainConfig, lr_at; assert 'torch' not in sys.modules, 'torch loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)

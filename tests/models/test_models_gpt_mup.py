"""μP for the GPT: coordinate check (physics) and the `mup` package as an oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import oracle
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.train.loop import train_step
from proxyscale.train.optim import AdamW, TrainConfig, param_settings

torch.set_num_threads(1)
WIDTHS = (32, 64, 128, 256)


def _hidden_activations(model: GPT, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of each MLP up-projection and each block (the residual stream)."""
    out: dict[str, torch.Tensor] = {}
    hooks = []
    for i, b in enumerate(model.blocks):
        hooks.append(b.fc.register_forward_hook(lambda m, a, o, i=i: out.__setitem__(f"fc{i}", o.detach())))
        hooks.append(b.register_forward_hook(lambda m, a, o, i=i: out.__setitem__(f"block{i}", o.detach())))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def _mean_abs_change(mup: bool, width: int, seed: int, steps: int = 4, lr: float = 1e-2) -> dict[str, float]:
    cfg = GPTConfig(64, 32, width, 2, 4, mup=mup, mup_base_width=32)
    model = GPT(cfg, torch.Generator().manual_seed(seed))
    data = torch.randint(0, 64, (steps + 1, 8, 33), generator=torch.Generator().manual_seed(1000 + seed))
    tc = TrainConfig(lr=lr, weight_decay=0.0, grad_clip=0.0, device="cpu")
    opt = AdamW(dict(model.named_parameters()), param_settings(model), tc)
    probe = data[-1][:, :-1]
    before = _hidden_activations(model, probe)
    for s in range(steps):
        train_step(model, opt, data[s], lr, 0.0, None)  # constant LR, no clipping
    after = _hidden_activations(model, probe)
    return {k: (after[k] - before[k]).abs().mean().item() for k in before}


def _slopes(mup: bool) -> dict[str, float]:
    """Slope of log2 mean|Δactivation| against log2 width, per hidden layer (2 seeds averaged)."""
    per_width = {w: [_mean_abs_change(mup, w, s) for s in range(2)] for w in WIDTHS}
    keys = per_width[WIDTHS[0]][0]
    out = {}
    for k in keys:
        vals = [np.mean([r[k] for r in per_width[w]]) for w in WIDTHS]
        out[k] = float(np.polyfit(np.log2(WIDTHS), np.log2(vals), 1)[0])
    return out


def test_coordinate_check_mup_flat_standard_grows():
    # Measured: SP slopes 0.6-1.7 per doubling (update size grows with width under Adam at a
    # fixed LR); muP slopes -0.1 to -0.3 (flat, slightly shrinking at these small widths).
    sp, mu = _slopes(False), _slopes(True)
    assert min(sp.values()) > 0.4, sp
    assert max(abs(v) for v in mu.values()) < 0.45, mu
    assert np.mean(list(sp.values())) - np.mean(list(mu.values())) > 0.8, (sp, mu)


def test_param_roles_match_the_mup_package():
    mup = oracle("mup")

    def make(width: int) -> GPT:
        return GPT(GPTConfig(64, 16, width, 2, 4, mup=True, mup_base_width=32))

    model = make(128)
    mup.set_base_shapes(model, make(32), delta=make(64))
    ours = param_settings(model)
    for name, p in model.named_parameters():
        # mup's Adam rule: matrix-like (two infinite dims) parameters get lr / width_mult.
        expected = 1.0 / p.infshape.width_mult() if p.infshape.ninf() == 2 else 1.0
        assert ours[name][0] == pytest.approx(expected), name


def test_adam_update_matches_mup_muadamw():
    mup = oracle("mup")

    def make(width: int, seed: int) -> GPT:
        return GPT(GPTConfig(64, 16, width, 2, 4, mup=True, mup_base_width=32), torch.Generator().manual_seed(seed))

    ours, theirs = make(128, 0), make(128, 0)
    mup.set_base_shapes(theirs, make(32, 1), delta=make(64, 1), rescale_params=False)
    tc = TrainConfig(lr=3e-3, weight_decay=0.0, grad_clip=0.0, device="cpu")
    opt = AdamW(dict(ours.named_parameters()), param_settings(ours), tc)
    ref = mup.MuAdamW(theirs.parameters(), lr=3e-3, betas=tc.betas, eps=tc.eps, weight_decay=0.0)
    batch = torch.randint(0, 64, (3, 4, 17), generator=torch.Generator().manual_seed(2))
    for s in range(3):
        train_step(ours, opt, batch[s], 3e-3, 0.0, None)
        loss = torch.nn.functional.cross_entropy(theirs(batch[s][:, :-1]).reshape(-1, 64), batch[s][:, 1:].reshape(-1))
        loss.backward()
        ref.step()
        ref.zero_grad()
    for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)

"""μP: coordinate check (physics) and agreement with the `mup` package (oracle)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oracles import oracle
from proxyscale.data.vision import load_digits_data
from proxyscale.models.mlp import MLP, MLPBody, MLPConfig
from proxyscale.models.mup import infer_scalings, sgd_param_groups
from proxyscale.models.resnet import ResNet, ResNetBody, ResNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    d = load_digits_data(np.random.default_rng(0))
    return torch.tensor(d.x_train[:256]), torch.tensor(d.y_train[:256])


def _update_sizes(make, widths, x, y, names, lr=0.1, steps=3, seeds=(0, 1, 2)) -> dict[str, float]:
    """Slope of log2(mean |Δ activation|) against log2(width) after a few SGD steps, per layer."""
    sizes = np.zeros((len(widths), len(names)))
    for i, w in enumerate(widths):
        for seed in seeds:
            torch.manual_seed(seed)
            model = make(w)
            acts = {}
            mods = dict(model.named_modules())
            for n in names:
                mods[n].register_forward_hook(lambda m, a, out, n=n, acts=acts: acts.__setitem__(n, out.detach()))
            model(x)
            before = dict(acts)
            opt = torch.optim.SGD(sgd_param_groups(model, model.scalings, lr, 0.0), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
            model(x)
            sizes[i] += [(acts[n] - before[n]).abs().mean().item() / len(seeds) for n in names]
    logw = np.log2(widths)
    return {n: float(np.polyfit(logw, np.log2(sizes[:, j]), 1)[0]) for j, n in enumerate(names)}


def test_coord_check_mlp_flat_under_mup_growing_under_sp(digits):
    x, y = digits
    names = ["hidden.1", "hidden.2", "readout"]
    widths = [0.5, 1, 2, 4, 8]  # hidden 64 … 1024

    def make(mup):
        return lambda w: MLP(MLPConfig(width_mult=w, depth=3, mup=mup, base_width_mult=1.0))

    mup = _update_sizes(make(True), widths, x.flatten(1), y, names)
    sp = _update_sizes(make(False), widths, x.flatten(1), y, names)
    assert all(abs(s) < 0.2 for s in mup.values()), mup
    assert sp["readout"] > 0.35 and sp["hidden.2"] > 0.1, sp
    assert sp["readout"] - mup["readout"] > 0.4


def test_coord_check_resnet_flat_under_mup_growing_under_sp(digits):
    x, y = digits[0][:32], digits[1][:32]
    names = ["blocks.3", "blocks.7", "readout"]
    widths = [1 / 8, 1 / 4, 1 / 2]

    def make(mup):
        return lambda w: ResNet(ResNetConfig(width_mult=w, in_channels=1, strides=(1, 2, 2, 1), mup=mup,
                                             base_width_mult=1 / 8))

    mup = _update_sizes(make(True), widths, x, y, names, seeds=(0, 1))
    sp = _update_sizes(make(False), widths, x, y, names, seeds=(0, 1))
    assert all(abs(s) < 0.2 for s in mup.values()), mup
    assert sp["readout"] > 0.6 and sp["blocks.7"] > 0.1, sp


# -- oracle: the `mup` package applied to the same architecture ------------------------------------

def _mup_mirror(body, readout_name="readout"):
    """A copy of ``body`` whose readout is mup.MuReadout holding the same (SP-initialised) weights."""
    from mup import MuReadout

    mirror = copy.deepcopy(body)
    old = getattr(mirror, readout_name)
    new = MuReadout(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    setattr(mirror, readout_name, new)
    return mirror


def _check_against_mup(ours, body_cls, cfg, base_cfg, delta_cfg, forward, x):
    import mup

    torch.manual_seed(7)
    mirror = _mup_mirror(body_cls(cfg))  # default init from the same random stream as `ours`
    base, delta = body_cls(base_cfg), body_cls(delta_cfg)  # only their shapes matter
    mup.set_base_shapes(mirror, _mup_mirror(base), delta=_mup_mirror(delta))
    # 1. μP initialisation: identical tensors
    for (n, p), (n2, q) in zip(ours.named_parameters(), mirror.named_parameters()):
        assert n == n2
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    # 2. per-parameter learning rate and weight decay from MuSGD
    lr, wd = 0.05, 1e-3
    theirs = mup.MuSGD(mirror.parameters(), lr=lr, weight_decay=wd, momentum=0.9)
    their_lr = {id(p): (g["lr"], g["weight_decay"]) for g in theirs.param_groups for p in g["params"]}
    mine = torch.optim.SGD(sgd_param_groups(ours, ours.scalings, lr, wd), lr=lr, momentum=0.9)
    my_lr = {id(p): (g["lr"], g["weight_decay"]) for g in mine.param_groups for p in g["params"]}
    for p, q in zip(ours.parameters(), mirror.parameters()):
        assert my_lr[id(p)] == pytest.approx(their_lr[id(q)])
    assert len({v for v in my_lr.values()}) > 1  # the multipliers are not all trivial
    # 3. forward (readout multiplier) and two optimiser steps agree
    y = torch.arange(len(x)) % 10
    for _ in range(2):
        for opt, _model, fwd in ((mine, ours, ours), (theirs, mirror, lambda t: forward(mirror, t))):
            opt.zero_grad()
            F.cross_entropy(fwd(x), y).backward()
            opt.step()
    torch.testing.assert_close(ours(x), forward(mirror, x), rtol=1e-4, atol=1e-5)


def test_mlp_mup_matches_mup_package():
    oracle("mup")
    cfg = MLPConfig(width_mult=4.0, depth=2, mup=True, base_width_mult=1.0)
    torch.manual_seed(7)
    ours = MLP(cfg)

    def forward(m, t):
        h = t
        for layer in m.hidden:
            h = F.relu(layer(h))
        return m.readout(h)

    from dataclasses import replace
    _check_against_mup(ours, MLPBody, replace(cfg, mup=False), replace(cfg, width_mult=1.0, mup=False),
                       replace(cfg, width_mult=2.0, mup=False), forward, torch.randn(12, 64))


def test_resnet_mup_matches_mup_package():
    oracle("mup")
    from dataclasses import replace
    cfg = ResNetConfig(width_mult=1 / 4, in_channels=1, strides=(1, 2, 2, 1), mup=True, base_width_mult=1 / 16)
    torch.manual_seed(7)
    ours = ResNet(cfg)

    def forward(m, t):
        return m.readout(ResNet.features(m, t))

    plain = replace(cfg, mup=False)
    _check_against_mup(ours, ResNetBody, plain, replace(plain, width_mult=1 / 16), replace(plain, width_mult=1 / 8),
                       forward, torch.randn(6, 1, 8, 8))


def test_mup_at_base_width_is_standard_parametrisation():
    torch.manual_seed(1)
    a = MLP(MLPConfig(width_mult=1.0, mup=True, base_width_mult=1.0))
    torch.manual_seed(1)
    b = MLP(MLPConfig(width_mult=1.0, mup=False))
    x = torch.randn(5, 64)
    torch.testing.assert_close(a(x), b(x))
    assert all(s.lr_mult == 1.0 and s.wd_mult == 1.0 for s in a.scalings.values())
    kinds = {n: s.kind for n, s in a.scalings.items()}
    assert kinds == {"hidden.0.weight": "vector", "hidden.0.bias": "vector", "readout.weight": "vector",
                     "readout.bias": "fixed"}


def test_infer_scalings_classifies_shapes():
    shapes = {"w_in": (512, 3), "w_hid": (512, 256), "w_out": (10, 256), "b_out": (10,)}
    base = {"w_in": (64, 3), "w_hid": (64, 32), "w_out": (10, 32), "b_out": (10,)}
    delta = {"w_in": (128, 3), "w_hid": (128, 64), "w_out": (10, 64), "b_out": (10,)}
    s = infer_scalings(shapes, base, delta)
    assert (s["w_in"].kind, s["w_in"].lr_mult, s["w_in"].wd_mult) == ("vector", 8.0, 1 / 8)
    # fan-out grew 8x, fan-in 8x: ratio 1, plain learning rate
    assert (s["w_hid"].kind, s["w_hid"].lr_mult) == ("matrix", 1.0)
    assert (s["w_out"].kind, s["w_out"].width_mult) == ("vector", 8.0)
    assert s["b_out"].kind == "fixed"

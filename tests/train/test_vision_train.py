"""Vision training: one-cycle schedule, batch plans over masks, stacked (vmap) training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proxyscale.data.vision import load_digits_data
from proxyscale.errors import DataError, DivergedError
from proxyscale.models.mlp import MLP, MLPConfig
from proxyscale.models.mup import sgd_param_groups
from proxyscale.models.resnet import ResNetConfig
from proxyscale.store import load_weights
from proxyscale.train.vision import (
    VisionTrainConfig,
    batch_plan,
    checkpoint_steps,
    init_model,
    load_checkpoint,
    lr_schedule,
    predict_logits,
    save_checkpoints,
    train_models,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    d = load_digits_data(np.random.default_rng(0), n_train=400)
    return d.flat()


def test_one_cycle_schedule_shape():
    cfg = VisionTrainConfig(peak_lr=0.1, initial_lr=0.001, warmup_frac=0.05, final_lr=0.0)
    lrs = lr_schedule(200, cfg)
    assert lrs[0] == pytest.approx(0.001) and lrs[10] == pytest.approx(0.1)  # 5% of 200 = 10 steps
    assert np.all(np.diff(lrs[:11]) > 0) and np.all(np.diff(lrs[10:]) < 0)
    assert lrs.argmax() == 10 and 0 < lrs[-1] < 0.001  # last step still learns a little
    np.testing.assert_allclose(np.diff(lrs[10:]), np.diff(lrs[10:])[0])  # linear decay


def test_batch_plan_visits_each_subset_member_once_per_epoch():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 50), dtype=bool)
    masks[0, :20] = True
    masks[1, 10:40] = True  # a larger subset
    masks[2, ::7] = True
    idx, w = batch_plan(masks, epochs=2, batch_size=8, rngs=[np.random.default_rng(i) for i in range(3)])
    per_epoch = int(np.ceil(30 / 8))
    assert idx.shape[:2] == (3, 2 * per_epoch) and idx.shape == w.shape
    for e in range(3):
        for ep in range(2):
            sl = slice(ep * per_epoch, (ep + 1) * per_epoch)
            seen = idx[e, sl][w[e, sl] > 0]
            assert sorted(seen.tolist()) == np.flatnonzero(masks[e]).tolist()
    assert not np.array_equal(idx[0, :per_epoch], idx[0, per_epoch:])  # reshuffled each epoch
    with pytest.raises(DataError, match="empty"):
        batch_plan(np.zeros((1, 5), bool), 1, 2, [rng])


def test_equal_seeds_give_coupled_orders_on_different_subsets():
    a = np.zeros((1, 30), bool)
    a[0, :20] = True
    b = np.zeros((1, 30), bool)
    b[0, 10:] = True
    ia, wa = batch_plan(a, 1, 64, [np.random.default_rng(9)])
    ib, wb = batch_plan(b, 1, 64, [np.random.default_rng(9)])
    shared = set(range(10, 20))
    order_a = [i for i in ia[0, 0][wa[0, 0] > 0] if i in shared]
    order_b = [i for i in ib[0, 0][wb[0, 0] > 0] if i in shared]
    assert order_a == order_b and order_a != sorted(order_a)


def test_checkpoints_lie_in_last_third():
    assert checkpoint_steps(90, 1) == [90]
    steps = checkpoint_steps(90, 3)
    assert steps == [70, 80, 90]


def _masks(n, m, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((m, n), dtype=bool)
    for e in range(m):
        masks[e, rng.choice(n, n // 2, replace=False)] = True
    return masks


def test_vmap_and_loop_training_agree_and_learn(digits):
    cfg = VisionTrainConfig(epochs=8, batch_size=50, n_checkpoints=2)
    masks = _masks(digits.n_train, 3)
    a = train_models(MLPConfig(), cfg, digits.x_train, digits.y_train, masks, [11, 12, 13], vectorize=True)
    b = train_models(MLPConfig(), cfg, digits.x_train, digits.y_train, masks, [11, 12, 13], vectorize=False)
    for name in a.params:
        torch.testing.assert_close(a.params[name], b.params[name], rtol=1e-4, atol=1e-5)
    assert [s for s, _ in a.checkpoints] == [s for s, _ in b.checkpoints]
    acc = (predict_logits(MLPConfig(), a.params, digits.x_test).argmax(-1) == digits.y_test).mean(axis=1)
    assert acc.shape == (3,) and acc.min() > 0.85
    assert np.all(a.losses[:, -5:].mean(1) < a.losses[:, :5].mean(1) / 5)


def test_models_only_see_their_own_subset(digits):
    # corrupting every label outside model 0's subset must not change model 0 at all
    cfg = VisionTrainConfig(epochs=2, batch_size=64)
    masks = _masks(digits.n_train, 2, seed=1)
    y_bad = digits.y_train.copy()
    y_bad[~masks[0]] = (y_bad[~masks[0]] + 3) % 10
    a = train_models(MLPConfig(), cfg, digits.x_train, digits.y_train, masks, [5, 6])
    b = train_models(MLPConfig(), cfg, digits.x_train, y_bad, masks, [5, 6])
    for name in a.params:
        torch.testing.assert_close(a.params[name][0], b.params[name][0], rtol=0, atol=0)
    assert any(not torch.equal(a.params[n][1], b.params[n][1]) for n in a.params)


def test_functional_sgd_equals_torch_sgd_with_mup_groups(digits):
    # one full-batch step per epoch: the stacked trainer must reproduce torch.optim.SGD exactly
    mcfg = MLPConfig(width_mult=2.0, mup=True, base_width_mult=1.0)
    cfg = VisionTrainConfig(epochs=3, batch_size=digits.n_train, peak_lr=0.2, initial_lr=0.05, weight_decay=1e-2)
    res = train_models(mcfg, cfg, digits.x_train, digits.y_train, np.ones((1, digits.n_train), bool), [3])
    model = init_model(mcfg, 3)
    lrs = lr_schedule(3, cfg)
    groups = sgd_param_groups(model, model.scalings, 1.0, cfg.weight_decay)
    opt = torch.optim.SGD(groups, lr=1.0, momentum=cfg.momentum)
    x, y = torch.tensor(digits.x_train), torch.tensor(digits.y_train)
    for s in range(3):
        for g in opt.param_groups:
            g["lr"] = lrs[s] * g["lr_mult"]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(res.params[name][0], p.detach(), rtol=1e-5, atol=1e-6)


def test_same_seed_same_model_and_checkpoints_saved(tmp_path, digits):
    cfg = VisionTrainConfig(epochs=3, batch_size=100, n_checkpoints=2)
    masks = np.ones((2, digits.n_train), bool)
    a = train_models(MLPConfig(), cfg, digits.x_train, digits.y_train, masks, [1, 2])
    b = train_models(MLPConfig(), cfg, digits.x_train, digits.y_train, masks[:1], [1])
    torch.testing.assert_close(a.params["readout.weight"][0], b.params["readout.weight"][0])
    assert not torch.equal(a.params["readout.weight"][0], a.params["readout.weight"][1])
    paths = save_checkpoints(a, tmp_path, MLPConfig(), cfg, ["m0", "m1"])
    assert len(paths) == 4 and all(p.suffix == ".safetensors" for p in paths)
    last = load_weights(tmp_path / "m1" / "step-000012.safetensors")
    torch.testing.assert_close(last["hidden.0.weight"], a.params["hidden.0.weight"][1])
    model = MLP(MLPConfig())
    model.load_state_dict(last)  # a checkpoint is a plain state dict of the architecture
    cfg_back, state = load_checkpoint(tmp_path / "m0" / "step-000010.safetensors")
    assert cfg_back == MLPConfig() and set(state) == set(last)
    with pytest.raises(DataError, match="missing"):
        load_checkpoint(tmp_path / "m0" / "nope.safetensors")


def test_divergence_raises(digits):
    x = digits.x_train.copy()
    x[0, 0] = np.nan
    with pytest.raises(DivergedError, match="non-finite"):
        train_models(MLPConfig(), VisionTrainConfig(epochs=1, batch_size=400), x, digits.y_train,
                     np.ones((1, digits.n_train), bool), [0])


def test_resnet_trains_stacked(digits):
    d = load_digits_data(np.random.default_rng(0), n_train=200)
    mcfg = ResNetConfig(width_mult=1 / 16, in_channels=1, strides=(1, 2, 2, 1))
    cfg = VisionTrainConfig(epochs=4, batch_size=50)
    res = train_models(mcfg, cfg, d.x_train, d.y_train, np.ones((2, 200), bool), [0, 1], vectorize=True)
    assert res.params["stem.weight"].shape == (2, 4, 1, 3, 3)
    assert np.all(res.losses[:, -4:].mean(1) < res.losses[:, :4].mean(1))
    loop = predict_logits(mcfg, res.params, d.x_test[:20], vectorize=False)
    vec = predict_logits(mcfg, res.params, d.x_test[:20], vectorize=True)
    np.testing.assert_allclose(loop, vec, rtol=1e-4, atol=1e-4)

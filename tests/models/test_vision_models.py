"""ResNet-18 width ladder and MLP: parameter counts, shapes, per-example independence."""
from __future__ import annotations

import pytest
import torch

from proxyscale.config import from_dict
from proxyscale.errors import ConfigError
from proxyscale.models.mlp import MLP, MLPConfig
from proxyscale.models.resnet import ResNet, ResNetBody, ResNetConfig, count_params, strides_for

pytestmark = pytest.mark.usefixtures("one_thread")


def _resnet18_bn_count(w: float, in_ch: int = 3, n_classes: int = 10) -> int:
    """Independent count of the BatchNorm CIFAR ResNet-18 (affine norm: 2 values per channel)."""
    c = [round(64 * w), round(128 * w), round(256 * w), round(512 * w)]
    total = in_ch * c[0] * 9 + 2 * c[0]
    c_in = c[0]
    for i, c_out in enumerate(c):
        for b in range(2):
            cin_b = c_in if b == 0 else c_out
            total += cin_b * c_out * 9 + 2 * c_out + c_out * c_out * 9 + 2 * c_out
            if b == 0 and (i > 0):
                total += cin_b * c_out + 2 * c_out  # 1x1 projection shortcut
        c_in = c_out
    return total + c[3] * n_classes + n_classes


@pytest.mark.parametrize("w,expected", [(1 / 16, 44_622), (1.0, 11_173_962), (8.0, 714_211_850)])
def test_parameter_counts_match_spec(w, expected):
    # SPEC §5: 44.6K at w = 1/16 to 714M at w = 8 on CIFAR-10; 11.17M is the classic ResNet-18
    with torch.device("meta"):
        model = ResNetBody(ResNetConfig(width_mult=w))
    assert count_params(model) == expected == _resnet18_bn_count(w)


def test_resnet_shapes_and_strides_for_small_images():
    assert strides_for(32) == (1, 2, 2, 2) and strides_for(8) == (1, 2, 2, 1)
    cfg = ResNetConfig(width_mult=1 / 16, in_channels=1, strides=strides_for(8))
    model = ResNet(cfg)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert model.features(torch.randn(3, 1, 8, 8)).shape == (3, 32)
    assert ResNet(ResNetConfig(width_mult=1 / 16))(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_group_norm_keeps_examples_independent():
    # per-example gradients and vmap rely on an example's output not depending on its batch
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(width_mult=1 / 16, in_channels=1, strides=(1, 2, 2, 1)))
    x = torch.randn(6, 1, 8, 8)
    alone = model(x[:1])
    with_others = model(torch.cat([x[:1], 100 * x[1:]]))[:1]
    torch.testing.assert_close(alone, with_others, rtol=1e-5, atol=1e-5)
    assert not any(True for _ in model.buffers())  # no running statistics


def test_mlp_shapes_and_width():
    cfg = MLPConfig(width_mult=2.0, depth=2)
    model = MLP(cfg)
    assert cfg.width() == 256
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)  # images are flattened
    assert [tuple(p.shape) for p in model.parameters()] == [(256, 64), (256,), (256, 256), (256,), (10, 256), (10,)]


def test_readout_zero_init_and_config_errors():
    model = MLP(MLPConfig(readout_zero_init=True))
    assert torch.count_nonzero(model(torch.randn(2, 64))) == 0
    with pytest.raises(ConfigError, match="width_mult"):
        ResNetConfig(width_mult=0)
    with pytest.raises(ConfigError, match="strides"):
        ResNetConfig(strides=(1, 2, 3, 2))
    with pytest.raises(ConfigError, match="did you mean 'width_mult'"):
        from_dict(ResNetConfig, {"width_mul": 0.5})

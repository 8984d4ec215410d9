"""U-Net shapes over the whole depth × width grid, conditioning, parameter and FLOP counts."""

import pytest
import torch

from trainables.unet import UNet, UNetConfig, forward_flops, num_groups


def randomised(m):
    """Replace the zero initialisation of output layers, so every input matters."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_output_shape(depth, width):
    m = UNet(UNetConfig(depth=depth, width=width, attention=depth == 2))
    x = torch.randn(2, 1, 28, 28)
    assert m(x, torch.tensor([0, 99]), torch.tensor([3, 7])).shape == (2, 1, 28, 28)


def test_params_grow_with_width_and_depth():
    p = {(d, w): UNet(UNetConfig(depth=d, width=w)).num_params()
         for d in (1, 2, 3, 4) for w in (8, 16, 32, 64)}
    for d in (1, 2, 3, 4):
        assert p[d, 8] < p[d, 16] < p[d, 32] < p[d, 64]
    for w in (8, 16, 32, 64):
        assert p[1, w] < p[2, w] < p[3, w] < p[4, w]


def test_channels_and_null_label():
    cfg = UNetConfig(depth=3, width=32)
    assert cfg.channels == (32, 64, 128)  # the seed's reference model
    assert UNetConfig(depth=2, width=16, channel_mult=[1, 3]).channels == (16, 48)
    m = randomised(UNet(cfg)).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 10])
    null = m(x, t, torch.full((2,), cfg.null_label))
    assert torch.isfinite(null).all()
    assert not torch.allclose(null, m(x, t, torch.tensor([1, 1])))


def test_label_dropout_only_in_training():
    m = randomised(UNet(UNetConfig(depth=1, width=8, label_dropout=0.5)))
    x, t, y = torch.randn(64, 1, 28, 28), torch.full((64,), 5), torch.full((64,), 3)
    m.eval()
    torch.testing.assert_close(m(x, t, y), m(x, t, y))
    m.train()
    cond = m.eval()(x, t, y)
    m.train()
    assert not torch.allclose(m(x, t, y), cond)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 0}, "depth=0"), ({"depth": 5}, "depth=5"), ({"width": 4}, "width=4"),
    ({"width": 512}, "width=512"), ({"depth": 2, "channel_mult": (1, 2, 4)}, "channel_mult"),
    ({"label_dropout": 1.0}, "label_dropout"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_num_groups_divides_channels():
    for c in (8, 16, 24, 32, 48, 64, 96, 128, 256, 512):
        g = num_groups(c)
        assert c % g == 0 and c // g >= 4
    assert num_groups(16) == 4  # GroupNorm(32) would fail at width 16


def test_forward_flops_scale_with_width():
    f8 = forward_flops(UNet(UNetConfig(depth=2, width=8)))
    f16 = forward_flops(UNet(UNetConfig(depth=2, width=16)))
    assert f8 > 1e6 and 3 < f16 / f8 < 4.5  # convolutions dominate: ~4× per width doubling

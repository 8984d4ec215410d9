"""U-Net shapes over the whole depth × width grid, conditioning, parameter and FLOP counts."""

import pytest
import torch

from trainables.unet import UNet, UNetConfig, forward_flops, num_groups, timestep_embedding


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


def test_output_depends_on_the_timestep():
    """Same x_t and label, different t: a different ε (the time MLP reaches every block).

    With the small random weights of `randomised` the conditioning moves ε by 0.1-1% (the label
    too); float32 round-off in an eval forward is ~1e-7, so 1e-4 relative is a real change."""
    m = randomised(UNet(UNetConfig(depth=2, width=8))).eval()
    x, y = torch.randn(1, 1, 28, 28).expand(4, -1, -1, -1), torch.full((4,), 3)
    with torch.no_grad():
        eps = m(x, torch.tensor([0, 1, 500, 999]), y)
    for i in range(4):
        for j in range(i + 1, 4):
            assert (eps[i] - eps[j]).norm() > 1e-4 * eps[i].norm(), (i, j)
    # and only on t: the same t gives the same ε
    same = m(x, torch.full((4,), 7), y)
    torch.testing.assert_close(same[0], same[3])


def test_timestep_embedding_golden_values():
    """dim 4: half = 2 frequencies, f = (10000^0, 10000^-1/2) = (1, 0.01); the embedding is
    [cos(t), cos(t/100), sin(t), sin(t/100)]. Values written out by hand, not by torch."""
    emb = timestep_embedding(torch.tensor([0, 1, 100]), 4)
    golden = torch.tensor([
        [1.0, 1.0, 0.0, 0.0],
        [0.5403023058681398, 0.9999500004166653, 0.8414709848078965, 0.009999833334166664],
        [0.8623188722876839, 0.5403023058681398, -0.5063656411097588, 0.8414709848078965],
    ])
    torch.testing.assert_close(emb, golden, rtol=0, atol=1e-6)
    # another max_period: f = (1, 1/2) for max_period 4
    torch.testing.assert_close(timestep_embedding(torch.tensor([2]), 4, max_period=4.0),
                               torch.tensor([[-0.4161468365471424, 0.5403023058681398,
                                              0.9092974268256817, 0.8414709848078965]]),
                               rtol=0, atol=1e-6)
    # an odd dim keeps its size: the last column is zero (found: width 9 crashed the time MLP)
    odd = timestep_embedding(torch.tensor([0, 1, 100]), 5)
    assert odd.shape == (3, 5) and (odd[:, 4] == 0).all()
    torch.testing.assert_close(odd[:, :4], golden, rtol=0, atol=1e-6)


def test_odd_width_runs():
    m = UNet(UNetConfig(depth=2, width=9))
    assert m(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([3, 4])).shape \
        == (2, 1, 28, 28)

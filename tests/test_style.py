"""Style conditioning: the attribute functions on synthetic strokes of known shear and width,
the normaliser, the style-on U-Net and sampler, the search-space axis, and a short training run
whose samples follow the requested slant."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from study.presets import PRESETS
from study.search_space import SearchSpace
from trainables.config import TrialConfig
from trainables.data import Digits, Splits
from trainables.diffusion import DiffusionConfig, Schedule, guided_eps, training_losses
from trainables.sample import generate, style_sweep
from trainables.style import (
    STYLE_DIM,
    StyleNorm,
    slant,
    style_tensor,
    style_vectors,
    thickness,
)
from trainables.train_loop import LocalSession, fit, load_checkpoint
from trainables.unet import UNet, UNetConfig

SUPERSAMPLE = 4  # strokes are drawn on a 4× finer grid and averaged: anti-aliased like MNIST


def _canvas():
    c = (torch.arange(28 * SUPERSAMPLE, dtype=torch.float64) + 0.5) / SUPERSAMPLE - 0.5
    return c.view(1, -1), c.view(-1, 1)  # pixel coordinates x (1, W), y (H, 1)


def _render(mask: torch.Tensor) -> torch.Tensor:
    return (F.avg_pool2d(mask.double().unsqueeze(1), SUPERSAMPLE) * 2 - 1).float()


def strokes(shears, widths, height=16.0, cx=13.5, cy=13.5) -> torch.Tensor:
    """Vertical bars of the given horizontal widths, sheared so x moves by `shear` pixels per
    pixel upwards: (N, 1, 28, 28) in [-1, 1]."""
    xs, ys = _canvas()
    k = torch.as_tensor(shears, dtype=torch.float64).view(-1, 1, 1)
    w = torch.as_tensor(widths, dtype=torch.float64).view(-1, 1, 1)
    return _render(((xs - cx - k * (cy - ys)).abs() <= w / 2) & ((ys - cy).abs() <= height / 2))


def rings(widths, r=8.0, cx=13.5, cy=13.5) -> torch.Tensor:
    """Rings of the given stroke widths: no ends, so ink area ÷ half perimeter is the width."""
    xs, ys = _canvas()
    w = torch.as_tensor(widths, dtype=torch.float64).view(-1, 1, 1)
    return _render((((xs - cx) ** 2 + (ys - cy) ** 2).sqrt() - r).abs() <= w / 2)


def spearman(a, b) -> float:
    return float(pd.Series(list(map(float, a))).corr(pd.Series(list(map(float, b))),
                                                       method="spearman"))


# ----------------------------------------------------------------------------- attributes


def test_slant_recovers_known_shear():
    shears = torch.linspace(-0.6, 0.6, 7)
    measured = slant(strokes(shears, [2.5] * 7))
    assert torch.all(measured[1:] > measured[:-1])
    torch.testing.assert_close(measured, shears, atol=0.01, rtol=0)


def test_slant_of_real_digits_moves_by_an_applied_shear(digits_splits):
    x = digits_splits.train.images[:200]
    k = 0.3  # pixels per pixel; normalised coordinates keep the ratio on a square image
    theta = torch.tensor([[1.0, k, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    sheared = F.grid_sample(x + 1, grid, align_corners=False) - 1  # background stays -1
    shift = slant(sheared) - slant(x)
    assert shift.median().item() == pytest.approx(k, abs=0.03)
    assert (shift > 0).all()


def test_thickness_grows_with_stroke_width():
    widths = torch.tensor([2.0, 2.5, 3.0, 4.0, 5.0])
    ring = thickness(rings(widths))
    assert torch.all(ring[1:] > ring[:-1])
    torch.testing.assert_close(ring, widths, rtol=0.06, atol=0)  # a ring has no ends
    off_grid = thickness(rings(widths, cx=13.8, cy=13.1))  # position does not matter
    torch.testing.assert_close(off_grid, ring, rtol=0.03, atol=0)
    bar = thickness(strokes([0.0] * 5, widths))
    assert torch.all(bar[1:] > bar[:-1])
    # a bar of length L has ends: w·L / (L + w)
    torch.testing.assert_close(bar, widths * 16 / (16 + widths), rtol=0.06, atol=0)
    # slant does not change the measured thickness of a stroke of fixed horizontal width
    # beyond its true thinning (the perpendicular width is w / √(1 + k²))
    shears = torch.tensor([-0.5, 0.0, 0.5])
    sheared = thickness(strokes(shears, [3.0] * 3))
    expected = 3.0 / (1 + shears**2).sqrt() * 16 / 19
    torch.testing.assert_close(sheared, expected, rtol=0.05, atol=0)


def test_blank_images_have_zero_style():
    blank = -torch.ones(3, 1, 28, 28)
    v = style_vectors(blank)
    assert v.shape == (3, STYLE_DIM) and torch.equal(v.abs(), torch.zeros(3, STYLE_DIM))


def test_style_vectors_and_normaliser(digits_splits):
    raw = style_vectors(digits_splits.train.images, batch_size=500)  # several batches
    assert raw.shape == (len(digits_splits.train), STYLE_DIM) and torch.isfinite(raw).all()
    torch.testing.assert_close(raw[:10], torch.stack([slant(digits_splits.train.images[:10]),
                                                      thickness(digits_splits.train.images[:10])],
                                                     1))
    norm = StyleNorm.fit(raw)
    z = norm.encode(raw)
    torch.testing.assert_close(z.mean(0), torch.zeros(STYLE_DIM), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(STYLE_DIM), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.decode(z), raw, atol=1e-5, rtol=0)
    assert StyleNorm(**norm.to_dict()) == norm
    with pytest.raises(ValueError, match="std"):
        StyleNorm(mean=(0.0, 0.0), std=(1.0, 0.0))


def test_style_tensor():
    t = style_tensor({"slant": [-1.0, 0.0, 1.0], "thickness": 0.5}, 3)
    torch.testing.assert_close(t, torch.tensor([[-1.0, 0.5], [0.0, 0.5], [1.0, 0.5]]))
    assert torch.equal(style_tensor({"thickness": 2.0}, 2)[:, 0], torch.zeros(2))  # at the mean
    with pytest.raises(ValueError, match="slnt"):
        style_tensor({"slnt": 1.0}, 2)
    with pytest.raises(ValueError, match="2 values for 3 images"):
        style_tensor({"slant": [1.0, 2.0]}, 3)


# ----------------------------------------------------------------------------- model, sampler


def randomised(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m


def test_style_off_is_the_plain_model():
    plain, off = UNet(UNetConfig(depth=2, width=8)), UNet(UNetConfig(depth=2, width=8,
                                                                     style_dim=0))
    assert plain.num_params() == off.num_params()
    assert not any("style" in k for k in off.state_dict())
    with pytest.raises(ValueError, match="no style conditioning"):
        off(torch.randn(1, 1, 28, 28), torch.tensor([1]), torch.tensor([1]), torch.zeros(1, 2))


def test_style_unet_shapes_and_conditioning():
    cfg = UNetConfig(depth=2, width=8, style_dim=STYLE_DIM)
    m = randomised(UNet(cfg)).eval()
    cond_dim = 4 * cfg.width
    extra = (STYLE_DIM + 1) * cond_dim + (cond_dim + 1) * cond_dim + cond_dim  # MLP + null
    assert m.num_params() == UNet(UNetConfig(depth=2, width=8)).num_params() + extra
    x, t = torch.randn(4, 1, 28, 28), torch.full((4,), 10)
    y = torch.tensor([1, 1, cfg.null_label, cfg.null_label])
    s1, s2 = torch.zeros(4, STYLE_DIM), torch.tensor([[2.0, -1.0]] * 4)
    a, b = m(x, t, y, s1), m(x, t, y, s2)
    assert a.shape == (4, 1, 28, 28)
    assert not torch.allclose(a[:2], b[:2])  # the style matters with a label...
    torch.testing.assert_close(a[2:], b[2:])  # ...and a null label means no style
    none = m(x, t, y)  # no style: the null style everywhere
    assert not torch.allclose(none[:2], a[:2])
    torch.testing.assert_close(none[2:], a[2:])
    with pytest.raises(ValueError, match="shape"):
        m(x, t, y, torch.zeros(4, 3))


def test_style_dropout_only_in_training():
    cfg = UNetConfig(depth=1, width=8, style_dim=STYLE_DIM, label_dropout=0.0,
                     style_dropout=0.5)
    m = randomised(UNet(cfg))
    x, t, y, s = (torch.randn(64, 1, 28, 28), torch.full((64,), 5), torch.full((64,), 3),
                  torch.full((64, STYLE_DIM), 1.5))
    cond, null = m.eval()(x, t, y, s), m(x, t, y)
    out = m.train()(x, t, y, s)
    kept = torch.isclose(out, cond).flatten(1).all(1)
    dropped = torch.isclose(out, null).flatten(1).all(1)
    assert kept.any() and dropped.any() and (kept | dropped).all()


@pytest.mark.parametrize("kwargs, match", [({"style_dim": 3}, "style_dim=3"),
                                           ({"style_dropout": 1.0}, "style_dropout")])
def test_bad_style_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_style_config_roundtrip():
    cfg = TrialConfig.from_dict({"model": {"style_dim": STYLE_DIM, "style_dropout": 0.3}})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model.style_dim == 2 and UNetConfig().style_dim == 0  # off by default


def test_guidance_drops_label_and_style_together():
    m = randomised(UNet(UNetConfig(depth=1, width=8, style_dim=STYLE_DIM))).eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.full((3,), 7), torch.tensor([0, 4, 9])
    s = torch.tensor([[1.0, -1.0], [0.0, 2.0], [-2.0, 0.5]])
    null = torch.full_like(y, m.cfg.null_label)
    expected = 3.0 * m(x, t, y, s) - 2.0 * m(x, t, null)
    torch.testing.assert_close(guided_eps(m, x, t, y, 2.0, m.cfg.null_label, s), expected)
    torch.testing.assert_close(guided_eps(m, x, t, y, 0.0, m.cfg.null_label, s), m(x, t, y, s))
    sched = Schedule.from_config(DiffusionConfig(timesteps=50))
    losses, _ = training_losses(m, sched, x, y, style=s)
    assert losses.shape == (3,) and torch.isfinite(losses).all()


def test_generate_with_style():
    sched = Schedule.from_config(DiffusionConfig(timesteps=20))
    m = randomised(UNet(UNetConfig(depth=1, width=8, style_dim=STYLE_DIM)))
    images, labels = generate(m, sched, [3, 5], 2, steps=3, style={"slant": [0, 1, 2, 3]})
    assert images.shape == (4, 1, 28, 28) and labels.tolist() == [3, 3, 5, 5]
    # every level of a sweep starts from the same noise: equal levels give equal images
    columns, labels = style_sweep(m, sched, "slant", [0.5, 0.5, -2.0], digits=[1, 7],
                                  steps=3)
    assert columns.shape == (3, 2, 1, 28, 28)
    torch.testing.assert_close(columns[0], columns[1])
    assert not torch.allclose(columns[0], columns[2])
    with pytest.raises(ValueError, match="without style"):
        generate(UNet(UNetConfig(depth=1, width=8)), sched, [1], 1, steps=2,
                 style={"slant": 1.0})


def test_train_cli_style_flag():
    from trainables.train import config_from_args, parse_args

    on = config_from_args(parse_args(["--dataset", "digits", "--style"]))
    off = config_from_args(parse_args(["--dataset", "digits"]))
    assert on.model.style_dim == STYLE_DIM and off.model.style_dim == 0


# ----------------------------------------------------------------------------- search space


def test_search_space_style_axis(tmp_path):
    assert all(p.space.style == (False,) for p in PRESETS.values())  # presets unchanged: off
    f = tmp_path / "space.yaml"
    f.write_text("style: [false, true]\n")
    space = PRESETS["cpu"].space.override(f)
    assert space.style == (False, True) and space.to_dict()["style"] == [False, True]
    assert SearchSpace(**space.to_dict()) == space  # study.json round trip
    with pytest.raises(ValueError, match="style choices"):
        SearchSpace(style=("yes",))
    with pytest.raises(ValueError, match="style choices"):
        SearchSpace(style=())


def test_to_tune_has_the_style_axis():
    space = SearchSpace(style=(False, True)).to_tune()
    assert sorted(space["style"].categories) == [False, True]


# ----------------------------------------------------------------------------- training


def _synthetic_strokes(n: int, seed: int = 0) -> Digits:
    """Strokes of random shear and width under random labels: style is all there is to learn."""
    g = torch.Generator().manual_seed(seed)
    shears, widths = torch.rand(n, generator=g) * 1.2 - 0.6, torch.rand(n, generator=g) * 3 + 1.5
    return Digits(strokes(shears, widths), torch.randint(0, 10, (n,), generator=g))


def test_fit_saves_the_style_normaliser(tmp_path, digits_splits):
    train = Digits(digits_splits.train.images[:256], digits_splits.train.labels[:256])
    splits = Splits(train, digits_splits.val, "digits subset", "subset")
    cfg = TrialConfig.from_dict({"data": {"dataset": "digits"},
                                 "model": {"depth": 1, "width": 8, "style_dim": STYLE_DIM},
                                 "diffusion": {"timesteps": 20},
                                 "train": {"batch_size": 64, "epochs": 1, "val_size": 64}})
    r = fit(cfg, LocalSession(tmp_path, verbose=False), splits)
    expected = StyleNorm.fit(style_vectors(train.images))
    assert r.style_norm == expected
    loaded_cfg, _, ema, ckpt = load_checkpoint(tmp_path)
    assert loaded_cfg.model.style_dim == STYLE_DIM
    assert StyleNorm(**ckpt["style_norm"]) == expected
    x, t, y, s = torch.randn(2, 1, 28, 28), torch.tensor([3, 4]), torch.tensor([1, 2]), \
        torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(ema(x, t, y, s), r.ema.eval()(x, t, y, s))


@pytest.mark.slow
def test_short_training_follows_the_requested_slant(tmp_path):
    """About 50 s on 2 CPU cores: 320 steps on strokes whose slant is all there is to learn
    (measured here: Spearman 0.53, mean measured slant −0.18 → +0.68 from level −2 to +2)."""
    train, val = _synthetic_strokes(1000), _synthetic_strokes(64, seed=1)
    splits = Splits(train, val, "synthetic strokes", "strokes")
    cfg = TrialConfig.from_dict({"data": {"dataset": "digits"},  # unused: splits are given
                                 "model": {"depth": 2, "width": 16, "style_dim": STYLE_DIM},
                                 "diffusion": {"timesteps": 50},
                                 "train": {"batch_size": 64, "lr": 3e-3, "epochs": 100,
                                           "max_steps": 320, "val_size": 64,
                                           "early_stop_patience": None}})
    r = fit(cfg, LocalSession(tmp_path, verbose=False), splits)
    assert r.stop_reason == "step_budget"
    levels = [-2.0, -1.0, 0.0, 1.0, 2.0]
    columns, labels = style_sweep(r.ema, Schedule.from_config(cfg.diffusion), "slant", levels,
                                  n_per_digit=3, guidance=2.0, steps=10)
    measured = r.style_norm.encode(style_vectors(columns.flatten(0, 1)))[:, 0]
    requested = torch.tensor(levels).repeat_interleave(len(labels))
    rho = spearman(requested, measured)
    means = measured.view(len(levels), -1).mean(1)
    assert rho > 0.3, (rho, means)
    assert means[-1] > means[0] + 0.4, means

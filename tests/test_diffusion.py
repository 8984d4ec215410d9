"""Diffusion maths: schedule properties, golden values, sampler identities, CFG batching."""

import math

import pytest
import torch

from trainables.diffusion import (
    MAX_TIMESTEPS,
    MIN_TIMESTEPS,
    DiffusionConfig,
    Schedule,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    guided_eps,
    make_betas,
    q_sample,
    sample,
    training_losses,
)

OFFERED_T = (MIN_TIMESTEPS, 50, 100, 250, 1000, MAX_TIMESTEPS)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", OFFERED_T)
def test_schedule_ends_in_noise(schedule, T):
    s = Schedule.from_config(DiffusionConfig(timesteps=T, schedule=schedule))
    assert s.alphas_cumprod[-1] < 1e-3
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])  # strictly decreasing
    assert torch.all((s.betas > 0) & (s.betas < 1))


def test_unscaled_textbook_schedule_would_not_reach_noise():
    # Why make_betas scales to T: 1e-4 → 0.02 over 100 steps leaves ᾱ_T ≈ 0.36.
    textbook = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)
    assert textbook[-1] == pytest.approx(0.364, abs=0.01)


def test_linear_golden_values():
    b = make_betas(100, "linear")
    assert b[0].item() == pytest.approx(1e-3)
    assert b[-1].item() == pytest.approx(0.2)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="timesteps=5"):
        DiffusionConfig(timesteps=5)
    with pytest.raises(ValueError, match="schedule"):
        DiffusionConfig(schedule="quadratic")


def test_posterior_variance():
    s = Schedule.from_config(DiffusionConfig(timesteps=100))
    assert s.posterior_variance[0] == 0
    # β̃_t ≤ β_t, and the DDPM eq. 7 closed form at one t
    assert torch.all(s.posterior_variance <= s.betas)
    t = 37
    expected = s.betas[t] * (1 - s.alphas_cumprod[t - 1]) / (1 - s.alphas_cumprod[t])
    assert s.posterior_variance[t].item() == pytest.approx(expected.item())


def test_q_sample_statistics():
    s = Schedule.from_config(DiffusionConfig(timesteps=100))
    t = 30
    x0 = torch.full((20000, 1, 2, 2), 0.5)
    xt = q_sample(s, x0, torch.full((20000,), t), torch.randn_like(x0))
    a = s.alphas_cumprod[t].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(a) * 0.5, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - a, rel=0.03)


def test_matches_diffusers_scheduler():
    """Independent check of betas, ᾱ and β̃ against diffusers' DDPMScheduler."""
    diffusers = pytest.importorskip("diffusers")
    T = 100
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=1e-4 * 1000 / T,
                                  beta_end=0.02 * 1000 / T, beta_schedule="linear")
    s = Schedule.from_config(DiffusionConfig(timesteps=T))
    torch.testing.assert_close(s.betas.float(), ref.betas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-7)
    for t in (1, 10, 50, 99):
        assert s.posterior_variance[t].item() == pytest.approx(ref._get_variance(t).item(),
                                                               rel=1e-4)
    cos = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    c = Schedule.from_config(DiffusionConfig(timesteps=T, schedule="cosine"))
    torch.testing.assert_close(c.betas.float(), cos.betas, rtol=1e-4, atol=1e-6)


def test_ddpm_step_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    T = 100
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=0.001, beta_end=0.2,
                                  clip_sample=True, variance_type="fixed_small")
    s = Schedule.from_config(DiffusionConfig(timesteps=T))
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for t in (0, 5, 60, 99):
        # diffusers draws its noise with torch.randn from the generator: draw the same here
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(s, x, t, eps, noise)
        theirs = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_ddim_eta1_equals_ddpm_step():
    s = Schedule.from_config(DiffusionConfig(timesteps=100))
    x, eps, z = torch.randn(3, 1, 6, 6), torch.randn(3, 1, 6, 6), torch.randn(3, 1, 6, 6)
    for t in (1, 2, 50, 99):
        for clip in (True, False):
            torch.testing.assert_close(ddim_step(s, x, t, t - 1, eps, z, eta=1.0, clip=clip),
                                       ddpm_step(s, x, t, eps, z, clip=clip))


class ToyEps(torch.nn.Module):
    """A label-dependent, deterministic ε-model for sampler tests."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 1)
        torch.nn.init.normal_(self.emb.weight)

    def forward(self, x, t, y):
        return 0.3 * x + self.emb(y)[:, :, None, None] + 0.001 * t[:, None, None, None]


def test_full_sampler_ddim_k_equals_T_eta1_is_ddpm():
    s = Schedule.from_config(DiffusionConfig(timesteps=50))
    m, y = ToyEps(), torch.arange(4)
    a = sample(m, s, y, null_label=10, guidance=1.5, sampler="ddpm", image_shape=(1, 4, 4),
               generator=torch.Generator().manual_seed(3))
    b = sample(m, s, y, null_label=10, guidance=1.5, sampler="ddim", steps=50, eta=1.0,
               image_shape=(1, 4, 4), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_guidance_zero_is_conditional_and_batched_cfg_equals_two_forwards():
    m = ToyEps()
    x, t, y = torch.randn(5, 1, 4, 4), torch.randint(0, 100, (5,)), torch.arange(5)
    torch.testing.assert_close(guided_eps(m, x, t, y, 0.0, 10), m(x, t, y))
    w = 2.5
    two = (1 + w) * m(x, t, y) - w * m(x, t, torch.full_like(y, 10))
    torch.testing.assert_close(guided_eps(m, x, t, y, w, 10), two)


def test_sliced_forwards_give_the_same_samples_and_calls_stay_under_max_batch():
    """CPU sampling passes the model at most `max_batch` images per call (smaller batches are
    faster there); the images, noise stream included, must not depend on it."""
    calls = []

    class Counting(ToyEps):
        def forward(self, x, t, y):
            calls.append(len(x))
            return super().forward(x, t, y)

    s = Schedule.from_config(DiffusionConfig(timesteps=20))
    m, y = Counting(), torch.arange(10).repeat(3)
    kw = dict(null_label=10, guidance=2.0, steps=5, eta=1.0, image_shape=(1, 4, 4))
    whole = sample(m, s, y, generator=torch.Generator().manual_seed(4), **kw)
    assert calls == [60] * 5
    calls.clear()
    sliced = sample(m, s, y, generator=torch.Generator().manual_seed(4), max_batch=25, **kw)
    assert calls == [25, 25, 10] * 5
    torch.testing.assert_close(whole, sliced)


def test_ddim_timesteps():
    assert ddim_timesteps(100, 100) == list(range(99, -1, -1))
    ts = ddim_timesteps(100, 10)
    assert ts[0] == 99 and ts[-1] == 0 and len(ts) == 10 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="steps=0"):
        ddim_timesteps(100, 0)


def test_sampling_is_seeded_and_returns_trajectory():
    s = Schedule.from_config(DiffusionConfig(timesteps=20))
    m, y = ToyEps(), torch.arange(3)
    kw = dict(null_label=10, steps=5, image_shape=(1, 4, 4))
    a, traj = sample(m, s, y, generator=torch.Generator().manual_seed(1), return_trajectory=True,
                     **kw)
    b = sample(m, s, y, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(a, b)
    assert len(traj) == 6 and torch.equal(traj[-1], a)
    assert a.abs().max() <= 1 + 1e-6  # clipped x̂_0 keeps the final sample in range


def test_training_loss_of_perfect_model_is_zero():
    s = Schedule.from_config(DiffusionConfig(timesteps=100))
    x0, noise = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    oracle = lambda xt, t, y: noise  # noqa: E731
    losses, t = training_losses(oracle, s, x0, torch.zeros(8, dtype=torch.long), noise=noise)
    assert losses.shape == (8,) and torch.all(losses == 0) and t.max() < 100

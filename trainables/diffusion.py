"""DDPM maths as plain tensor functions: noise schedules, the forward process, the training
loss and the DDPM / DDIM samplers with classifier-free guidance.

Nothing here knows about a particular network: a "model" is any callable
``model(x_t, t, labels) -> eps``, or ``model(x_t, t, labels, style) -> eps`` when a style
(B, style_dim) is passed; without one the model is called with three arguments. Notation
follows Ho et al. 2020 (DDPM) and Song et al. 2021 (DDIM): ``betas``, ``alphas_cumprod`` (ᾱ_t),
``x_start`` (x_0), ``q_sample``.

Guidance convention (Ho & Salimans 2022), with w = 0 meaning plain conditional sampling::

    eps = (1 + w) * eps_cond - w * eps_uncond

With a style, the unconditional branch gets the null label and the same style tensor; the model
reads a null label as "no style" too (``UNet.style_embedding``), so guidance pushes towards the
digit and the style together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F

EpsModel = Callable[..., torch.Tensor]  # (x_t, t, labels[, style]) -> eps

#: Smallest and largest number of diffusion steps offered; the schedules are tested over it.
MIN_TIMESTEPS, MAX_TIMESTEPS = 20, 4000


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 100  # T, the number of forward-process steps (the seed used 100)
    schedule: Literal["linear", "cosine"] = "linear"  # beta schedule, see make_betas

    def __post_init__(self):
        if not MIN_TIMESTEPS <= self.timesteps <= MAX_TIMESTEPS:
            raise ValueError(
                f"timesteps={self.timesteps} is outside [{MIN_TIMESTEPS}, {MAX_TIMESTEPS}]"
            )
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule={self.schedule!r}: use 'linear' or 'cosine'")

    def to_dict(self) -> dict:
        return asdict(self)


def make_betas(timesteps: int, schedule: str = "linear") -> torch.Tensor:
    """β_1..β_T in float64.

    The linear schedule is scaled to T as in improved-diffusion: the textbook 1e-4 → 0.02 was
    made for T = 1000, and at T = 100 it leaves ᾱ_T ≈ 0.36, so x_T is far from the N(0, I) the
    sampler starts from. Cosine follows Nichol & Dhariwal 2021, eq. 17.
    """
    if schedule == "linear":
        scale = 1000.0 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    elif schedule == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - f[1:] / f[:-1]
    else:
        raise ValueError(f"unknown schedule {schedule!r}: use 'linear' or 'cosine'")
    return betas.clamp(max=0.999)


@dataclass(frozen=True)
class Schedule:
    """Precomputed per-step constants, all float64 of shape (T,)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor  # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), DDPM eq. 7

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> Schedule:
        betas = make_betas(cfg.timesteps, cfg.schedule)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1 - prev) / (1 - alphas_cumprod)
        return cls(betas, alphas_cumprod, prev, posterior_variance)

    def to(self, device) -> Schedule:
        """The same constants on `device`, so a training step does not copy them there each
        time (which a CUDA graph cannot do at all)."""
        return Schedule(*(getattr(self, f.name).to(device) for f in fields(self)))


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast over an image batch like `like`."""
    out = values.to(like.device)[t].to(like.dtype)
    return out.view(-1, *([1] * (like.dim() - 1)))


def q_sample(sched: Schedule, x_start, t, noise) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)  (DDPM eq. 4)."""
    a = _at(sched.alphas_cumprod, t, x_start)
    return a.sqrt() * x_start + (1 - a).sqrt() * noise


def _eps(model: EpsModel, x, t, labels, style, max_batch: int | None = None) -> torch.Tensor:
    """model(x_t, t, labels[, style]), in slices of at most `max_batch` images when given."""
    if max_batch is not None and len(x) > max_batch:
        return torch.cat([_eps(model, *(v[i:i + max_batch] if v is not None else None
                                        for v in (x, t, labels, style)))
                          for i in range(0, len(x), max_batch)])
    return model(x, t, labels) if style is None else model(x, t, labels, style)


def training_losses(model: EpsModel, sched: Schedule, x_start, labels, t=None, noise=None,
                    generator: torch.Generator | None = None,
                    style: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ε-prediction MSE (DDPM eq. 14) with t ~ U{0..T-1}; returns (losses, t)."""
    b = x_start.shape[0]
    if t is None:
        t = torch.randint(0, sched.timesteps, (b,), device=x_start.device, generator=generator)
    if noise is None:
        noise = torch.randn(x_start.shape, device=x_start.device, generator=generator)
    eps = _eps(model, q_sample(sched, x_start, t, noise), t, labels, style)
    return F.mse_loss(eps.float(), noise, reduction="none").mean(dim=(1, 2, 3)), t


def guided_eps(model: EpsModel, x, t, labels, guidance: float, null_label: int,
               style: torch.Tensor | None = None, max_batch: int | None = None) -> torch.Tensor:
    """Classifier-free guided ε: conditional and null labels stacked into one batch, passed to
    the model in slices of at most `max_batch` images (all at once when None)."""
    if guidance == 0:
        return _eps(model, x, t, labels, style, max_batch)
    null = torch.full_like(labels, null_label)
    both_style = None if style is None else torch.cat([style, style])  # null label: no style
    eps_cond, eps_uncond = _eps(model, torch.cat([x, x]), torch.cat([t, t]),
                                torch.cat([labels, null]), both_style, max_batch).chunk(2)
    return (1 + guidance) * eps_cond - guidance * eps_uncond


def predict_x_start(sched: Schedule, x_t, t, eps, clip: bool = True) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, optionally clipped to the data range [-1, 1]."""
    a = _at(sched.alphas_cumprod, t, x_t)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    return x0.clamp(-1, 1) if clip else x0


def ddpm_step(sched: Schedule, x_t, t: int, eps, noise, clip: bool = True) -> torch.Tensor:
    """One ancestral step x_t → x_{t−1} from the posterior q(x_{t−1} | x_t, x̂_0) (DDPM eq. 6-7)."""
    tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    x0 = predict_x_start(sched, x_t, tt, eps, clip)
    beta, a, a_prev = (float(v[t]) for v in (sched.betas, sched.alphas_cumprod,
                                               sched.alphas_cumprod_prev))
    coef_x0 = math.sqrt(a_prev) * beta / (1 - a)
    coef_xt = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
    mean = coef_x0 * x0 + coef_xt * x_t
    if t == 0:
        return mean
    return mean + math.sqrt(float(sched.posterior_variance[t])) * noise


def ddim_step(sched: Schedule, x_t, t: int, t_prev: int, eps, noise, eta: float = 0.0,
              clip: bool = True) -> torch.Tensor:
    """One DDIM step x_t → x_{t_prev} (Song et al. eq. 12); t_prev = -1 means x_0.

    With η = 1 and t_prev = t − 1 this is the DDPM step with variance β̃_t.
    """
    tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    x0 = predict_x_start(sched, x_t, tt, eps, clip)
    a = float(sched.alphas_cumprod[t])
    a_prev = float(sched.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    # ε consistent with the (possibly clipped) x̂_0, so both samplers share one posterior.
    eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
    return x_prev + sigma * noise if sigma > 0 else x_prev


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T−1 down to 0."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampler steps={steps} must be in [1, T={timesteps}]")
    return sorted({round(v) for v in torch.linspace(0, timesteps - 1, steps).tolist()},
                  reverse=True)


@torch.no_grad()
def sample(model: EpsModel, sched: Schedule, labels: torch.Tensor, *, null_label: int,
           guidance: float = 0.0, sampler: Literal["ddpm", "ddim"] = "ddim",
           steps: int | None = None, eta: float = 1.0, generator: torch.Generator | None = None,
           image_shape=(1, 28, 28), clip: bool = True, return_trajectory: bool = False,
           style: torch.Tensor | None = None, max_batch: int | None = None):
    """Generate one image per label (and per style row, when given), from x_T ~ N(0, I).

    Noise is drawn on the CPU from `generator`, so a seed gives the same images on any device,
    and whatever `max_batch` (the most images per model call; all at once when None) is.
    Returns x_0, or (x_0, trajectory) where trajectory[i] is the batch after i denoising steps
    (trajectory[0] is the starting noise), on the CPU.
    """
    device = labels.device
    b = labels.shape[0]

    def randn():
        return torch.randn((b, *image_shape), generator=generator).to(device)

    x = randn()
    trajectory = [x.cpu()] if return_trajectory else None
    if sampler == "ddpm":
        ts = list(range(sched.timesteps - 1, -1, -1))
    elif sampler == "ddim":
        ts = ddim_timesteps(sched.timesteps, steps or sched.timesteps)
    else:
        raise ValueError(f"unknown sampler {sampler!r}: use 'ddpm' or 'ddim'")
    for i, t in enumerate(ts):
        tt = torch.full((b,), t, device=device, dtype=torch.long)
        eps = guided_eps(model, x, tt, labels, guidance, null_label, style, max_batch).float()
        if sampler == "ddpm":
            x = ddpm_step(sched, x, t, eps, randn() if t > 0 else None, clip)
        else:
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            noise = randn() if eta > 0 and t_prev >= 0 else None
            x = ddim_step(sched, x, t, t_prev, eps, noise, eta, clip)
        if return_trajectory:
            trajectory.append(x.cpu())
    return (x, trajectory) if return_trajectory else x

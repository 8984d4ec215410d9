"""A small class-conditional U-Net for 28×28 digits: ``UNet(x_t, t, labels) -> eps``.

The network knows nothing of noise schedules (see ``diffusion.py``). Conditioning follows DiT's
``LabelEmbedder``: ``nn.Embedding(num_classes + 1, dim)`` whose extra index is the null label of
classifier-free guidance, with label dropout applied inside the module while training. Time and
label embeddings are summed and enter every residual block as a FiLM scale/shift.

Optionally (``style_dim=2``) the model also conditions on a style vector (slant and thickness
standard scores, see ``style.py``): a small MLP embedding added to the same sum, with a learned
null style for style dropout. A null label implies the null style, so the unconditional branch of
guidance is one input with nothing kept, and a style-on model without a style samples over all
styles of the digit.

    model = UNet(UNetConfig(depth=3, width=32))   # channels (32, 64, 128), the seed's reference
    eps = model(x_t, t, labels)                   # (B, 1, 28, 28)
    eps = UNet(UNetConfig(style_dim=2))(x_t, t, labels, style)   # style (B, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.style import STYLE_DIM, STYLE_NAMES

MAX_DEPTH = 4
MIN_WIDTH, MAX_WIDTH = 8, 256


@dataclass(frozen=True)
class UNetConfig:
    depth: int = 3  # number of resolution levels (1-4); 28 → 14 → 7 → 4 (padded to 32)
    width: int = 32  # base channels at the first level (8-256)
    channel_mult: tuple[int, ...] | None = None  # per-level multipliers; None = doubling
    attention: bool = False  # self-attention at the lowest resolution
    num_classes: int = 10  # labels 0..num_classes-1; index num_classes is the null label
    label_dropout: float = 0.1  # probability of the null label in training (for CFG)
    style_dim: int = 0  # 0: digit only; STYLE_DIM (2): also slant and thickness (style.py)
    # probability of the null style in training, on top of the dropped labels (which drop the
    # style too): it trains the (digit, any style) input that sampling without a style uses
    style_dropout: float = 0.2
    image_size: int = 28
    in_channels: int = 1

    def __post_init__(self):
        if self.channel_mult is not None:
            object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth={self.depth} is outside [1, {MAX_DEPTH}]")
        if not MIN_WIDTH <= self.width <= MAX_WIDTH:
            raise ValueError(f"width={self.width} is outside [{MIN_WIDTH}, {MAX_WIDTH}]")
        if self.channel_mult is not None and len(self.channel_mult) != self.depth:
            raise ValueError(
                f"channel_mult={self.channel_mult} needs one entry per level (depth={self.depth})"
            )
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout={self.label_dropout} must be in [0, 1)")
        if self.style_dim not in (0, STYLE_DIM):
            raise ValueError(f"style_dim={self.style_dim}: use 0 (off) or {STYLE_DIM} "
                             f"({', '.join(STYLE_NAMES)})")
        if not 0 <= self.style_dropout < 1:
            raise ValueError(f"style_dropout={self.style_dropout} must be in [0, 1)")

    @property
    def channels(self) -> tuple[int, ...]:
        mult = self.channel_mult or tuple(2**i for i in range(self.depth))
        return tuple(self.width * m for m in mult)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict:
        return asdict(self)


def num_groups(channels: int) -> int:
    """GroupNorm groups for `channels`: the most groups (≤ 32) that keep ≥ 4 channels each.

    A fixed GroupNorm(32) fails for narrow layers (width 16 has 16 channels).
    """
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al.; as in DiT/ADM):
    ``[cos(t·f_0), …, cos(t·f_{h-1}), sin(t·f_0), …, sin(t·f_{h-1})]`` with h = dim // 2 and
    ``f_i = max_period^(-i/h)``. An odd `dim` (an odd U-Net width) gets a zero last column, as
    in ADM, so the embedding always has `dim` entries for the time MLP."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb  # (B, dim)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, with the conditioning as a FiLM scale/shift."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(num_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, cond):
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads if channels % heads == 0 else 1,
                                          batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        chs = cfg.channels
        cond_dim = 4 * cfg.width
        self.time_mlp = nn.Sequential(nn.Linear(cfg.width, cond_dim), nn.SiLU(),
                                      nn.Linear(cond_dim, cond_dim))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, cond_dim)
        if cfg.style_dim:  # style-off models keep exactly the parameters they always had
            self.style_mlp = nn.Sequential(nn.Linear(cfg.style_dim, cond_dim), nn.SiLU(),
                                           nn.Linear(cond_dim, cond_dim))
            self.null_style = nn.Parameter(torch.zeros(cond_dim))

        self.stem = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = chs[0]
        for i, c in enumerate(chs):
            self.down.append(ResBlock(c_prev, c, cond_dim))
            last = i == len(chs) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, 2, padding=1))
            c_prev = c
        self.mid1 = ResBlock(c_prev, c_prev, cond_dim)
        self.mid_attn = SelfAttention(c_prev) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(c_prev, c_prev, cond_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(chs))):
            self.up.append(ResBlock(c_prev + chs[i], chs[i], cond_dim))
            self.upsample.append(nn.Conv2d(chs[i], chs[i - 1], 3, padding=1) if i > 0
                                 else nn.Identity())
            c_prev = chs[i - 1] if i > 0 else chs[0]
        self.out = nn.Sequential(nn.GroupNorm(num_groups(chs[0]), chs[0]), nn.SiLU(),
                                 nn.Conv2d(chs[0], cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _padding(self) -> tuple[int, int]:
        """Pixels added before/after each spatial axis so every level halves evenly
        (depth 4: 28 → 32)."""
        total = -self.cfg.image_size % 2 ** (self.cfg.depth - 1)
        return total // 2, total - total // 2

    def style_embedding(self, labels, style):
        """(B, cond_dim) embedding of the style, the null style where the label is null, where
        style dropout strikes, or everywhere when `style` is None."""
        null = self.null_style.expand(labels.shape[0], -1)
        if style is None:
            return null
        if style.shape != (labels.shape[0], self.cfg.style_dim):
            raise ValueError(f"style has shape {tuple(style.shape)}, expected "
                             f"({labels.shape[0]}, {self.cfg.style_dim})")
        keep = labels != self.cfg.null_label
        if self.training and self.cfg.style_dropout > 0:
            keep &= torch.rand(labels.shape, device=labels.device) >= self.cfg.style_dropout
        return torch.where(keep[:, None], self.style_mlp(style.to(null.dtype)), null)

    def forward(self, x, t, labels, style=None):
        if self.training and self.cfg.label_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.cfg.label_dropout
            labels = torch.where(drop, self.cfg.null_label, labels)
        cond = self.time_mlp(timestep_embedding(t, self.cfg.width)) + self.label_emb(labels)
        if self.cfg.style_dim:
            cond = cond + self.style_embedding(labels, style)
        elif style is not None:
            raise ValueError("this model has no style conditioning (style_dim=0)")
        cond = F.silu(cond)  # (B, cond_dim)

        lo, hi = self._padding()
        h = F.pad(x, (lo, hi, lo, hi)) if hi else x  # (B, 1, H, W)
        h = self.stem(h)
        skips = []
        for block, down in zip(self.down, self.downsample, strict=True):
            h = block(h, cond)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, cond)), cond)
        for block, up in zip(self.up, self.upsample, strict=True):
            h = block(torch.cat([h, skips.pop()], dim=1), cond)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        h = self.out(h)
        size = self.cfg.image_size
        return h[..., lo:lo + size, lo:lo + size]  # (B, 1, 28, 28)


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one forward pass for one image (one conditional evaluation), counted by
    torch.utils.flop_counter (a multiply-add counts as 2). `model` is a UNet, or any
    `(x_t, t, labels) -> eps` module with a UNetConfig as `cfg` (the peer benchmark's)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    device = next(model.parameters()).device
    x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    was_training = model.training
    model.eval()
    # a style-on model is counted with a style, so its embedding's cost is included
    style = (torch.zeros(1, cfg.style_dim, device=device),) if cfg.style_dim else ()
    zero = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, zero, zero, *style)
    model.train(was_training)
    return counter.get_total_flops()

"""One trial's full configuration, composed of each part's frozen dataclass.

It round-trips through a plain dict (Ray's ``param_space`` and checkpoints are dicts)::

    cfg = TrialConfig.from_dict({"model": {"depth": 2}, "train": {"lr": 1e-3}})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from trainables.data import DataConfig
from trainables.diffusion import DiffusionConfig
from trainables.unet import UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # global batch; each of N workers takes batch_size // N
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.0
    epochs: int = 10  # upper bound; budgets and early stopping may end training sooner
    max_seconds: float | None = None  # wall-clock budget for the training steps
    max_steps: int | None = None  # optimizer-step budget
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA of weights (warmed up over the first steps)
    lr_patience: int = 2  # ReduceLROnPlateau: epochs without val improvement before lr drop
    lr_factor: float = 0.5  # ReduceLROnPlateau: lr multiplier on a plateau
    early_stop_patience: int | None = 5  # epochs without val improvement before stopping
    # What counts as a validation improvement, for early stopping and the lr plateau alike: the
    # EMA val loss must fall below the best so far by more than this (absolute ε-MSE; the
    # losses here are ~0.03-0.1, their epoch-to-epoch noise on fixed noise ~1e-5)
    min_improvement: float = 1e-4
    val_size: int = 1000  # validation images used for the validation loss (fixed noise)
    seed: int = 0  # model init, batch order, noise; each rank offsets it
    # bf16 autocast of the training step; None: where it pays (train_loop.uses_amp). On a CPU
    # with native bf16 (AVX512-BF16) it measured 1.66x the fp32 images/s at the same quality
    # (benchmarks/cpu_amp.py); on CUDA 0.76x the fp32 (TF32) throughput on an H200, casts
    # costing these small U-Nets more than they save (benchmarks/RESULTS.md).
    amp: bool | None = None
    compile: bool = False  # torch.compile the model (CUDA only)
    # Replay each training step as one CUDA graph (CUDA, one worker, no amp/compile): these
    # small U-Nets are launch-bound on a GPU (trainables/cuda_graph.py).
    cuda_graphs: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be positive")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be positive")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be at least 1")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds={self.max_seconds} must be positive")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be positive")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor={self.lr_factor} must be in (0, 1)")
        if self.lr_patience < 0:
            raise ValueError(f"lr_patience={self.lr_patience} must be >= 0")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ValueError(f"early_stop_patience={self.early_stop_patience} must be >= 1 "
                             f"(or None: no early stopping)")
        if self.min_improvement < 0:
            raise ValueError(f"min_improvement={self.min_improvement} must be >= 0")


@dataclass(frozen=True)
class SampleConfig:
    guidance: float = 2.0  # classifier-free guidance w: eps = (1+w) eps_cond - w eps_uncond
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = 25  # DDIM steps (DDPM always takes T)
    # DDIM stochasticity (1 = DDPM's posterior variance on the coarser steps). At 25 steps η = 1
    # matched DDPM-100's judge accuracy and Fréchet distance on three trained models, η = 0 lost
    # 1-20 points of accuracy (benchmarks/RESULTS.md "Sampling").
    eta: float = 1.0
    # bf16 autocast of the sampler's U-Net calls; None: where it pays (trainables/precision.py).
    # On this 2-core CPU 1.3x (width 8) to 2.2x (width 32) faster, choosing the same w within
    # one grid step and coverage within the evaluation noise (benchmarks/sample_precision.py).
    amp: bool | None = None

    def __post_init__(self):
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta={self.eta} must be in [0, 1]")
        if self.guidance < 0:
            raise ValueError(f"guidance={self.guidance} must be >= 0")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler={self.sampler!r}: use 'ddpm' or 'ddim'")
        if self.steps < 1:
            raise ValueError(f"sampler steps={self.steps} must be at least 1")


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; "
                             f"expected {sorted(known)}")
        parts = {}
        for name, f in known.items():
            part_cls = f.default_factory
            value = d.get(name, {})
            if not isinstance(value, part_cls):
                allowed = {pf.name for pf in fields(part_cls)}
                bad = set(value) - allowed
                if bad:
                    raise ValueError(f"unknown {name} option(s) {sorted(bad)}; "
                                     f"expected some of {sorted(allowed)}")
                value = part_cls(**value)
            parts[name] = value
        return cls(**parts)

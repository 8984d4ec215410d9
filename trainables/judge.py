"""The in-domain judge: a small CNN digit classifier trained on the study's own training split.

CLIP reads real MNIST digits poorly (48% zero-shot for ViT-B/32), while a small CNN reads them
at > 98%, so the judge gives the quality numbers that can be trusted: whether a sample shows
the requested digit, how confidently, and a Fréchet distance in the judge's feature space.

    judge = load_or_train_judge(splits, cache_dir)     # trained once per dataset fingerprint
    probs = judge.probs(images)                          # (N, 10)
    feats = judge.features(images)                       # (N, FEATURE_DIM)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.data import Digits, Splits

FEATURE_DIM = 64
CACHE_ENV = "STUDY_CACHE_DIR"
_VERSION = 1  # bump when the architecture or recipe changes, to invalidate caches


class JudgeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )  # (B, FEATURE_DIM): the feature space of the Fréchet distance
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, 10))

    def forward(self, x):
        return self.head(self.conv(x))


class Judge:
    """A trained JudgeNet in eval mode, with its validation accuracy."""

    def __init__(self, net: JudgeNet, val_acc: float, fingerprint: str):
        self.net = net.eval()
        self.val_acc = val_acc
        self.fingerprint = fingerprint

    @property
    def device(self):
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _batched(self, fn, images, batch_size=1000):
        return torch.cat([fn(images[i : i + batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(images), batch_size)])

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched(lambda x: F.softmax(self.net(x), dim=1), images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched(self.net.conv, images)

    def state(self) -> dict:
        return {"state_dict": self.net.state_dict(), "val_acc": self.val_acc,
                "fingerprint": self.fingerprint, "version": _VERSION}

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> Judge:
        net = JudgeNet()
        net.load_state_dict(state["state_dict"])
        return cls(net.to(device), state["val_acc"], state["fingerprint"])


def _shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to `max_shift` pixels, one per image (batched, no loop)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Shifts, plus Gaussian noise of random strength on half the batch: generated digits often
    keep faint background noise, and a judge trained only on clean digits reads that as '8'."""
    x = _shift(x)
    sigma = torch.rand(len(x), 1, 1, 1, device=x.device) * 0.6
    sigma = torch.where(torch.rand_like(sigma) < 0.5, sigma, torch.zeros_like(sigma))
    return (x + sigma * torch.randn_like(x)).clamp(-1, 1)


def accuracy(judge: Judge, digits: Digits) -> float:
    return (judge.probs(digits.images).argmax(1) == digits.labels).float().mean().item()


def train_judge(splits: Splits, epochs: int = 6, batch_size: int = 128, lr: float = 2e-3,
                seed: int = 0, device: str = "cpu", verbose: bool = True) -> Judge:
    """Train the judge on splits.train (with small random shifts) and measure it on splits.val."""
    torch.manual_seed(seed)
    net = JudgeNet().to(device)
    x, y = splits.train.images.to(device), splits.train.labels.to(device)
    steps = epochs * (len(y) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), device=device)
        for i in range(len(y) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(net(_augment(x[idx])), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    judge = Judge(net, 0.0, splits.fingerprint)
    judge.val_acc = accuracy(judge, splits.val)
    if verbose:
        print(f"judge: trained in {time.perf_counter() - t0:.0f}s, "
              f"validation accuracy {judge.val_acc:.2%} ({splits.description})", flush=True)
    return judge


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "diffusion-study")


def load_or_train_judge(splits: Splits, cache_dir: Path | None = None, device: str = "cpu",
                        verbose: bool = True) -> Judge:
    """The judge for this dataset, trained once per dataset fingerprint and cached on disk.

    A file lock makes concurrent callers wait for one training instead of racing.
    """
    from filelock import FileLock

    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"judge-v{_VERSION}-{splits.fingerprint}.pt"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            judge = Judge.from_state(torch.load(path, map_location=device, weights_only=True),
                                     device)
            if verbose:
                print(f"judge: cached {path.name}, validation accuracy {judge.val_acc:.2%}",
                      flush=True)
            return judge
        judge = train_judge(splits, device=device, verbose=verbose)
        tmp = path.with_suffix(".tmp")
        torch.save(judge.state(), tmp)
        tmp.replace(path)
    return judge

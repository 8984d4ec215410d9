"""Peer benchmark: our U-Net and training step against diffusers' `UNet2DModel` + `DDPMScheduler`
at the same parameter count (±10%), batch, data, device, threads and precision: fp32, or bf16
autocast for both where `fit` uses it (CPUs with native bf16; "ours, fp32" is then timed too).

    python benchmarks/peer.py --quick                       # throughput only, a few minutes on CPU
    python benchmarks/peer.py --device cuda --batch 256     # both measurements (benchmarks/gpu.sh)

1. Training images/s, ours ÷ peer (target ≥ 1.5): alternating timed windows in one process after
   warm-up, median per model. Ours is `fit`'s own step (trainables/train_loop.py).
2. Training seconds to ≥ 95% judge accuracy, ours ÷ peer (target ≤ 0.5): ours is `fit` itself
   (LocalSession); the peer is the idiomatic diffusers loop. After every epoch both are probed by
   the same code: 20 samples per digit from the EMA weights, our DDIM-25 sampler at w = 2 driving
   either model, read by the digit judge. Probe time is excluded; `--budget-seconds` caps each.

Peers (`PEERS`): "mirror" has our layout (plain ResNet blocks, no attention, 1 block per level on
the way down); "standard" keeps UNet2DModel's defaults (2 blocks per level, mid-block attention).
Both are narrowed to our parameter count. diffusers is a dev-only dependency: on a machine without
it put a `pip install --target` folder on PYTHONPATH (benchmarks/gpu.sh does).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA_DIR, machine  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import DataConfig, load_splits  # noqa: E402
from trainables.diffusion import Schedule, make_betas  # noqa: E402
from trainables.evaluate import quality_probe  # noqa: E402
from trainables.judge import load_or_train_judge  # noqa: E402
from trainables.train_loop import (  # noqa: E402
    LocalSession,
    fit,
    make_train_step,
    uses_amp,
    uses_cuda_graphs,
)
from trainables.unet import UNet, UNetConfig, forward_flops, num_groups  # noqa: E402

REFERENCE = {"depth": 3, "width": 32}  # the reference U-Net: channels 32/64/128
PARAM_TOLERANCE = 0.10
_CHECK_EVERY = 10  # steps between loss syncs, as in fit


@dataclass(frozen=True)
class PeerConfig:
    block_out_channels: tuple[int, ...]  # channels per level (UNet2DModel's argument)
    layers_per_block: int  # ResNet blocks per level going down (one more going up)
    add_attention: bool  # self-attention in the mid block


PEERS = {
    "mirror": PeerConfig((28, 56, 112), layers_per_block=1, add_attention=False),
    "standard": PeerConfig((24, 48, 96), layers_per_block=2, add_attention=True),
}


class PeerEps(nn.Module):
    """`(x_t, t, labels) -> eps` around a UNet2DModel, so our samplers drive the peer; `cfg`
    carries what `trainables.sample.generate` reads (classes, null label, image shape)."""

    def __init__(self, unet: nn.Module, cfg: UNetConfig):
        super().__init__()
        self.unet, self.cfg = unet, cfg

    def forward(self, x, t, labels):
        return self.unet(x, t, class_labels=labels).sample  # (B, 1, 28, 28)


def build_peer(pc: PeerConfig, ucfg: UNetConfig) -> nn.Module:
    from diffusers import UNet2DModel

    levels = len(pc.block_out_channels)
    return UNet2DModel(
        sample_size=ucfg.image_size, in_channels=ucfg.in_channels, out_channels=ucfg.in_channels,
        block_out_channels=pc.block_out_channels, layers_per_block=pc.layers_per_block,
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
        add_attention=pc.add_attention,
        norm_num_groups=num_groups(pc.block_out_channels[0]),  # our grouping rule (≥ 4 per group)
        num_class_embeds=ucfg.num_classes + 1,  # the last is the null class of CFG
    )


def peer_noise_scheduler(cfg: TrialConfig):
    """A DDPMScheduler with our β schedule; checked against ours to float32 precision."""
    from diffusers import DDPMScheduler

    dc = cfg.diffusion
    if dc.schedule == "linear":
        betas = make_betas(dc.timesteps, "linear")
        sched = DDPMScheduler(num_train_timesteps=dc.timesteps, beta_schedule="linear",
                              beta_start=float(betas[0]), beta_end=float(betas[-1]))
    else:
        sched = DDPMScheduler(num_train_timesteps=dc.timesteps, beta_schedule="squaredcos_cap_v2")
    ours = Schedule.from_config(dc).alphas_cumprod
    err = (sched.alphas_cumprod.double() - ours).abs().max().item()
    assert err < 1e-5, f"DDPMScheduler's ᾱ differs from ours by {err:.2e}"
    return sched


class OurTrainer:
    """`fit`'s own step (`make_train_step`): ε-MSE with label dropout inside the model, AdamW,
    gradient clipping, EMA; under bf16 autocast where `fit` uses it (CPUs with native bf16),
    replayed as one CUDA graph on a GPU as `fit` does."""

    def __init__(self, cfg: TrialConfig, device: torch.device, name: str = "ours"):
        self.cfg, self.device, self.name = cfg, device, name
        torch.manual_seed(cfg.train.seed)
        self.model = UNet(cfg.model).to(device).train()
        self.ema = deepcopy(self.model).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                     weight_decay=cfg.train.weight_decay)
        self.sched = Schedule.from_config(cfg.diffusion)
        self.steps, self._step = 0, None

    def step(self, x, y, idx) -> torch.Tensor:
        if self._step is None:  # built on the data tensors, as in fit
            self._step = make_train_step(
                self.model, self.model, self.ema, self.opt, self.sched, self.cfg.train,
                (x, y, None), len(idx), uses_cuda_graphs(self.cfg.train, self.device, 1),
                uses_amp(self.cfg.train, self.device))
        self.steps += 1
        return self._step(idx, self.steps)


class PeerTrainer:
    """The idiomatic diffusers step: `DDPMScheduler.add_noise`, label dropout to the null class,
    ε-MSE, AdamW, the same clipping, diffusers' `EMAModel` (same decay and warm-up as ours), in
    the same precision as ours (bf16 autocast where `fit` uses it)."""

    def __init__(self, name: str, pc: PeerConfig, cfg: TrialConfig, device: torch.device):
        from diffusers.training_utils import EMAModel

        self.name, self.ucfg, self.tc = f"diffusers {name}", cfg.model, cfg.train
        torch.manual_seed(self.tc.seed)
        self.unet = build_peer(pc, cfg.model).to(device).train()
        self.noise_scheduler = peer_noise_scheduler(cfg)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=self.tc.lr,
                                     weight_decay=self.tc.weight_decay)
        self.ema = EMAModel(self.unet.parameters(), decay=self.tc.ema_decay, foreach=True)
        self.timesteps = cfg.diffusion.timesteps
        self.amp = uses_amp(cfg.train, device)

    def step(self, x, y, idx) -> torch.Tensor:
        x, y = x[idx], y[idx]
        b = x.shape[0]
        noise = torch.randn_like(x)
        t = torch.randint(0, self.timesteps, (b,), device=x.device)
        noisy = self.noise_scheduler.add_noise(x, noise, t)
        drop = torch.rand(b, device=x.device) < self.ucfg.label_dropout
        labels = torch.where(drop, self.ucfg.null_label, y)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            eps = self.unet(noisy, t, class_labels=labels).sample
        loss = F.mse_loss(eps.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.tc.grad_clip)
        self.opt.step()
        self.ema.step(self.unet.parameters())
        return loss.detach()

    def ema_model(self) -> PeerEps:
        unet = deepcopy(self.unet)
        self.ema.copy_to(unet.parameters())
        return PeerEps(unet.eval(), self.ucfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(trainer, x, y, order, batch: int, n: int) -> float:
    """Seconds for n training steps on batches gathered from the in-memory tensors."""
    _sync(x.device)
    t0 = time.perf_counter()
    for i in range(n):
        idx = order[(i * batch) % (len(order) - batch + 1):][:batch]
        loss = trainer.step(x, y, idx)
        if (i + 1) % _CHECK_EVERY == 0:
            loss.item()  # fit syncs for its budget / divergence checks this often
    _sync(x.device)
    return time.perf_counter() - t0


def throughput(trainers, splits, device, batch, rounds, steps, warmup) -> dict[str, list[float]]:
    """images/s per trainer over `rounds` alternating windows (order rotated every round)."""
    x, y = splits.train.images.to(device), splits.train.labels.to(device)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    for tr in trainers:
        run_steps(tr, x, y, order, batch, warmup)
    rates = {tr.name: [] for tr in trainers}
    for r in range(rounds):
        for tr in trainers[r % len(trainers):] + trainers[:r % len(trainers)]:
            rates[tr.name].append(steps * batch / run_steps(tr, x, y, order, batch, steps))
        print("  round", r + 1, "  ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()),
              flush=True)
    return rates


def profile(trainer, splits, device, batch, steps: int = 5, top: int = 12) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x, y = splits.train.images.to(device), splits.train.labels.to(device)
    order = torch.arange(len(y), device=device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        run_steps(trainer, x, y, order, batch, steps)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n### Profile: {trainer.name}, {steps} steps\n```")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=40))
    print("```")


class _Reached(Exception):
    pass


class _UntilTarget(LocalSession):
    """fit's LocalSession that records each epoch and stops fit once the probe hits the target."""

    def __init__(self, run_dir: Path, device: str, target: float):
        super().__init__(run_dir, verbose=False, device=device)
        self.target, self.history = target, []

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        self.history.append((metrics["epoch"], metrics["train_seconds"],
                             metrics["probe_judge_acc"], metrics["images_per_s"]))
        if metrics["probe_judge_acc"] >= self.target:
            raise _Reached


def ours_to_target(cfg, splits, device, probe, target) -> list[tuple]:
    with tempfile.TemporaryDirectory() as tmp:
        session = _UntilTarget(Path(tmp), device.type, target)
        try:
            fit(cfg, session, splits, probe=probe)
        except _Reached:
            pass
    return session.history


def peer_to_target(trainer: PeerTrainer, cfg, splits, device, probe, target) -> list[tuple]:
    """The peer's epochs (same shuffling, budget checks and probe schedule as fit)."""
    tc = cfg.train
    x, y = splits.train.images.to(device), splits.train.labels.to(device)
    steps_per_epoch = len(y) // tc.batch_size
    train_s, history, epoch = 0.0, [], 0
    while epoch < tc.epochs:
        epoch += 1
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(device)
        out_of_time = False
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * tc.batch_size:(i + 1) * tc.batch_size]
            loss = trainer.step(x, y, idx)
            if (i + 1) % _CHECK_EVERY == 0 or i == steps_per_epoch - 1:
                loss.item()
                if train_s + time.perf_counter() - t0 >= tc.max_seconds:
                    out_of_time = True
                    break
        epoch_s = time.perf_counter() - t0
        train_s += epoch_s
        acc = probe(trainer.ema_model())["judge_acc"]
        history.append((epoch, train_s, acc, (i + 1) * tc.batch_size / epoch_s))
        if acc >= target or out_of_time:
            break
    return history


def first_at(history, target) -> float | None:
    return next((s for _, s, acc, _ in history if acc >= target), None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (both models)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--data-dir", default=DATA_DIR, help="offline MNIST IDX folder")
    p.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    p.add_argument("--rounds", type=int, help="alternating throughput windows (default 5; quick 3)")
    p.add_argument("--window-steps", type=int, help="steps per window (default: 20 cpu, 100 cuda)")
    p.add_argument("--budget-seconds", type=float, default=300.0,
                   help="training seconds allowed per model to reach the target accuracy")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--probe-per-digit", type=int, default=20)
    p.add_argument("--quick", action="store_true",
                   help="throughput only, 3 rounds of half-length windows")
    p.add_argument("--profile", action="store_true", help="print a per-step operator profile")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible")
    from diffusers import __version__ as diffusers_version
    from diffusers.training_utils import EMAModel  # noqa: F401  (fail now, not after minutes)

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    window = a.window_steps or (100 if device.type == "cuda" else 20)
    rounds = a.rounds or (3 if a.quick else 5)
    if a.quick and not a.window_steps:
        window //= 2
    cfg = TrialConfig.from_dict({
        "data": {"dataset": "mnist-idx", "data_dir": a.data_dir},
        "model": REFERENCE, "sample": {"guidance": 2.0},
        "train": {"batch_size": a.batch, "lr": a.lr, "epochs": 10_000,
                  "max_seconds": a.budget_seconds, "early_stop_patience": None},
    })
    splits = load_splits(DataConfig("mnist-idx", a.data_dir))

    print(f"# Peer benchmark — {datetime.date.today()} · {machine()} · diffusers "
          f"{diffusers_version} · {a.device}, {torch.get_num_threads()} threads, "
          f"{'bf16 autocast' if uses_amp(cfg.train, device) else 'fp32'} for every model")
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"data: {splits.description}; batch {a.batch}, AdamW lr {a.lr:g}, "
          f"T = {cfg.diffusion.timesteps} {cfg.diffusion.schedule}, label dropout "
          f"{cfg.model.label_dropout}, grad clip {cfg.train.grad_clip}, EMA {cfg.train.ema_decay}")

    # Build the models and check the parameter counts
    trainers = [OurTrainer(cfg, device)] + [PeerTrainer(n, PEERS[n], cfg, device)
                                            for n in a.peers]
    ours_params = trainers[0].model.num_params()
    sizes = {"ours": (ours_params, forward_flops(trainers[0].model))}
    for tr in trainers[1:]:
        n = sum(q.numel() for q in tr.unet.parameters())
        sizes[tr.name] = (n, forward_flops(PeerEps(tr.unet, cfg.model)))
        assert abs(n / ours_params - 1) <= PARAM_TOLERANCE, \
            f"{tr.name} has {n:,} parameters, outside ±10% of our {ours_params:,}"

    print("\n## Models\n\n| model | layout | parameters | vs ours | forward MFLOP/image |")
    print("| --- | --- | ---: | ---: | ---: |")
    layouts = {"ours": f"UNet d{REFERENCE['depth']} w{REFERENCE['width']}, channels "
                       f"{'/'.join(map(str, cfg.model.channels))}, 1 block per level, no attention"}
    for name in a.peers:
        pc = PEERS[name]
        layouts[f"diffusers {name}"] = (
            f"UNet2DModel, channels {'/'.join(map(str, pc.block_out_channels))}, "
            f"layers_per_block {pc.layers_per_block}, mid attention "
            f"{'on' if pc.add_attention else 'off'}")
    for name, (n, flops) in sizes.items():
        print(f"| {name} | {layouts[name]} | {n:,} | {n / ours_params:.3f} | {flops / 1e6:.0f} |")
    if uses_cuda_graphs(cfg.train, device, 1):  # what the CUDA graph brings, in the same run
        eager = replace(cfg, train=replace(cfg.train, cuda_graphs=False))
        trainers.insert(1, OurTrainer(eager, device, name="ours, eager"))
    if uses_amp(cfg.train, device):  # what autocast brings, in the same run
        fp32 = replace(cfg, train=replace(cfg.train, amp=False))
        trainers.insert(1, OurTrainer(fp32, device, name="ours, fp32"))

    # 1. Throughput
    warmup = 20 if device.type == "cuda" else 3
    print(f"\n## 1. Training images/s — {rounds} alternating windows of {window} steps "
          f"(batch {a.batch}) after {warmup} warm-up steps", flush=True)
    rates = throughput(trainers, splits, device, a.batch, rounds, window, warmup)
    ours_rate = statistics.median(rates["ours"])
    print("\n| model | images/s (median) | min–max | ours ÷ model |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:,.0f} | {min(r):,.0f}–{max(r):,.0f} | {ours_rate / med:.2f} |")
    if a.profile:
        for tr in trainers:
            profile(tr, splits, device, a.batch)
    if a.quick:
        return

    # 2. Time to the target judge accuracy
    judge = load_or_train_judge(splits, device=a.device)
    probe = quality_probe(judge, cfg, n_per_digit=a.probe_per_digit, steps=25)
    print(f"\n## 2. Training seconds to ≥ {a.target:.0%} judge accuracy (probe: "
          f"{10 * a.probe_per_digit} DDIM-25 samples at w = 2 after each epoch, EMA weights; "
          f"budget {a.budget_seconds:g} s each; judge {judge.val_acc:.1%} on real digits)",
          flush=True)
    histories = {"ours": ours_to_target(cfg, splits, device, probe, a.target)}
    print("  ours:", [(e, round(s, 1), round(acc, 3)) for e, s, acc, _ in histories["ours"]],
          flush=True)
    for name in a.peers:
        fresh = PeerTrainer(name, PEERS[name], cfg, device)
        histories[fresh.name] = peer_to_target(fresh, cfg, splits, device, probe, a.target)
        print(f"  {fresh.name}:", [(e, round(s, 1), round(acc, 3))
                                   for e, s, acc, _ in histories[fresh.name]], flush=True)
    ours_t = first_at(histories["ours"], a.target)
    print(f"\n| model | seconds to ≥ {a.target:.0%} | epoch | last accuracy | epoch images/s "
          "| ours ÷ model |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, h in histories.items():
        t = first_at(h, a.target)
        epoch = next((e for e, _, acc, _ in h if acc >= a.target), None)
        reached = f"{t:.1f}" if t is not None else f"not reached in {h[-1][1]:.0f}"
        ratio = f"{ours_t / t:.2f}" if t is not None and ours_t is not None else "—"
        ips = statistics.median(r for *_, r in h)
        print(f"| {name} | {reached} | {epoch or '—'} | {h[-1][2]:.3f} | {ips:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()

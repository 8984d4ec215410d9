"""The training loop: one function, ``fit``, used standalone and inside Ray Train workers.

``fit`` is ordinary PyTorch. What differs between a single process and a DDP worker (rank,
device, model wrapping, where reports and checkpoints go) comes from a ``Session``
(trainables/session.py): ``LocalSession``, or ``trainables.ray_worker.RaySession`` in a Ray
Train worker.

Per epoch it logs train loss, validation loss of the EMA weights (overall and per timestep
quartile, on fixed noise so epochs compare), lr, epoch seconds and images/s, and writes a
checkpoint (model, EMA, optimizer, scheduler, epoch, step, config). Resuming from a checkpoint
continues exactly: the batch order and noise of each epoch are seeded by (seed, epoch, rank).

A style-conditioned model (``model.style_dim > 0``) is trained on the style of every image,
measured once for the whole split at the start (``style.py``) and fed as standard scores; the
normaliser is saved in the checkpoint as ``style_norm``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from trainables import precision
from trainables.config import TrainConfig, TrialConfig
from trainables.cuda_graph import GraphedStep, make_capturable
from trainables.data import Splits, load_splits
from trainables.diffusion import Schedule, training_losses
from trainables.sample import forward_batch
from trainables.session import CHECKPOINT_FILE, LocalSession, Session  # noqa: F401 (callers)
from trainables.style import StyleNorm, style_vectors
from trainables.unet import UNet

#: Why fit ended; a session's should_stop adds its own reason (the study's: "asha").
STOP_REASONS = ("completed", "time_budget", "step_budget", "early_stop", "diverged")
_CHECK_EVERY = 10  # steps between budget / divergence checks (each costs a device sync)
# Seed of the validation loss's t and noise: the same draws every epoch, on every rank and after
# a resume, so epochs (and trials) compare on equal terms and a change is the model's
VALIDATION_SEED = 1234


@dataclass
class FitResult:
    model: UNet  # raw (unwrapped) trained weights
    ema: UNet  # EMA weights, the ones to evaluate
    history: list[dict]  # one metrics dict per epoch
    stop_reason: str  # one of STOP_REASONS
    detail: str = ""  # e.g. where the loss diverged
    train_seconds: float = 0.0  # wall seconds of the training steps, summed over epochs
    state: dict = field(default_factory=dict)  # the last checkpoint's contents (rank 0)
    style_norm: StyleNorm | None = None  # the style standard scores' scale (style-on models)


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float | torch.Tensor) -> None:
    """ema ← decay·ema + (1 − decay)·model (DiT's update_ema). A tensor decay stays on the
    device (no host sync, so a CUDA graph can capture it)."""
    ema_params, params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if isinstance(decay, torch.Tensor):  # foreach lerp takes its weight as a host scalar
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, torch._foreach_mul(params, 1 - decay))
    else:
        torch._foreach_lerp_(ema_params, params, 1 - decay)


def ema_decay_at(step: int | torch.Tensor, cap: float) -> float | torch.Tensor:
    """EMA decay warmed up over the first steps: min(cap, (1 + step) / (10 + step))."""
    decay = (1 + step) / (10 + step)
    return decay.clamp(max=cap) if isinstance(decay, torch.Tensor) else min(cap, decay)


def _any_rank(flag: bool, device) -> bool:
    """True on every rank if `flag` is true on any rank (keeps DDP ranks in lockstep)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _sum_ranks(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def validation_loss(model, sched: Schedule, images, labels, rank: int, world: int,
                    batch_size: int | None = None, style: torch.Tensor | None = None) -> dict:
    """Mean ε-MSE over the given images (with their styles, for a style-on model) with noise
    and t fixed by VALIDATION_SEED, overall and per timestep quartile; shards across ranks and
    sums. Batches default to the sampler's U-Net call size (small on a CPU: 0.61-0.75x the time
    of batches of 500 for 1000 images, benchmarks/RESULTS.md "Study efficiency")."""
    g = torch.Generator().manual_seed(VALIDATION_SEED)
    n = len(labels)
    t_all = torch.randint(0, sched.timesteps, (n,), generator=g)
    noise_all = torch.randn(images.shape, generator=g)
    sums = [0.0] * 5  # total, then per quartile
    counts = [0.0] * 5
    device = images.device
    batch_size = batch_size or forward_batch(device) or 500
    for start in range(rank * batch_size, n, world * batch_size):
        sl = slice(start, start + batch_size)
        t = t_all[sl].to(device)
        losses, _ = training_losses(model, sched, images[sl], labels[sl], t=t,
                                    noise=noise_all[sl].to(device),
                                    style=None if style is None else style[sl])
        quart = (t * 4 // sched.timesteps).clamp(max=3)
        sums[0] += losses.sum().item()
        counts[0] += len(losses)
        for q in range(4):
            sums[q + 1] += losses[quart == q].sum().item()
            counts[q + 1] += (quart == q).sum().item()
    totals = _sum_ranks(sums + counts, device)
    sums, counts = totals[:5], totals[5:]
    out = {"val_loss": sums[0] / max(counts[0], 1)}
    for q in range(4):
        out[f"val_loss_q{q + 1}"] = sums[q + 1] / max(counts[q + 1], 1)
    return out


def uses_amp(tc: TrainConfig, device: torch.device) -> bool:
    """Whether `fit`'s step runs under bf16 autocast: as `tc.amp` says, or when it is None, where
    it pays (trainables/precision.py)."""
    return precision.resolve(tc.amp, device)


def uses_cuda_graphs(tc: TrainConfig, device: torch.device, world: int) -> bool:
    """Whether `fit` replays its step as a CUDA graph (cuda_graph.py): on a GPU, in one process
    (no DDP gradient hooks), without autocast or torch.compile."""
    return (tc.cuda_graphs and device.type == "cuda" and world == 1
            and not uses_amp(tc, device) and not tc.compile)


def make_train_step(train_model: torch.nn.Module, model: torch.nn.Module, ema: torch.nn.Module,
                    opt: torch.optim.Optimizer, sched: Schedule, tc: TrainConfig,
                    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                    batch: int, graphed: bool, use_amp: bool = False
                    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`step(idx, n) -> loss`: one optimizer step on the rows `idx` of `data` (images, labels,
    styles or None, on the device), `n` the step number (EMA warm-up). `train_model` is `model`
    or its DDP/compiled wrapper. Replayed as one CUDA graph when `graphed`, else eager."""
    images, labels, styles = data
    sched = sched.to(images.device)

    def train_step(idx, n):  # no host syncs: a CUDA graph can capture it
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_amp):
            losses, _ = training_losses(train_model, sched, images[idx], labels[idx],
                                        style=None if styles is None else styles[idx])
        loss = losses.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        update_ema(ema, model, ema_decay_at(n, tc.ema_decay))
        return loss.detach()

    def zero_grad():
        opt.zero_grad(set_to_none=True)

    if graphed:
        make_capturable(opt, images.device)
        return GraphedStep(train_step, zero_grad, batch, images.device)

    def eager_step(idx, n):
        zero_grad()
        return train_step(idx, n)

    return eager_step


def fit(cfg: TrialConfig, session: Session, splits: Splits | None = None,
        probe: Callable[[UNet], dict] | None = None) -> FitResult:
    """Train `cfg` and return the trained model and EMA.

    `probe(ema) -> dict` runs on rank 0 after each epoch (e.g. the judge's accuracy on a few
    samples); its values are reported with a `probe_` prefix and shared with every rank.
    """
    tc = cfg.train
    rank, world, device = session.rank, session.world_size, session.device
    if tc.batch_size < world:
        raise ValueError(f"batch_size={tc.batch_size} is smaller than the {world} workers")
    use_amp = uses_amp(tc, device)
    graphed = uses_cuda_graphs(tc, device, world)

    # Set up data: the whole split as one tensor on the device
    splits = splits or load_splits(cfg.data)
    train_x, train_y = splits.train.images.to(device), splits.train.labels.to(device)
    val_x = splits.val.images[: tc.val_size].to(device)
    val_y = splits.val.labels[: tc.val_size].to(device)
    local_batch = tc.batch_size // world
    sampler = DistributedSampler(range(len(train_y)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=tc.seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={tc.batch_size} exceeds the {len(train_y)} training images")
    sched = Schedule.from_config(cfg.diffusion)
    # Style standard scores of every image, once, on the device (deterministic, so every rank
    # and a resumed run get the same normaliser)
    style_norm = train_s = val_s = None
    if cfg.model.style_dim:
        raw = style_vectors(train_x)
        style_norm = StyleNorm.fit(raw)
        train_s, val_s = style_norm.encode(raw), style_norm.encode(style_vectors(val_x))

    # Build model, EMA and optimizer (same init on every rank; DDP also broadcasts it)
    torch.manual_seed(tc.seed)
    model = UNet(cfg.model).to(device)
    ema = deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # the plateau and early stopping share one notion of improvement (tc.min_improvement)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=tc.lr_factor, patience=tc.lr_patience, threshold=tc.min_improvement,
        threshold_mode="abs")
    last_state: dict = {}
    state = {"epoch": 0, "step": 0, "best_val": math.inf, "bad_epochs": 0, "history": [],
             "train_seconds": 0.0, "images_seen": 0}

    # Resume
    ckpt_dir = session.latest_checkpoint()
    if ckpt_dir is not None:
        ckpt = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, map_location=device,
                          weights_only=True)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        plateau.load_state_dict(ckpt["scheduler"])
        state.update({k: ckpt.get(k, state[k]) for k in state})
        last_state = ckpt
        if rank == 0:
            print(f"resuming after epoch {state['epoch']} (step {state['step']})", flush=True)
    train_model = session.prepare_model(model)
    if tc.compile and device.type == "cuda":
        train_model = torch.compile(train_model)
    train_model.train()

    step_fn = make_train_step(train_model, model, ema, opt, sched, tc, (train_x, train_y, train_s),
                              local_batch, graphed, use_amp)

    # Train
    stop_reason, detail = "completed", ""
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), device=device)
        torch.manual_seed(tc.seed * 1_000_003 + epoch * 1009 + rank)  # t, noise, label dropout
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        steps_done = 0
        for i in range(steps_per_epoch):
            state["step"] += 1
            loss = step_fn(order[i * local_batch : (i + 1) * local_batch], state["step"])
            loss_sum += loss
            steps_done += 1

            last = i == steps_per_epoch - 1
            if state["step"] % _CHECK_EVERY == 0 or last:
                elapsed = state["train_seconds"] + time.perf_counter() - t0
                flags = {
                    "diverged": not math.isfinite(loss.item()),
                    "time_budget": tc.max_seconds is not None and elapsed >= tc.max_seconds,
                    "step_budget": tc.max_steps is not None and state["step"] >= tc.max_steps,
                }
                hit = [k for k, v in flags.items() if _any_rank(v, device)]
                if hit:
                    stop_reason = hit[0]
                    if stop_reason == "diverged":
                        detail = f"non-finite loss at step {state['step']} (lr={tc.lr:g})"
                    break
        epoch_s = time.perf_counter() - t0
        state["train_seconds"] += epoch_s
        state["images_seen"] += steps_done * local_batch * world
        if stop_reason == "diverged":
            break

        # Evaluate: train loss over ranks, EMA validation loss, optional quality probe
        train_sum, n_steps = _sum_ranks([loss_sum.item(), steps_done], device)
        metrics = {"epoch": epoch, "step": state["step"], "train_loss": train_sum / n_steps,
                   "lr": float(opt.param_groups[0]["lr"]), "epoch_s": epoch_s,
                   "images_per_s": steps_done * local_batch * world / epoch_s,
                   "train_seconds": state["train_seconds"], "images_seen": state["images_seen"],
                   "train_dtype": precision.dtype_name(use_amp)}  # what images_per_s means
        metrics.update(validation_loss(ema, sched, val_x, val_y, rank, world, style=val_s))
        if probe is not None:
            t_probe = time.perf_counter()
            shared = [probe(ema) if rank == 0 else None]
            if world > 1:
                dist.broadcast_object_list(shared, src=0)
            metrics.update({f"probe_{k}": v for k, v in shared[0].items()})
            metrics["probe_s"] = time.perf_counter() - t_probe
            # cumulative, from the checkpointed history: right after a resume too, and what a
            # trial ASHA stops after this epoch is costed by
            metrics["probe_s_total"] = metrics["probe_s"] + sum(h.get("probe_s", 0.0)
                                                                for h in state["history"])
        if not math.isfinite(metrics["val_loss"]):
            stop_reason, detail = "diverged", f"non-finite validation loss at epoch {epoch}"
            break
        plateau.step(metrics["val_loss"])
        if metrics["val_loss"] < state["best_val"] - tc.min_improvement:
            state["best_val"], state["bad_epochs"] = metrics["val_loss"], 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(metrics)
        if stop_reason == "completed" and tc.early_stop_patience is not None \
                and state["bad_epochs"] >= tc.early_stop_patience:
            stop_reason = "early_stop"
            detail = f"no validation improvement in {tc.early_stop_patience} epochs"

        # Checkpoint (rank 0 writes; every rank reports)
        last_state = {"model": model.state_dict(), "ema": ema.state_dict(),
                      "optimizer": opt.state_dict(), "scheduler": plateau.state_dict(),
                      "config": cfg.to_dict(), **state}
        if style_norm is not None:
            last_state["style_norm"] = style_norm.to_dict()
        with _checkpoint_dir(rank) as tmp:
            if tmp is not None:
                torch.save(last_state, tmp / CHECKPOINT_FILE)
            session.report(metrics, tmp)
        if stop_reason == "completed" and epoch < tc.epochs:
            verdict = [session.should_stop(metrics) if rank == 0 else None]
            if world > 1:
                dist.broadcast_object_list(verdict, src=0)
            if verdict[0]:
                stop_reason, detail = verdict[0], f"stopped after epoch {epoch} by the study"
        if stop_reason != "completed":
            break

    return FitResult(model, ema, state["history"], stop_reason, detail, state["train_seconds"],
                     last_state if rank == 0 else {}, style_norm)


@contextlib.contextmanager
def _checkpoint_dir(rank: int):
    if rank != 0:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        yield Path(tmp)


def load_checkpoint(path: Path, device="cpu") -> tuple[TrialConfig, UNet, UNet, dict]:
    """(config, model, ema, checkpoint dict) from a checkpoint file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    ckpt = torch.load(path, map_location=device, weights_only=True)
    cfg = TrialConfig.from_dict(ckpt["config"])
    model, ema = UNet(cfg.model), UNet(cfg.model)
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    return cfg, model.to(device).eval(), ema.to(device).eval(), ckpt

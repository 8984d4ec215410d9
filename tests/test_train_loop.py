"""The training loop on real digits: learning, exact resume, budgets, divergence, CLI."""

import json
import shutil
import subprocess
import sys
from copy import deepcopy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainables import train_loop
from trainables.config import TrainConfig, TrialConfig
from trainables.data import DataConfig, Digits, Splits
from trainables.diffusion import Schedule
from trainables.train_loop import (
    LocalSession,
    fit,
    load_checkpoint,
    make_train_step,
    uses_amp,
    validation_loss,
)
from trainables.unet import UNet

TINY = {"data": {"dataset": "digits"}, "model": {"depth": 2, "width": 8},
        "diffusion": {"timesteps": 50}}


def tiny(**train) -> TrialConfig:
    return TrialConfig.from_dict({**TINY, "train": {"batch_size": 64, "val_size": 128, **train}})


def test_config_roundtrip_and_validation():
    cfg = tiny(lr=3e-4)
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert TrialConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown model option"):
        TrialConfig.from_dict({"model": {"depht": 3}})
    with pytest.raises(ValueError, match="lr=-0.1"):
        TrainConfig(lr=-0.1)


def test_training_lowers_loss(tmp_path, digits_splits):
    r = fit(tiny(epochs=3, lr=2e-3), LocalSession(tmp_path, verbose=False), digits_splits)
    losses = [h["val_loss"] for h in r.history]
    assert r.stop_reason == "completed" and len(r.history) == 3
    assert losses[-1] < 0.6 * losses[0]
    h = r.history[-1]
    for key in ("train_loss", "val_loss_q1", "val_loss_q4", "lr", "epoch_s", "images_per_s"):
        assert h[key] > 0
    # high-noise quartile is easier for ε-prediction than the low-noise one
    assert h["val_loss_q4"] < h["val_loss_q1"]
    assert (tmp_path / "checkpoint.pt").exists()


def test_bf16_autocast_where_it_pays_and_as_asked(tmp_path, digits_splits, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert uses_amp(TrainConfig(), cpu) == native and not uses_amp(TrainConfig(), cuda)
    assert uses_amp(TrainConfig(amp=True), cuda) and not uses_amp(TrainConfig(amp=False), cpu)
    with monkeypatch.context() as m:  # a torch without the check: fp32
        m.setattr(torch.ops, "mkldnn", object())
        assert not uses_amp(TrainConfig(), cpu)
    # asked for, it is applied (the loss moves off fp32's) and trains as well
    runs = {amp: fit(tiny(epochs=2, lr=2e-3, amp=amp),
                     LocalSession(tmp_path / str(amp), verbose=False), digits_splits)
            for amp in (False, True)}
    fp32, bf16 = (runs[amp].history[-1]["train_loss"] for amp in (False, True))
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.1)


def test_resume_continues_exactly(tmp_path, digits_splits):
    straight = fit(tiny(epochs=2), LocalSession(tmp_path / "a", verbose=False), digits_splits)
    fit(tiny(epochs=1), LocalSession(tmp_path / "b", verbose=False), digits_splits)
    resumed = fit(tiny(epochs=2), LocalSession(tmp_path / "b", resume=True, verbose=False),
                  digits_splits)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.history[-1]["val_loss"] == pytest.approx(straight.history[-1]["val_loss"])


def test_checkpoint_roundtrip(tmp_path, digits_splits):
    r = fit(tiny(epochs=1), LocalSession(tmp_path, verbose=False), digits_splits)
    cfg, model, ema, ckpt = load_checkpoint(tmp_path)
    assert cfg == tiny(epochs=1) and ckpt["epoch"] == 1 and ckpt["step"] > 0
    for key in ("model", "ema", "optimizer", "scheduler", "config", "history"):
        assert key in ckpt
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 4]), torch.tensor([1, 2])
    torch.testing.assert_close(ema(x, t, y), r.ema.eval()(x, t, y))


def test_divergence_is_a_clear_stop(tmp_path, digits_splits):
    r = fit(tiny(epochs=3, lr=1e6, grad_clip=1e9), LocalSession(tmp_path, verbose=False),
            digits_splits)
    assert r.stop_reason == "diverged" and "non-finite" in r.detail


def test_step_budget(tmp_path, digits_splits):
    r = fit(tiny(epochs=5, max_steps=10), LocalSession(tmp_path, verbose=False), digits_splits)
    assert r.stop_reason == "step_budget" and r.history[-1]["step"] == 10


def test_early_stopping(tmp_path, digits_splits):
    r = fit(tiny(epochs=6, lr=1e-9, early_stop_patience=1), LocalSession(tmp_path, verbose=False),
            digits_splits)
    assert r.stop_reason == "early_stop" and len(r.history) < 6


def test_probe_is_reported(tmp_path, digits_splits):
    r = fit(tiny(epochs=1), LocalSession(tmp_path, verbose=False), digits_splits,
            probe=lambda ema: {"acc": 0.25})
    assert r.history[-1]["probe_acc"] == 0.25 and r.history[-1]["probe_s"] >= 0


def test_probe_time_total_is_cumulative_across_a_resume(tmp_path, digits_splits):
    """probe_s_total costs a trial that ASHA stops: it must cover every epoch, also those
    trained before a restart."""
    def probe(ema):
        return {"acc": 0.5}

    fit(tiny(epochs=1), LocalSession(tmp_path, verbose=False), digits_splits, probe=probe)
    r = fit(tiny(epochs=2), LocalSession(tmp_path, resume=True, verbose=False), digits_splits,
            probe=probe)
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert r.history[-1]["probe_s_total"] == pytest.approx(sum(h["probe_s"] for h in r.history))
    assert r.history[-1]["probe_s_total"] > r.history[-1]["probe_s"]


@pytest.mark.slow
def test_cli_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainables.train", "--dataset", "digits", "--depth", "2",
           "--width", "8", "--epochs", "1", "--timesteps", "50", "--steps", "5",
           "--samples-per-digit", "3", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    for f in ("checkpoint.pt", "samples.npz", "metrics.json", "figures/noise_progression.png",
              "figures/generation_steps.png", "figures/samples.png",
              "figures/training_curves.png"):
        assert (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    assert m["params"] > 0 and m["forward_gflops"] > 0 and m["epochs_run"] == 1
    from trainables.sample import load_samples
    images, labels, cfg = load_samples(out / "samples.npz")
    assert images.shape == (30, 1, 28, 28) and labels.tolist() == sorted(labels.tolist())
    assert cfg["model"]["width"] == 8


def test_cli_bad_input_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "trainables.train", "--dataset", "mnist-idx", "--data-dir",
           str(tmp_path / "missing"), "--out", str(tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--data-dir" in p.stderr
    assert "Traceback" not in p.stderr


def test_data_config_is_validated_before_training():
    with pytest.raises(ValueError):
        DataConfig(val_fraction=1.5)


def test_validation_loss_does_not_depend_on_the_batching(digits_splits):
    """The CPU default batches are small (speed); noise and t are drawn for the whole set first,
    so the loss is the same at any batch size."""
    cfg = TrialConfig.from_dict({"model": {"depth": 2, "width": 8}})
    model, sched = UNet(cfg.model).eval(), Schedule.from_config(cfg.diffusion)
    x, y = digits_splits.val.images[:300], digits_splits.val.labels[:300]
    whole = validation_loss(model, sched, x, y, rank=0, world=1, batch_size=300)
    small = validation_loss(model, sched, x, y, rank=0, world=1)  # CPU default: 64 per call
    assert small == pytest.approx(whole, rel=1e-5) and whole["val_loss"] > 0


# ----------------------------------------------------------------------------- lr plateau, clipping


def few(splits: Splits, n_train: int = 128, n_val: int = 64) -> Splits:
    """The first images of each split: 2 steps of 64 per epoch, a fraction of a second."""
    tr, va = splits.train, splits.val
    return Splits(Digits(tr.images[:n_train], tr.labels[:n_train]),
                  Digits(va.images[:n_val], va.labels[:n_val]), "digits (first images)", "few")


def test_lr_drops_by_factor_after_patience_on_a_real_stall(tmp_path, digits_splits):
    """lr 1e-6 for 12 steps: the weights move by ~1e-5, so the EMA's validation loss on fixed
    noise (~1.0: the output layer starts at zero) cannot improve by min_improvement = 0.01 and
    every epoch after the first is a stall. With patience 1 the lr drops at the end of epochs
    3 and 5 (ReduceLROnPlateau acts when the stalls exceed the patience, then counts afresh).
    (A smaller lr would not do: ReduceLROnPlateau ignores drops smaller than its eps, 1e-8.)"""
    lr, factor = 1e-6, 0.25  # not the defaults (0.5, patience 2): the configured values are used
    cfg = tiny(epochs=6, lr=lr, lr_patience=1, lr_factor=factor, min_improvement=0.01,
               early_stop_patience=None)
    r = fit(cfg, LocalSession(tmp_path, verbose=False), few(digits_splits))
    vals = [h["val_loss"] for h in r.history]
    assert max(vals) - min(vals) < cfg.train.min_improvement  # it did stall
    lrs = [h["lr"] for h in r.history]  # the lr each epoch trained with
    assert lrs == pytest.approx([lr, lr, lr, lr * factor, lr * factor, lr * factor**2], rel=1e-6)
    _, _, _, ckpt = load_checkpoint(tmp_path)  # read back from the checkpoint too
    assert [h["lr"] for h in ckpt["history"]] == pytest.approx(lrs, rel=1e-6)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr * factor**2, rel=1e-6)
    assert ckpt["scheduler"]["patience"] == 1 and ckpt["scheduler"]["factor"] == factor


def _scripted_val_loss(monkeypatch, losses):
    """Make `fit`'s validation loss follow `losses`, one per epoch."""
    it = iter(losses)

    def fake(*args, **kwargs):
        v = next(it)
        return {"val_loss": v, **{f"val_loss_q{q}": v for q in range(1, 5)}}

    monkeypatch.setattr(train_loop, "validation_loss", fake)


# improvements smaller than min_improvement (0.01) are stalls: epochs 2-3 and 5-6 stall (each
# below 1.0 and 0.985, the best so far, by less than 0.01), epoch 4 improves by 0.015
SCRIPTED = [1.0, 0.995, 0.991, 0.985, 0.98, 0.977]


def test_plateau_and_early_stopping_share_min_improvement(tmp_path, digits_splits, monkeypatch):
    _scripted_val_loss(monkeypatch, SCRIPTED)
    cfg = tiny(epochs=6, lr=1e-3, lr_patience=1, lr_factor=0.1, min_improvement=0.01,
               early_stop_patience=None)
    r = fit(cfg, LocalSession(tmp_path, verbose=False), few(digits_splits))
    # stalls at epochs 2-3 → drop after 3; improvement at 4; stalls at 5-6 → drop after 6
    assert [h["lr"] for h in r.history] == pytest.approx([1e-3] * 3 + [1e-4] * 3)
    assert r.state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    assert r.state["best_val"] == 0.985 and r.state["bad_epochs"] == 2
    assert r.state["scheduler"]["best"] == 0.985

    # early stopping counts the same stalls: patience 2 stops after epoch 3
    _scripted_val_loss(monkeypatch, SCRIPTED)
    cfg = tiny(epochs=6, lr=1e-3, lr_patience=1, lr_factor=0.1, min_improvement=0.01,
               early_stop_patience=2)
    r = fit(cfg, LocalSession(tmp_path / "es", verbose=False), few(digits_splits))
    assert r.stop_reason == "early_stop" and len(r.history) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"lr_factor": 1.0}, "lr_factor=1.0"), ({"lr_factor": 0.0}, "lr_factor=0.0"),
    ({"lr_patience": -1}, "lr_patience=-1"), ({"grad_clip": 0.0}, "grad_clip=0.0"),
    ({"min_improvement": -1e-4}, "min_improvement=-0.0001"),
    ({"early_stop_patience": 0}, "early_stop_patience=0"),
])
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def _applied_grad_norms(run) -> list[float]:
    """The global gradient norm every optimizer step of `run()` applies, from a global step
    pre-hook: it sees the gradients after clipping, just before AdamW reads them."""
    norms = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return norms


def test_grad_clip_bounds_the_applied_update(tmp_path, digits_splits):
    clip = 1e-3
    runs = {}
    for name, grad_clip in (("clipped", clip), ("off", 1e9)):
        cfg = tiny(epochs=2, lr=1e-3, grad_clip=grad_clip, amp=False)
        runs[name] = _applied_grad_norms(
            lambda cfg=cfg, name=name: fit(cfg, LocalSession(tmp_path / name, verbose=False),
                                           few(digits_splits)))
    assert len(runs["clipped"]) == len(runs["off"]) == 4  # 2 epochs × 2 steps
    # clip_grad_norm_ scales by clip / (norm + 1e-6): at most the clip, and at the clip when over
    assert max(runs["clipped"]) <= clip * (1 + 1e-5)
    assert min(runs["clipped"]) == pytest.approx(clip, rel=1e-2)
    assert min(runs["off"]) > 10 * clip  # unclipped, the gradients are far larger


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.slow  # compiling forward and backward takes 30-60 s on 2 CPU cores
def test_compiled_step_matches_eager(digits_splits):
    """`fit`'s step (make_train_step) through torch.compile(model) gives the eager step's loss
    and weights over 3 optimizer steps (forward and backward compiled). On the CPU: inductor
    generates C++, so it needs a compiler; TrainConfig.compile itself compiles only on CUDA."""
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip(f"torch.compile (dynamo) does not support Python {sys.version.split()[0]}")
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile's inductor backend needs a C++ compiler (g++/clang++) on CPU")
    # no label dropout: its torch.rand inside the compiled forward draws other numbers
    cfg = TrialConfig.from_dict({"model": {"depth": 1, "width": 8, "label_dropout": 0.0},
                                 "diffusion": {"timesteps": 50}})
    sched, tc = Schedule.from_config(cfg.diffusion), TrainConfig(lr=1e-3)
    data = (digits_splits.train.images[:96], digits_splits.train.labels[:96], None)
    losses, weights = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = UNet(cfg.model)
        ema = deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr)
        train_model = torch.compile(model) if compiled else model
        step = make_train_step(train_model, model, ema, opt, sched, tc, data, batch=32,
                               graphed=False)
        torch.manual_seed(1)  # t and noise are drawn eagerly, outside the compiled model
        losses[compiled] = [step(torch.arange(i * 32, (i + 1) * 32), i + 1).item()
                            for i in range(3)]
        weights[compiled] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-3, atol=1e-5)

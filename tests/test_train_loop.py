"""The training loop on real digits: learning, exact resume, budgets, divergence, CLI."""

import json
import subprocess
import sys

import pytest
import torch

from trainables.config import TrainConfig, TrialConfig
from trainables.data import DataConfig
from trainables.diffusion import Schedule
from trainables.train_loop import (
    LocalSession,
    fit,
    load_checkpoint,
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

"""The training step as a CUDA graph (trainables/cuda_graph.py). The host-sync-free pieces are
checked on any machine; the graph itself only where CUDA is present (the GPU machines)."""

import pytest
import torch

from trainables.config import TrialConfig
from trainables.cuda_graph import GraphedStep, make_capturable
from trainables.train_loop import LocalSession, ema_decay_at, fit, update_ema

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_tensor_decay_gives_the_same_ema_as_a_float():
    """The graph-safe EMA update (device-tensor decay) is the eager one's arithmetic."""
    torch.manual_seed(0)
    model, a, b = (torch.nn.Linear(4, 3) for _ in range(3))
    b.load_state_dict(a.state_dict())
    a.requires_grad_(False), b.requires_grad_(False)  # as fit's EMA copy
    for n in (1, 5, 10_000):
        d = ema_decay_at(n, 0.999)
        update_ema(a, model, d)
        update_ema(b, model, ema_decay_at(torch.tensor(float(n)), 0.999))
        assert float(ema_decay_at(torch.tensor(float(n)), 0.999)) == pytest.approx(d)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@cuda
def test_replay_uses_the_live_learning_rate_and_fresh_noise():
    """A learning rate changed after capture (as ReduceLROnPlateau does) reaches the replays,
    and each replay draws new noise."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    make_capturable(opt, dev)
    data = torch.randn(64, 8, device=dev)

    def step(idx, n):
        x = data[idx] + 0.1 * torch.randn(len(idx), 8, device=dev)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        return loss.detach()

    graphed = GraphedStep(step, lambda: opt.zero_grad(set_to_none=True), 16, dev, warmup=2)
    idx = torch.arange(16, device=dev)
    losses = [graphed(idx, n).item() for n in range(1, 6)]
    assert graphed.graph is not None and len(set(losses[2:])) == 3  # fresh noise each replay
    before = [p.detach().clone() for p in model.parameters()]
    lr = opt.param_groups[0]["lr"]
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    plateau.step(1.0), plateau.step(2.0)  # no improvement: halved, in place
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-3)
    lr.fill_(0.0)
    graphed(idx, 6)
    for p, q in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), q)  # lr 0: the replay moved nothing


@cuda
def test_graphed_fit_learns_like_eager_and_resumes(tmp_path, mnist_dir):
    base = {"data": {"dataset": "mnist-idx", "data_dir": str(mnist_dir)},
            "model": {"depth": 2, "width": 8},
            "diffusion": {"timesteps": 50},
            "train": {"batch_size": 64, "val_size": 128, "epochs": 4, "lr": 2e-3,
                      "early_stop_patience": None}}
    results = {}
    for graphs in (False, True):
        cfg = TrialConfig.from_dict({**base, "train": {**base["train"], "cuda_graphs": graphs}})
        results[graphs] = fit(cfg, LocalSession(tmp_path / str(graphs), verbose=False))
    eager, graphed = results[False], results[True]
    assert [h["step"] for h in graphed.history] == [h["step"] for h in eager.history]
    assert graphed.history[-1]["train_loss"] < graphed.history[0]["train_loss"]
    # different noise draws, same learning: final validation losses within 15%
    assert graphed.history[-1]["val_loss"] == pytest.approx(eager.history[-1]["val_loss"], rel=0.15)
    # resume a graphed run from its checkpoint (the optimizer state is made capturable again)
    cfg = TrialConfig.from_dict({**base, "train": {**base["train"], "epochs": 5}})
    more = fit(cfg, LocalSession(tmp_path / "True", resume=True, verbose=False))
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4, 5]
    assert more.history[-1]["step"] == graphed.history[-1]["step"] * 5 // 4

"""Judge and quality metrics validated on real digits: real beats blurred, noise and wrong
labels; top-k selection picks exactly the k best; the real-data reference row."""

import pytest
import torch
import torch.nn.functional as F

from trainables.data import DataConfig, load_splits
from trainables.evaluate import (
    EvalConfig,
    frechet_distance,
    reference_row,
    reference_split,
    score_images,
    select_top_k,
)
from trainables.judge import load_or_train_judge


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return load_splits(DataConfig("mnist-idx", str(mnist_dir)))


@pytest.fixture(scope="session")
def judge(mnist, judge_cache):
    return load_or_train_judge(mnist, judge_cache, verbose=False)  # shared with test_quality


def test_judge_reaches_target_on_offline_mnist(judge):
    assert judge.val_acc >= 0.97  # target on the offline 10k split


def test_judge_is_cached_by_fingerprint(mnist, judge, tmp_path):
    from trainables.judge import _VERSION, Judge

    torch.save(judge.state(), tmp_path / f"judge-v{_VERSION}-{mnist.fingerprint}.pt")
    again = load_or_train_judge(mnist, tmp_path, verbose=False)  # loads, does not retrain
    assert isinstance(again, Judge) and again.val_acc == judge.val_acc
    x = mnist.val.images[:5]
    torch.testing.assert_close(again.probs(x), judge.probs(x))


def blur(x):
    k = torch.ones(1, 1, 5, 5) / 25
    return F.conv2d(x, k, padding=2)


def test_real_digits_beat_degraded_ones(mnist, judge):
    held, ref = reference_split(mnist.val, EvalConfig(n_per_digit=20))
    real_feats = judge.features(ref.images)
    x, y = held.images, held.labels

    def metrics(images, labels):
        return score_images(images, labels, judge, None, real_feats)[0]

    real = metrics(x, y)
    degraded = {
        "blurred": metrics(blur(blur(x)), y),
        "noise": metrics(torch.randn_like(x).clamp(-1, 1), y),
        "wrong label": metrics(x, (y + 1) % 10),
    }
    assert real["judge_acc"] >= 0.95
    for name, m in degraded.items():
        assert m["judge_acc"] < real["judge_acc"] - 0.2, name
        assert m["judge_conf"] < real["judge_conf"] - 0.2, name
    assert degraded["blurred"]["frechet"] > 2 * real["frechet"]
    assert degraded["noise"]["frechet"] > 5 * real["frechet"]
    assert real["clip_top"] is None  # CLIP disabled: absent, not replaced


def test_reference_row(mnist, judge):
    row = reference_row(mnist.val, judge, None)
    assert row["judge_acc"] >= 0.95 and row["n_samples"] == 100
    assert len(row["per_digit"]) == 10 and all(r["judge_acc"] > 0.7 for r in row["per_digit"])


def test_frechet_distance_properties():
    a = torch.randn(500, 8)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = frechet_distance(a + 1.0, a)
    assert shifted == pytest.approx(8.0, rel=0.02)  # ||Δμ||² = 8 for a unit shift in 8 dims


def test_frechet_distance_matches_torchmetrics_fid():
    """Same number as torchmetrics' FID given the same (precomputed) features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = torch.randn(400, 16), 0.7 * torch.randn(300, 16) + 0.3

    class Precomputed(torch.nn.Identity):
        num_features = 16

    fid = FrechetInceptionDistance(feature=Precomputed())
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    assert frechet_distance(fake, real) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_select_top_k_picks_exactly_the_k_best():
    torch.manual_seed(0)
    labels = torch.arange(10).repeat_interleave(10)
    scores = torch.rand(100)
    keep = select_top_k(scores, labels, 3)
    assert keep.sum() == 30
    for d in range(10):
        mine = labels == d
        assert keep[mine].sum() == 3
        assert scores[mine & keep].min() >= scores[mine & ~keep].max()


class FakeClip:
    """Scores = a known per-image value, to check the CLIP-top-k bookkeeping exactly."""

    description = "fake"

    def __init__(self, scores, preds):
        self.scores, self.preds = scores, preds

    def score(self, images, labels):
        return {"clip_score": self.scores, "clip_pred": self.preds}


def test_clip_top_k_metrics(digits_splits):
    from trainables.judge import train_judge

    judge = train_judge(digits_splits, epochs=1, verbose=False)
    labels = torch.arange(10).repeat_interleave(10)
    images = digits_splits.val.images[:100]
    scores = torch.arange(100).float() % 10  # within each digit: 0..9
    preds = torch.where(scores >= 7, labels, (labels + 1) % 10)  # CLIP right on the top 3
    m, per_digit = score_images(images, labels, judge, FakeClip(scores, preds),
                                judge.features(digits_splits.val.images), top_k=3)
    assert m["clip_top"] == pytest.approx(8.0) and m["clip_all"] == pytest.approx(4.5)
    assert m["clip_gain"] == pytest.approx(3.5)
    assert m["clip_acc_top"] == 1.0 and m["clip_acc_all"] == pytest.approx(0.3)
    assert per_digit[4]["clip_top"] == pytest.approx(8.0) and per_digit[4]["digit"] == 4


def test_eval_config_validation():
    with pytest.raises(ValueError, match="top_k=11"):
        EvalConfig(n_per_digit=10, top_k=11)


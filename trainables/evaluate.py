"""Quality of a trained model: CLIP-top-3 (the study's headline), next to in-domain judge metrics.

For each digit, n samples are generated from fixed evaluation noise (the same for every trial);
each sample gets a CLIP score and the judge's reading. CLIP-top-k keeps the k samples per digit
with the best CLIP score and reports their mean score, the mean of all, the selection gain and
zero-shot accuracy; the same selection by judge confidence is reported beside it. The judge
gives conditional accuracy, confidence in the requested digit, and a Fréchet distance between
judge features of the samples and of real validation digits.

    metrics, per_digit = score_images(images, labels, judge, clip, real_features, top_k=3)
    metrics = evaluate_model(ema, cfg, judge, clip, real, out_dir)   # also writes samples.npz
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.data import Digits
from trainables.diffusion import Schedule
from trainables.judge import Judge
from trainables.sample import generate, save_samples


@dataclass(frozen=True)
class EvalConfig:
    n_per_digit: int = 10  # samples generated per digit
    top_k: int = 3  # kept per digit by CLIP score (CLIP-top-3) and by judge confidence
    seed: int = 0  # evaluation noise, shared by every trial
    real_per_digit: int = 100  # real validation digits per class for the Fréchet reference

    def __post_init__(self):
        if not 1 <= self.top_k <= self.n_per_digit:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_per_digit={self.n_per_digit}]")

    def to_dict(self) -> dict:
        return asdict(self)


def select_top_k(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask keeping, for every label, the k entries with the highest score."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for d in labels.unique():
        idx = torch.nonzero(labels == d).flatten()
        keep[idx[scores[idx].topk(min(k, len(idx))).indices]] = True
    return keep


def frechet_distance(feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula, with the
    judge's features in place of Inception's): |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), the
    trace of the root taken from the eigenvalues of Σ1 Σ2, as torchmetrics computes it.

    Written out rather than imported: torchmetrics costs ~4 s of imports in every fresh trial
    worker; tests/test_evaluate.py checks this against torchmetrics' FID."""
    a, b = feats.double(), real_feats.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def reference_split(real: Digits, ecfg: EvalConfig) -> tuple[Digits, Digits]:
    """(held, reference) from real validation digits: the first n_per_digit of each class are
    scored like samples (the real-data row); the next real_per_digit of each class are the
    Fréchet reference every trial is compared with."""
    held, ref = [], []
    for d in range(10):
        idx = torch.nonzero(real.labels == d).flatten()
        held.append(idx[: ecfg.n_per_digit])
        ref.append(idx[ecfg.n_per_digit : ecfg.n_per_digit + ecfg.real_per_digit])
    held, ref = torch.cat(held), torch.cat(ref)
    return (Digits(real.images[held], real.labels[held]),
            Digits(real.images[ref], real.labels[ref]))


def score_images(images: torch.Tensor, labels: torch.Tensor, judge: Judge, clip,
                 real_features: torch.Tensor, top_k: int = 3) -> tuple[dict, list[dict]]:
    """Flat metrics and a per-digit table for a set of images with requested labels.

    `clip` is a ClipScorer, or None when CLIP is disabled: CLIP columns are then None (absent),
    never replaced by another number.
    """
    probs = judge.probs(images)
    conf = probs.gather(1, labels[:, None]).squeeze(1)
    correct = (probs.argmax(1) == labels).float()
    judge_top = select_top_k(conf, labels, top_k)
    m = {
        "judge_acc": correct.mean().item(),
        "judge_conf": conf.mean().item(),
        "judge_acc_top_judge": correct[judge_top].mean().item(),
        "frechet": frechet_distance(judge.features(images), real_features),
        "n_samples": len(labels),
    }
    rows = {int(d): {"digit": int(d), "judge_acc": correct[labels == d].mean().item(),
                     "judge_conf": conf[labels == d].mean().item()} for d in labels.unique()}

    clip_keys = ("clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top",
                 "judge_acc_top_clip", "clip_top_judge")
    if clip is None:
        m.update(dict.fromkeys(clip_keys))
        return m, list(rows.values())
    c = clip.score(images, labels)
    score, clip_correct = c["clip_score"], (c["clip_pred"] == labels).float()
    top = select_top_k(score, labels, top_k)
    m.update({
        "clip_top": score[top].mean().item(),  # CLIP-top-k, the headline quality
        "clip_all": score.mean().item(),
        "clip_gain": (score[top].mean() - score.mean()).item(),
        "clip_acc_all": clip_correct.mean().item(),
        "clip_acc_top": clip_correct[top].mean().item(),
        "judge_acc_top_clip": correct[top].mean().item(),  # does CLIP pick the right digits?
        "clip_top_judge": score[judge_top].mean().item(),  # CLIP score of the judge's pick
    })
    for d, row in rows.items():
        sel, mine = top & (labels == d), labels == d
        row.update({"clip_top": score[sel].mean().item(), "clip_all": score[mine].mean().item(),
                    "clip_gain": (score[sel].mean() - score[mine].mean()).item(),
                    "clip_acc_all": clip_correct[mine].mean().item(),
                    "clip_acc_top": clip_correct[sel].mean().item()})
    return m, list(rows.values())


def reference_row(real: Digits, judge: Judge, clip, ecfg: EvalConfig = EvalConfig()) -> dict:
    """The same metrics on real validation digits: the ceiling next to every generated score."""
    held, ref = reference_split(real, ecfg)
    m, per_digit = score_images(held.images, held.labels, judge, clip,
                                judge.features(ref.images), ecfg.top_k)
    return {"source": "real validation digits", **m, "per_digit": per_digit}


def evaluate_model(ema, cfg: TrialConfig, judge: Judge, clip, real: Digits,
                   out_dir: Path | None, ecfg: EvalConfig = EvalConfig(),
                   guidance: float | None = None, grid_title: str = "") -> dict:
    """Generate n_per_digit samples per digit from the fixed evaluation noise and score them.

    Writes samples.npz, per_digit.csv and the samples.png grid into out_dir (when given).
    Returns a flat dict of metrics, including the evaluation's own cost.
    """
    sc = cfg.sample
    w = sc.guidance if guidance is None else guidance
    t0 = time.perf_counter()
    images, labels = generate(ema, Schedule.from_config(cfg.diffusion), range(10),
                              ecfg.n_per_digit, w, sc.sampler, sc.steps, sc.eta, seed=ecfg.seed)
    sample_s = time.perf_counter() - t0
    _, ref = reference_split(real, ecfg)
    m, per_digit = score_images(images, labels, judge, clip, judge.features(ref.images),
                                ecfg.top_k)
    steps = cfg.diffusion.timesteps if sc.sampler == "ddpm" else sc.steps
    m.update({"guidance": w, "eval_sample_s": sample_s, "eval_s": time.perf_counter() - t0,
              "eval_sampler": sc.sampler, "eval_steps": steps,
              "clip_model": clip.description if clip is not None else "disabled"})
    if out_dir is not None:
        import pandas as pd

        out_dir = Path(out_dir)
        save_samples(out_dir / "samples.npz", images, labels, cfg.to_dict(),
                     judge_conf=judge.probs(images).gather(1, labels[:, None]).squeeze(1).numpy())
        pd.DataFrame(per_digit).to_csv(out_dir / "per_digit.csv", index=False)
        from trainables import figures  # matplotlib: only when writing outputs

        figures.close(figures.sample_grid(images, labels, path=out_dir / "samples.png",
                                          title=grid_title or f"w = {w:.2f}"))
    return m


def quality_probe(judge: Judge, cfg: TrialConfig, n_per_digit: int = 2, steps: int = 10):
    """A cheap in-training quality signal for early stopping: the judge's accuracy on a few
    DDIM samples (diffusion loss keeps falling while samples stay poor)."""
    sched = Schedule.from_config(cfg.diffusion)

    def probe(ema) -> dict:
        images, labels = generate(ema, sched, range(10), n_per_digit, cfg.sample.guidance,
                                  "ddim", min(steps, cfg.diffusion.timesteps), seed=12345)
        probs = judge.probs(images)
        return {"judge_acc": (probs.argmax(1) == labels).float().mean().item()}

    return probe

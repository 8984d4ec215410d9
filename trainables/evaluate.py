"""Quality of a trained model: CLIP-top-3, the judge's reading, and fidelity/diversity metrics.

For each digit, n samples are generated from fixed evaluation noise (the same for every trial);
each sample gets a CLIP score and the judge's reading. CLIP-top-k keeps the k samples per digit
with the best CLIP score and reports their mean score, the mean of all, the selection gain and
zero-shot accuracy; the same selection by judge confidence is reported beside it. The judge
gives conditional accuracy, confidence in the requested digit, the share it reads as no digit,
and the feature space in which the samples are compared with real validation digits: a Fréchet
distance, and class-conditional precision, recall, density and coverage (``quality.py``), of
which ``QUALITY_METRIC`` (coverage) is the quality that guidance cannot inflate.

    ref = quality_reference(real, judge, ecfg)            # real digits' judge features, once
    metrics, per_digit = score_images(images, labels, judge, clip, ref.features, reference=ref)
    metrics = evaluate_model(ema, cfg, judge, clip, real, out_dir)   # also writes samples.npz
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainables import artefacts, precision
from trainables.config import TrialConfig
from trainables.data import DIGITS, Digits
from trainables.diffusion import Schedule
from trainables.judge import NO_DIGIT, Judge
from trainables.quality import (
    DEFAULT_K,
    QUALITY_KEYS,
    Reference,
    frechet_distance,
    per_digit_quality,
)
from trainables.sample import generate, save_samples, to_uint8

PROBE_SEED = 12345  # the in-training probe's noise: fixed, and apart from the evaluation's
PROBE_GUIDANCE = (0.5, 2.0, 4.0)  # w values the probe reads a model at; it keeps the best


@dataclass(frozen=True)
class EvalConfig:
    n_per_digit: int = 10  # samples generated per digit
    top_k: int = 3  # kept per digit by CLIP score (CLIP-top-3) and by judge confidence
    seed: int = 0  # evaluation noise, shared by every trial
    real_per_digit: int = 100  # real validation digits per class for the Fréchet reference
    quality_k: int = DEFAULT_K  # nearest neighbours of the precision/recall/coverage manifolds

    def __post_init__(self):
        if not 1 <= self.top_k <= self.n_per_digit:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_per_digit={self.n_per_digit}]")
        if self.quality_k < 1:
            raise ValueError(f"quality_k={self.quality_k} must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


def select_top_k(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask keeping, for every label, the k entries with the highest score."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for d in labels.unique():
        idx = torch.nonzero(labels == d).flatten()
        keep[idx[scores[idx].topk(min(k, len(idx))).indices]] = True
    return keep


def reference_split(real: Digits, ecfg: EvalConfig) -> tuple[Digits, Digits]:
    """(held, reference) from real validation digits: the first n_per_digit of each class are
    scored like samples (the real-data row); the next real_per_digit of each class are the
    reference every trial is compared with (Fréchet distance, precision/recall, coverage)."""
    held, ref = [], []
    for d in DIGITS:
        idx = torch.nonzero(real.labels == d).flatten()
        held.append(idx[: ecfg.n_per_digit])
        ref.append(idx[ecfg.n_per_digit : ecfg.n_per_digit + ecfg.real_per_digit])
    held, ref = torch.cat(held), torch.cat(ref)
    return (Digits(real.images[held], real.labels[held]),
            Digits(real.images[ref], real.labels[ref]))


def quality_reference(real: Digits, judge: Judge, ecfg: EvalConfig = EvalConfig()) -> Reference:
    """The real digits every trial's samples are compared with (``reference_split``'s second
    part), as judge features with their k-NN radii."""
    _, ref = reference_split(real, ecfg)
    return Reference.build(judge.features(ref.images), ref.labels, ecfg.quality_k)


def score_images(images: torch.Tensor, labels: torch.Tensor, judge: Judge, clip,
                 real_features: torch.Tensor, top_k: int = 3,
                 reference: Reference | None = None) -> tuple[dict, list[dict]]:
    """Flat metrics and a per-digit table for a set of images with requested labels.

    `clip` is a ClipScorer, or None when CLIP is disabled: CLIP columns are then None (absent),
    never replaced by another number. Without a `reference` (real digits with their labels) the
    class-conditional quality metrics are None too.
    """
    probs = judge.probs(images)
    conf = probs.gather(1, labels[:, None]).squeeze(1)
    pred = probs.argmax(1)
    correct = (pred == labels).float()
    no_digit = (pred == NO_DIGIT).float()
    judge_top = select_top_k(conf, labels, top_k)
    feats = judge.features(images)
    m = {
        "judge_acc": correct.mean().item(),
        "judge_conf": conf.mean().item(),
        "judge_no_digit": no_digit.mean().item(),  # read as "no digit" (noise, blobs, scribbles)
        "judge_acc_top_judge": correct[judge_top].mean().item(),
        "frechet": frechet_distance(feats, real_features),
        "n_samples": len(labels),
    }
    rows = {int(d): {"digit": int(d), "judge_acc": correct[labels == d].mean().item(),
                     "judge_conf": conf[labels == d].mean().item(),
                     "judge_no_digit": no_digit[labels == d].mean().item()}
            for d in labels.unique()}
    m.update(dict.fromkeys(QUALITY_KEYS))
    if reference is not None:
        per_digit = per_digit_quality(feats, labels, reference)
        for d, q in per_digit.items():
            rows[d].update(q)
        m.update({key: sum(q[key] for q in per_digit.values()) / len(per_digit)
                  for key in QUALITY_KEYS})  # quality_metrics, from the same per-digit rows

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
    held, _ = reference_split(real, ecfg)
    ref = quality_reference(real, judge, ecfg)
    m, per_digit = score_images(held.images, held.labels, judge, clip, ref.features, ecfg.top_k,
                                reference=ref)
    return {"source": "real validation digits", **m, "per_digit": per_digit}


def evaluate_model(ema, cfg: TrialConfig, judge: Judge, clip, real: Digits,
                   out_dir: Path | None, ecfg: EvalConfig = EvalConfig(),
                   guidance: float | None = None, grid_title: str = "",
                   reference: Reference | None = None) -> dict:
    """Generate n_per_digit samples per digit from the fixed evaluation noise and score them.

    `guidance` overrides the trial's own w (e.g. the one `guidance.search_guidance` chose);
    `reference` is `quality_reference(real, judge, ecfg)`, built here when not given.
    Writes samples.npz, per_digit.csv and the samples.png grid into out_dir (when given).
    Returns a flat dict of metrics, including the evaluation's own cost.
    """
    sc = cfg.sample
    w = sc.guidance if guidance is None else guidance
    amp = precision.resolve(sc.amp, next(ema.parameters()).device)
    t0 = time.perf_counter()
    images, labels = generate(ema, Schedule.from_config(cfg.diffusion), DIGITS,
                              ecfg.n_per_digit, w, sc.sampler, sc.steps, sc.eta, seed=ecfg.seed,
                              amp=amp)
    sample_s = time.perf_counter() - t0
    ref = reference or quality_reference(real, judge, ecfg)
    m, per_digit = score_images(images, labels, judge, clip, ref.features, ecfg.top_k,
                                reference=ref)
    steps = cfg.diffusion.timesteps if sc.sampler == "ddpm" else sc.steps
    m.update({"guidance": w, "eval_sample_s": sample_s, "eval_s": time.perf_counter() - t0,
              "eval_sampler": sc.sampler, "eval_steps": steps,
              "eval_dtype": precision.dtype_name(amp),
              "clip_model": clip.description if clip is not None else "disabled"})
    if out_dir is not None:
        import pandas as pd

        out_dir = Path(out_dir)
        save_samples(out_dir / artefacts.SAMPLES, images, labels, cfg.to_dict(),
                     judge_conf=judge.probs(images).gather(1, labels[:, None]).squeeze(1).numpy())
        pd.DataFrame(per_digit).to_csv(out_dir / artefacts.PER_DIGIT, index=False)
        from trainables import figures  # matplotlib: only when writing outputs

        figures.close(figures.sample_grid(images, labels, path=out_dir / artefacts.GRID,
                                          title=grid_title or f"w = {w:.2f}"))
    return m


def quality_probe(judge: Judge, cfg: TrialConfig, n_per_digit: int = 2, steps: int = 10,
                  guidance_values: tuple[float, ...] = PROBE_GUIDANCE,
                  keep: list | None = None):
    """A cheap in-training quality signal for early stopping: the judge's accuracy on a few DDIM
    samples (diffusion loss keeps falling while samples stay poor) at each of a few guidance
    weights from the same noise, keeping the best w (by accuracy, then confidence). Guidance is
    tuned per trained model afterwards (``guidance.py``), so no model is stopped for its w.
    `keep`: a list each call appends the best w's samples to, (uint8 images, labels), so a
    report can show how the digits grew during training at no extra sampling."""
    sched = Schedule.from_config(cfg.diffusion)

    def probe(ema) -> dict:
        best = None
        for w in guidance_values:
            images, labels = generate(ema, sched, DIGITS, n_per_digit, w, "ddim",
                                      min(steps, cfg.diffusion.timesteps), seed=PROBE_SEED,
                                      amp=cfg.sample.amp)
            probs = judge.probs(images)
            m = {"judge_acc": (probs.argmax(1) == labels).float().mean().item(),
                 "judge_conf": probs.gather(1, labels[:, None]).mean().item(), "guidance": w}
            if best is None or (m["judge_acc"], m["judge_conf"]) > (best["judge_acc"],
                                                                    best["judge_conf"]):
                best, best_images = m, (to_uint8(images), labels.numpy())
        if keep is not None:
            keep.append(best_images)
        return best

    return probe

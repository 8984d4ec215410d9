"""Classifier-free guidance tuned per trained model: the weight w that maximises the study's
quality (``quality.QUALITY_METRIC``, class-conditional coverage) on fixed evaluation noise.

The best w depends on the model (a weak model needs more guidance to draw legible digits, a good
one loses diversity to it), so a trial's sampled w says little about its model. After training,
``search_guidance`` scores a coarse grid of w, then refines around the best point: midpoints to
its neighbours, halving the step each round. Every w is sampled from the *same* noise (common
random numbers), so the differences along the curve are differences of w, not of the noise.

    ref = quality_reference(real, judge, ecfg)
    result = search_guidance(ema, cfg, judge, ref)                   # GuidanceResult
    metrics = evaluate_model(ema, cfg, judge, clip, real, out, ecfg, guidance=result.guidance,
                             reference=ref)

The search's protocol (``GuidanceSearch``: 10 per digit, DDIM-10, grid 0/1/2/4/6 and one round
of refinement, 7 evaluations) is the cheapest that ``benchmarks/quality_objective.py`` measured
choosing the same w as the full evaluation protocol (10 per digit, DDIM-25, 3 noise seeds):
5 per digit ranked w worse (Spearman 0.36-0.96 against 0.86-0.93 for 10 per digit).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from trainables.config import TrialConfig
from trainables.data import DIGITS
from trainables.diffusion import Schedule
from trainables.judge import NO_DIGIT, Judge
from trainables.quality import QUALITY_METRIC, Reference, quality_metrics
from trainables.sample import generate


@dataclass(frozen=True)
class GuidanceSearch:
    grid: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 6.0)  # coarse grid of w, scored first
    refine_rounds: int = 1  # rounds of midpoints either side of the best w so far
    n_per_digit: int = 10  # samples per digit at each w
    # DDIM steps of the search's samples (η from the trial's SampleConfig). DDIM-10 picked the
    # same w as the evaluation's DDIM-25 (±0.5) on three trained models at 0.4x the cost; its
    # coverage values are not DDIM-25's (up to +0.08), so the score is DDIM-25 at the chosen w.
    steps: int = 10
    seed: int = 0  # the noise every w is sampled from (the evaluation's, by default)

    def __post_init__(self):
        # a list from a JSON round trip would make the frozen config unequal and unhashable
        object.__setattr__(self, "grid", tuple(float(w) for w in self.grid))
        if not self.grid or any(w < 0 for w in self.grid):
            raise ValueError(f"grid={self.grid} must hold at least one w >= 0")
        if self.refine_rounds < 0:
            raise ValueError(f"refine_rounds={self.refine_rounds} must be >= 0")
        if self.n_per_digit < 1 or self.steps < 1:
            raise ValueError(f"n_per_digit={self.n_per_digit} and steps={self.steps} "
                             "must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GuidanceResult:
    guidance: float  # the chosen w: highest quality, the smallest such w on a tie
    curve: tuple[dict, ...]  # one row per w scored, by w: guidance, quality metrics, judge, s
    seconds: float  # the whole search's wall time


def score_guidance(ema, sched: Schedule, judge: Judge, reference: Reference, guidance: float,
                   n_per_digit: int, steps: int, eta: float = 1.0, seed: int = 0,
                   amp: bool | None = False) -> dict:
    """One point of the quality-vs-w curve: DDIM samples of every digit at `guidance` from the
    noise of `seed`, scored by the judge and against `reference`; `amp` as `generate` takes it."""
    t0 = time.perf_counter()
    images, labels = generate(ema, sched, DIGITS, n_per_digit, guidance, "ddim",
                              min(steps, sched.timesteps), eta, seed=seed, amp=amp)
    probs = judge.probs(images)
    pred = probs.argmax(1)
    return {"guidance": float(guidance),
            **quality_metrics(judge.features(images), labels, reference),
            "judge_acc": (pred == labels).float().mean().item(),
            "judge_conf": probs.gather(1, labels[:, None]).mean().item(),
            "judge_no_digit": (pred == NO_DIGIT).float().mean().item(),
            "seconds": time.perf_counter() - t0}


def _refine(scored: list[float], best: float) -> list[float]:
    """Midpoints between `best` and its neighbours among the w scored so far."""
    i = scored.index(best)
    return [(scored[j] + best) / 2 for j in (i - 1, i + 1) if 0 <= j < len(scored)]


@torch.no_grad()
def search_guidance(ema, cfg: TrialConfig, judge: Judge, reference: Reference,
                    search: GuidanceSearch = GuidanceSearch()) -> GuidanceResult:
    """The w in the search's range where `ema` samples score the highest QUALITY_METRIC, with
    the whole curve of what was scored."""
    t0 = time.perf_counter()
    sched = Schedule.from_config(cfg.diffusion)
    curve: dict[float, dict] = {}

    def score(w: float) -> None:
        if w not in curve:
            curve[w] = score_guidance(ema, sched, judge, reference, w, search.n_per_digit,
                                      search.steps, cfg.sample.eta, search.seed, cfg.sample.amp)

    def best() -> float:  # ties go to the smallest w: guidance only costs diversity
        return max(sorted(curve), key=lambda w: curve[w][QUALITY_METRIC])

    for w in search.grid:
        score(float(w))
    for _ in range(search.refine_rounds):
        for w in _refine(sorted(curve), best()):
            score(w)
    rows = tuple(curve[w] for w in sorted(curve))
    return GuidanceResult(best(), rows, time.perf_counter() - t0)




def write_curve(path, curve: tuple[dict, ...]) -> None:
    """The search's curve as a CSV table: one row per w scored."""
    import pandas as pd

    pd.DataFrame(list(curve)).to_csv(path, index=False)


def curve_summary(curve: tuple[dict, ...]) -> str:
    """The curve in one results-table cell: JSON {w: quality}, w and quality rounded."""
    import json

    return json.dumps({f"{row['guidance']:g}": round(row[QUALITY_METRIC], 4) for row in curve})

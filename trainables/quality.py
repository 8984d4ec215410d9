"""Sample quality that guidance and mode collapse cannot inflate: fidelity and diversity together,
per requested digit, in the judge's feature space. Pure tensor functions.

The judge's accuracy saturates at 1.00 and rises with the guidance weight w however stereotyped
the digits become; these metrics compare the *set* of samples with real digits instead:

- **precision / recall** (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models"): each point's k-NN radius r_k(x) within its own set defines a
  manifold ∪ B(x, r_k(x)) of open balls; precision = share of samples inside the real manifold,
  recall = share of real points inside the samples' manifold.
- **density / coverage** (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models"), with the balls around real points only (robust to outlying samples):
  density = (1 / kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_k(X_i))] (can exceed 1),
  coverage = (1 / N) Σ_i 1[∃ j: Y_j ∈ B(X_i, r_k(X_i))], for N real points X and M samples Y.
  Their reference code (``prdc``) gives the same four numbers (to 1e-7) but takes ~130 ms per
  digit through scikit-learn's process pool, against ~1 ms here.

All four are **class-conditional**: the samples requested as digit d against the real digits of
d, averaged over digits, so a model drawing perfect 7s when asked for 3 scores 0 for digit 3.
Mode collapse keeps precision and density but loses recall and coverage; over-guidance narrows
the samples to a few prototypes, which coverage sees (benchmarks/quality_objective.py).

``QUALITY_METRIC`` names the one the study optimises, chosen by that benchmark.

    ref = Reference.build(judge.features(real.images), real.labels, k=5)
    m = quality_metrics(judge.features(images), labels, ref)   # {"coverage": …, "precision": …}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QUALITY_METRIC = "coverage"  # the key of quality_metrics the study optimises (see docstring)
QUALITY_KEYS = ("precision", "recall", "density", "coverage")
DEFAULT_K = 5  # nearest neighbours of the manifold radii (Naeem et al.'s choice)


def knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance of each point to its k-th nearest neighbour in `feats` (itself excluded);
    0 where the set has no k other points (too few points to span a manifold)."""
    if len(feats) <= k:
        return torch.zeros(len(feats))
    d = torch.cdist(feats, feats)  # (N, N), the diagonal is each point to itself
    return d.kthvalue(k + 1, dim=1).values


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall of `fake` (M, D) against `real`
    (N, D). Balls are open (``<``, as in Naeem et al.'s reference code, ``prdc``): identical
    samples have radius 0, so a collapsed set recalls nothing."""
    r_real = knn_radii(real, k) if real_radii is None else real_radii
    d = torch.cdist(real, fake)  # (N, M)
    precision = (d < r_real[:, None]).any(0).float().mean()
    recall = (d < knn_radii(fake, k)[None, :]).any(1).float().mean()
    return precision.item(), recall.item()


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Naeem et al.'s density and coverage of `fake` (M, D) against `real` (N, D)."""
    r_real = knn_radii(real, k) if real_radii is None else real_radii
    inside = torch.cdist(real, fake) < r_real[:, None]  # (N, M): sample j in real ball i
    density = inside.float().sum() / (k * fake.shape[0])
    coverage = inside.any(1).float().mean()
    return density.item(), coverage.item()


def frechet_distance(feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID's
    formula with the judge's features in place of Inception's): |μ1 − μ2|² + tr(Σ1 + Σ2 −
    2 (Σ1 Σ2)^½), the trace of the root taken from the eigenvalues of Σ1 Σ2, as torchmetrics
    computes it.

    Written out rather than imported: torchmetrics costs ~4 s of imports in every fresh trial
    worker; tests/test_evaluate.py checks this against torchmetrics' FID."""
    a, b = feats.double(), real_feats.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


@dataclass(frozen=True)
class Reference:
    """Real digits' judge features, with each one's k-NN radius among the real digits of its
    own class: computed once, shared by every evaluation that compares samples with them."""

    features: torch.Tensor  # (N, D) judge features of real digits
    labels: torch.Tensor  # (N,) their digits
    radii: torch.Tensor  # (N,) k-NN radius of each within its class
    k: int  # nearest neighbours of the radii

    @classmethod
    def build(cls, features: torch.Tensor, labels: torch.Tensor, k: int = DEFAULT_K) -> Reference:
        if k < 1:
            raise ValueError(f"k={k} nearest neighbours must be at least 1")
        radii = torch.empty(len(labels))
        for d in labels.unique():
            mine = labels == d
            if mine.sum() <= k:
                raise ValueError(f"digit {int(d)} has {int(mine.sum())} reference images; "
                                 f"k={k} nearest neighbours need more than k")
            radii[mine] = knn_radii(features[mine], k)
        return cls(features.float(), labels, radii, k)


def per_digit_quality(feats: torch.Tensor, labels: torch.Tensor, ref: Reference) -> dict[int, dict]:
    """{digit: {precision, recall, density, coverage}} of samples (their judge features and
    requested digits) against the real digits of the same digit in `ref`.

    A digit with at most k samples has sample radii 0 (``knn_radii``): its recall is 0 (too few
    samples to span a manifold are no evidence of diversity)."""
    out = {}
    for d in labels.unique().tolist():
        fake, mine = feats[labels == d].float(), ref.labels == d
        if not mine.any():
            raise ValueError(f"the reference has no real images of digit {d}")
        real, radii = ref.features[mine], ref.radii[mine]
        precision, recall = precision_recall(real, fake, ref.k, radii)
        density, coverage = density_coverage(real, fake, ref.k, radii)
        out[d] = dict(zip(QUALITY_KEYS, (precision, recall, density, coverage), strict=True))
    return out


def quality_metrics(feats: torch.Tensor, labels: torch.Tensor, ref: Reference) -> dict:
    """Class-conditional precision, recall, density and coverage: ``per_digit_quality``
    averaged over the requested digits (each digit counts the same)."""
    rows = per_digit_quality(feats, labels, ref).values()
    return {key: sum(r[key] for r in rows) / len(rows) for key in QUALITY_KEYS}

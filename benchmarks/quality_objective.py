"""Which quality objective can guidance and mode collapse not inflate? Measured on trained models.

    python benchmarks/quality_objective.py --model weak=/tmp/models/d2w8_e1 \\
        --model medium=/tmp/models/d3w16_e4 --model good=/tmp/models/d3w16_e12

Models come from `python -m trainables.train ... --out DIR`. For every model, w and evaluation
noise seed it samples 10 per digit (DDIM-25, η = 1, the study's evaluation) and scores the
candidates of `trainables/quality.py` (class-conditional precision, recall, density, coverage,
their combinations) next to the judge's accuracy and the Fréchet distance. It prints:
(0) the judge: validation accuracy and "no digit" rates; (a) each objective vs w, mean ± std over
3 noise seeds; (b) a mode-collapsed set (each digit's best sample × n) and a wrong-digit set
(asked for d + 1, drew d) vs the honest samples; (c) real held-out digits; (d) the spread over
seeds next to the gaps between models; (c') the models sampled with DDIM-10, which concentrates
on typical digits; then the cheaper search protocols (fewer samples or steps, the same noise at
every w) against the full one, and the guidance search's cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist  # noqa: E402
from trainables.data import DIGITS, NUM_CLASSES  # noqa: E402
from trainables.diffusion import Schedule  # noqa: E402
from trainables.evaluate import EvalConfig, quality_reference, reference_split  # noqa: E402
from trainables.guidance import GuidanceSearch, search_guidance  # noqa: E402
from trainables.judge import NO_DIGIT, gaussian_blur, load_or_train_judge, scribbles  # noqa: E402
from trainables.quality import Reference, frechet_distance, quality_metrics  # noqa: E402
from trainables.sample import generate  # noqa: E402
from trainables.train_loop import load_checkpoint  # noqa: E402

W = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
SEEDS = (0, 1, 2)
OBJECTIVES = ("judge_acc", "precision", "recall", "density", "coverage", "pr_f1", "dc_gmean",
              "frechet")


def score(images, labels, judge, ref: Reference) -> dict:
    """Every candidate objective for one set of images with requested labels."""
    feats = judge.features(images)
    m = quality_metrics(feats, labels, ref)
    p, r = m["precision"], m["recall"]
    m["pr_f1"] = 2 * p * r / (p + r) if p + r else 0.0  # harmonic mean of precision and recall
    m["dc_gmean"] = (min(m["density"], 1.0) * m["coverage"]) ** 0.5
    probs = judge.probs(images)
    m["judge_acc"] = (probs.argmax(1) == labels).float().mean().item()
    m["judge_conf"] = probs.gather(1, labels[:, None]).mean().item()
    m["frechet"] = frechet_distance(feats, ref.features)
    return m


def mean_std(values) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else 0.0)


def spearman(a, b) -> float:
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


def tangles(n: int, g: torch.Generator) -> torch.Tensor:
    """Scribbles drawn unlike the judge's negatives: 8 random points in the digits' 20 × 20
    box joined by strokes stamped 2 px wide (as tests/test_quality.py draws them)."""
    img = -torch.ones(n, 28, 28)
    for i in range(n):
        pts = 4 + 19 * torch.rand(8, 2, generator=g)
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            for t in torch.linspace(0, 1, 30):
                y, x = (a + t * (b - a)).long().tolist()
                img[i, y : y + 2, x : x + 2] = 1.0
    return img.unsqueeze(1)


def judge_section(judge, splits) -> None:
    val = splits.val
    pred = judge.probs(val.images).argmax(1)
    print(f"\n## (0) judge: validation accuracy {judge.val_acc:.2%}, real digits read as no digit "
          f"{(pred == NO_DIGIT).float().mean():.2%}")
    g = torch.Generator().manual_seed(1)
    x = val.images[:300]
    sets = {"Gaussian noise σ=1": torch.randn(300, 1, 28, 28, generator=g).clamp(-1, 1),
            "uniform noise": torch.rand(300, 1, 28, 28, generator=g) * 2 - 1,
            "digits blurred σ=3": gaussian_blur(x, torch.full((300,), 3.0)),
            "digits blurred σ=1.5": gaussian_blur(x, torch.full((300,), 1.5)),
            "scribbles (the judge's own generator, new seed)": scribbles(300, generator=g),
            "tangles (8 random points, stamped 2 px)": tangles(100, g),
            "blank (black)": -torch.ones(10, 1, 28, 28),
            "digits + noise σ=0.3": (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)}
    print("| input | read as no digit | mean P(no digit) | mean max digit prob |\n"
          "|---|---:|---:|---:|")
    for name, images in sets.items():
        p = judge.probs(images)
        print(f"| {name} | {(p.argmax(1) == NO_DIGIT).float().mean():.1%} | "
              f"{p[:, NO_DIGIT].mean():.3f} | {p[:, :NO_DIGIT].max(1).values.mean():.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=checkpoint dir")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: as a study trial evaluates, one thread per trial)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = dict(m.split("=", 1) for m in a.model)
    t_start = time.perf_counter()
    print(f"# quality objective · {machine()} · {time.strftime('%Y-%m-%d')} · "
          f"{a.threads} threads · load average {os.getloadavg()[0]:.1f} (shared machine)")

    splits = mnist()
    judge = load_or_train_judge(splits)
    judge_section(judge, splits)
    ecfg = EvalConfig()
    ref = quality_reference(splits.val, judge, ecfg)
    held, _ = reference_split(splits.val, ecfg)

    # Every model × seed × w at the evaluation protocol (10 per digit, DDIM-25), kept for reuse
    results, samples, gen_s = {}, {}, {}
    for name, path in models.items():
        cfg, _, ema, _ = load_checkpoint(path)
        ema.eval()
        sched = Schedule.from_config(cfg.diffusion)
        for seed in SEEDS:
            for w in W:
                t0 = time.perf_counter()
                images, labels = generate(ema, sched, DIGITS, ecfg.n_per_digit, w, "ddim", 25,
                                          1.0, seed=seed)
                gen_s.setdefault(name, []).append(time.perf_counter() - t0)
                results[name, seed, w] = score(images, labels, judge, ref)
                if seed == 0:
                    samples[name, w] = images, labels
        print(f"{name}: {path} ({cfg.model.depth=}, {cfg.model.width=}), "
              f"{mean_std(gen_s[name])[0]:.2f} s per 100 samples (DDIM-25)", flush=True)

    # (a) objective vs w
    print("\n## (a) objective vs w, 10 per digit, DDIM-25, mean ± std over seeds 0, 1, 2")
    best_w = {}
    for obj in OBJECTIVES:
        print(f"\n**{obj}**\n\n| model | " + " | ".join(f"w={w:g}" for w in W)
              + " | best w |\n|---|" + "---:|" * (len(W) + 1))
        for name in models:
            stats = [mean_std([results[name, s, w][obj] for s in SEEDS]) for w in W]
            means = [m for m, _ in stats]
            pick = min if obj == "frechet" else max
            bw = W[means.index(pick(means))]
            best_w[name, obj] = bw
            print(f"| {name} | " + " | ".join(f"{m:.3f}±{s:.3f}" for m, s in stats)
                  + f" | {bw:g}{' (edge)' if bw == W[-1] else ''} |")

    # (b) mode collapse and wrong digits, (c) real digits
    print("\n## (b) mode-collapsed and wrong-digit sets vs honest samples (seed 0, best w), "
          "(c) real held-out digits\n")
    print("| set | " + " | ".join(OBJECTIVES) + " |\n|---|" + "---:|" * len(OBJECTIVES))

    def row(label, m):
        print(f"| {label} | " + " | ".join(f"{m[o]:.3f}" for o in OBJECTIVES) + " |")

    for name in models:
        w = best_w[name, "coverage"]
        images, labels = samples[name, w]
        conf = judge.probs(images).gather(1, labels[:, None]).squeeze(1)
        best = torch.stack([torch.nonzero(labels == d).flatten()[conf[labels == d].argmax()]
                            for d in DIGITS])
        collapsed = images[best].repeat_interleave(ecfg.n_per_digit, 0)
        row(f"{name} w={w:g} honest", results[name, 0, w])
        row(f"{name} w={w:g} collapsed (best × {ecfg.n_per_digit})",
            score(collapsed, labels, judge, ref))
        row(f"{name} w={w:g} wrong digit (labels + 1)", score(images, (labels + 1) % NUM_CLASSES,
                                                               judge, ref))
    real_rows = []
    for part in range(3):  # disjoint held-out sets, each scored against the other real digits
        idx = torch.cat([torch.nonzero(splits.val.labels == d).flatten()
                         for d in DIGITS]).view(-1)
        labels = splits.val.labels[idx]
        pos = torch.cat([torch.arange((labels == d).sum()) for d in DIGITS])
        hold = (pos >= part * 10) & (pos < part * 10 + 10)
        feats = judge.features(splits.val.images[idx[~hold]])
        part_ref = Reference.build(feats, labels[~hold], ecfg.quality_k)
        real_rows.append(score(splits.val.images[idx[hold]], labels[hold], judge, part_ref))
        row(f"real digits, held-out set {part} (10 per digit)", real_rows[-1])
    row("real digits: the study's held-out set", score(held.images, held.labels, judge, ref))

    # (d) spread over noise seeds vs gaps between models, at each model's best w
    print("\n## (d) spread over 3 noise seeds vs gaps between models (each at its best w)\n")
    print("| objective | " + " | ".join(models) + " | real | gaps between models, worst to "
          "best, ÷ the pair's larger std | real − best model, ÷ the pair's larger std |\n"
          "|---|" + "---:|" * (len(models) + 1) + "---|---:|")
    for obj in OBJECTIVES:
        sign = -1 if obj == "frechet" else 1  # lower is better
        stats = [mean_std([results[n, s, best_w[n, obj]][obj] for s in SEEDS]) for n in models]
        real = mean_std([r[obj] for r in real_rows])
        ranked = sorted(stats, key=lambda ms: sign * ms[0])
        ratios = [sign * (b[0] - a[0]) / max(a[1], b[1], 1e-9)
                  for a, b in zip(ranked, ranked[1:], strict=False)]
        top = ranked[-1]
        print(f"| {obj} | " + " | ".join(f"{m:.3f}±{s:.3f}" for m, s in stats)
              + f" | {real[0]:.3f}±{real[1]:.3f} | " + ", ".join(f"{r:.1f}" for r in ratios)
              + f" | {sign * (real[0] - top[0]) / max(real[1], top[1], 1e-9):+.1f} |")

    # A sampler that concentrates on typical digits: DDIM-10 (η = 1) at each model's best w
    print("\n## (c') the same models sampled with DDIM-10 at their best w (3 seeds) vs real "
          f"digits ({mean_std([r['coverage'] for r in real_rows])[0]:.3f} coverage)\n")
    print("| model | w | coverage | precision | recall | F1(P,R) |\n|---|---:|---:|---:|---:|---:|")
    for name, path in models.items():
        cfg, _, ema, _ = load_checkpoint(path)
        sched = Schedule.from_config(cfg.diffusion)
        w = best_w[name, "coverage"]
        rows = [score(*generate(ema, sched, DIGITS, ecfg.n_per_digit, w, "ddim", 10, 1.0,
                                seed=seed), judge, ref) for seed in SEEDS]
        print(f"| {name} | {w:g} | " + " | ".join(
            "{:.3f}±{:.3f}".format(*mean_std([r[o] for r in rows]))
            for o in ("coverage", "precision", "recall", "pr_f1")) + " |", flush=True)

    # Cheaper search protocols: same noise at every w (seed 0), vs the full curve's 3-seed mean
    print("\n## search protocols (coverage vs w, seed 0 at every w) vs the full protocol's "
          "3-seed mean\n")
    print("| model | protocol | s per w | best w | full best w | Spearman vs full |\n"
          "|---|---|---:|---:|---:|---:|")
    for name, path in models.items():
        cfg, _, ema, _ = load_checkpoint(path)
        sched = Schedule.from_config(cfg.diffusion)
        full = [mean_std([results[name, s, w]["coverage"] for s in SEEDS])[0] for w in W]
        for n, steps in ((10, 25), (5, 25), (10, 10), (5, 10)):
            curve, secs = [], []
            for w in W:
                if (n, steps) == (10, 25):
                    curve.append(results[name, 0, w]["coverage"])
                    continue
                t0 = time.perf_counter()
                images, labels = generate(ema, sched, DIGITS, n, w, "ddim", steps, 1.0, seed=0)
                curve.append(quality_metrics(judge.features(images), labels, ref)["coverage"])
                secs.append(time.perf_counter() - t0)
            s_per_w = mean_std(secs)[0] if secs else mean_std(gen_s[name])[0]
            print(f"| {name} | {n}/digit, DDIM-{steps} | {s_per_w:.2f} | "
                  f"{W[curve.index(max(curve))]:g} | {W[full.index(max(full))]:g} | "
                  f"{spearman(curve, full):.2f} |", flush=True)

    # The guidance search itself
    print("\n## guidance search (trainables.guidance.search_guidance)\n")
    searches = {GuidanceSearch(), GuidanceSearch(n_per_digit=5, steps=10),
                GuidanceSearch(n_per_digit=10, steps=10)}
    for search in sorted(searches, key=lambda s: (s.n_per_digit, s.steps)):
        for name, path in models.items():
            cfg, _, ema, _ = load_checkpoint(path)
            r = search_guidance(ema, cfg, judge, ref, search)
            curve = ", ".join(f"{c['guidance']:g}:{c['coverage']:.3f}" for c in r.curve)
            print(f"- {name}, {search.n_per_digit}/digit DDIM-{search.steps}: w = "
                  f"{r.guidance:g} in {r.seconds:.1f} s ({len(r.curve)} evaluations): {curve}",
                  flush=True)
    print(f"\nwhole run {time.perf_counter() - t_start:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

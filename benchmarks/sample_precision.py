"""Sampling in bf16 vs fp32: what a trial's evaluation costs and measures in each precision.

For each trained model it runs the trial's own protocol twice per evaluation-noise seed, once
with the U-Net's calls in fp32 and once under bf16 autocast (``SampleConfig.amp``): the w search
(trainables/guidance.py), the evaluation at the chosen w (DDIM-25, 10 per digit) and one
in-training probe. It prints the seconds of each, their ratio (measured in the same run, the
two precisions alternating), the chosen w and the scores, so a reader can see whether bf16
changes the w a model is given or its quality by more than the evaluation noise.

    python benchmarks/sample_precision.py runs/cpu-19b/trials/5af56685 runs/cpu-19b/trials/ed21a411
    python benchmarks/sample_precision.py runs/<study>/trials/* --seeds 3 --threads 1

The judge is the study's (``<study>/judge.pt``, found beside ``trials/``) unless --judge says.
bf16 only pays on a CPU with native bf16 kernels (trainables/precision.py); elsewhere the
timing says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist  # noqa: E402
from trainables.evaluate import EvalConfig, evaluate_model, quality_probe, quality_reference  # noqa: E402
from trainables.guidance import GuidanceSearch, search_guidance  # noqa: E402
from trainables.judge import Judge  # noqa: E402
from trainables.precision import native_bf16  # noqa: E402
from trainables.train_loop import load_checkpoint  # noqa: E402

SCORES = ("coverage", "recall", "precision", "judge_acc", "frechet")


def protocol(ema, cfg, judge, real, seed: int, amp: bool) -> dict:
    """One trial's evaluation in one precision, from the noise of `seed`: times and scores."""
    cfg = replace(cfg, sample=replace(cfg.sample, amp=amp))
    ecfg = EvalConfig(seed=seed)
    ref = quality_reference(real, judge, ecfg)
    t0 = time.perf_counter()
    search = search_guidance(ema, cfg, judge, ref, GuidanceSearch(seed=seed))
    t1 = time.perf_counter()
    m = evaluate_model(ema, cfg, judge, None, real, None, ecfg, guidance=search.guidance,
                       reference=ref)
    t2 = time.perf_counter()
    quality_probe(judge, cfg)(ema)
    t3 = time.perf_counter()
    return {"search_s": t1 - t0, "eval_s": t2 - t1, "probe_s": t3 - t2, "w": search.guidance,
            **{k: m[k] for k in SCORES}}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trials", nargs="+", type=Path, help="trial folders (checkpoint.pt inside)")
    p.add_argument("--judge", type=Path, help="judge.pt (default: the study's, beside trials/)")
    p.add_argument("--seeds", type=int, default=3, help="evaluation-noise seeds per model")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a cpu trial's: 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge_file = args.judge or args.trials[0].parent.parent / "judge.pt"
    judge = Judge.from_state(torch.load(judge_file, weights_only=True))
    real = mnist().val
    print(f"{machine()} · {args.threads} thread(s) · native bf16: "
          f"{native_bf16(torch.device('cpu'))} · judge {judge_file}")
    head = f"{'model':24s} {'seed':>4s} {'dtype':5s} {'search s':>8s} {'eval s':>7s} " \
           f"{'probe s':>7s} {'w':>5s} " + " ".join(f"{k:>9s}" for k in SCORES)
    for trial in args.trials:
        cfg, _, ema, _ = load_checkpoint(trial)
        name = f"{trial.name} d{cfg.model.depth} w{cfg.model.width}"
        runs = {False: [], True: []}
        print(f"\n{head}")
        for seed in range(args.seeds):
            order = (False, True) if seed % 2 == 0 else (True, False)  # drift hits both
            for amp in order:
                r = protocol(ema, cfg, judge, real, seed, amp)
                runs[amp].append(r)
                print(f"{name:24s} {seed:4d} {'bf16' if amp else 'fp32':5s} "
                      f"{r['search_s']:8.1f} {r['eval_s']:7.1f} {r['probe_s']:7.2f} "
                      f"{r['w']:5.2f} " + " ".join(f"{r[k]:9.3f}" for k in SCORES), flush=True)
        total = {amp: sum(r["search_s"] + r["eval_s"] for r in rs) for amp, rs in runs.items()}
        probe = {amp: sum(r["probe_s"] for r in rs) for amp, rs in runs.items()}
        print(f"{name}: search + evaluation fp32 / bf16 = {total[False] / total[True]:.2f}x, "
              f"probe {probe[False] / probe[True]:.2f}x; chosen w fp32 "
              f"{[r['w'] for r in runs[False]]} bf16 {[r['w'] for r in runs[True]]}")
        for k in ("coverage", "recall", "judge_acc"):
            diffs = [b[k] - a[k] for a, b in zip(runs[False], runs[True], strict=True)]
            print(f"  {k:9s} fp32 {mean_sd([r[k] for r in runs[False]])}  bf16 "
                  f"{mean_sd([r[k] for r in runs[True]])}  bf16 − fp32 per seed "
                  f"{' '.join(f'{d:+.3f}' for d in diffs)}")


if __name__ == "__main__":
    main()

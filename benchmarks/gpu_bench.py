"""GPU benchmark body (run through benchmarks/gpu.sh): three measurements in one short run.

1. Training images/s of the seed's reference U-Net (channels 32/64/128) at batch 256:
   fp32 (TF32) and bf16 autocast, each plain, with channels_last and with torch.compile (fp32
   also with CUDA graphs: torch.compile mode="reduce-overhead").
2. Packing: K processes training at once on the one GPU (as K Tune trials with fractional
   GPUs would); per-trial throughput relative to K = 1, and the largest K still ≥ 80%.
3. Time for the reference model to reach ≥ 98% judge accuracy at w = 2 (default precision).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.diffusion import DiffusionConfig, Schedule, training_losses  # noqa: E402
from trainables.unet import UNet, UNetConfig  # noqa: E402

BATCH = 256


def throughput(variant: str, steps: int = 60, warmup: int = 15) -> float:
    """Training images/s of the reference U-Net on random data for one variant."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = UNet(UNetConfig(depth=3, width=32)).to(dev)
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = (torch.compile(model) if "compile" in variant
           # CUDA graphs: one replay per step instead of ~100 kernel launches from Python
           else torch.compile(model, mode="reduce-overhead") if "cudagraphs" in variant
           else model)
    sched = Schedule.from_config(DiffusionConfig())
    x = torch.randn(BATCH, 1, 28, 28, device=dev)
    if "channels_last" in variant:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), device=dev)
    amp = variant.startswith("bf16")
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = training_losses(run, sched, x, y)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - t0)


def _packed_worker(variant, queue, start):
    start.wait()
    queue.put(throughput(variant, steps=80, warmup=15))


def packed(k: int, variant: str) -> float:
    """Mean per-process images/s with k processes training at once."""
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_packed_worker, args=(variant, queue, start)) for _ in range(k)]
    for p in procs:
        p.start()
    start.set()
    rates = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates) / k


def time_to_accuracy(target: float = 0.98, minutes: float = 2.5) -> tuple[float | None, list]:
    from trainables.evaluate import quality_probe
    from trainables.judge import load_or_train_judge
    from trainables.train_loop import LocalSession, fit

    splits = mnist()
    judge = load_or_train_judge(splits, Path("/tmp/gpu-bench-cache"), device="cuda")
    cfg = TrialConfig.from_dict({
        "data": {"dataset": "mnist-idx", "data_dir": os.environ["STUDY_DATA_DIR"]},
        "model": {"depth": 3, "width": 32}, "sample": {"guidance": 2.0},
        "train": {"batch_size": BATCH, "lr": 2e-3, "epochs": 200, "max_seconds": minutes * 60,
                  "early_stop_patience": None},
    })
    result = fit(cfg, LocalSession(Path("/tmp/gpu-bench-run"), verbose=False), splits,
                 probe=quality_probe(judge, cfg, n_per_digit=20, steps=25))
    accs = [(round(h["train_seconds"], 1), round(h["probe_judge_acc"], 3)) for h in result.history]
    first = next((s for s, a in accs if a >= target), None)
    return first, accs


SECTIONS = ("throughput", "packing", "accuracy")
VARIANTS = ("fp32", "fp32+channels_last", "fp32+compile", "fp32+cudagraphs", "bf16",
            "bf16+channels_last", "bf16+compile")


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated throughput variants, the first is the baseline "
                        f"(default: {', '.join(VARIANTS)})")
    a = p.parse_args()
    sections = set(a.sections.split(","))
    print(f"# GPU benchmark — {machine()}")
    if "throughput" in sections:
        throughputs(a.variants.split(","))
    if "packing" in sections:
        packing()
    if "accuracy" in sections:
        accuracy()


def throughputs(variants) -> None:
    base = None
    print("\n## Training throughput, reference U-Net (32/64/128), batch 256")
    for variant in variants:
        try:
            ips = throughput(variant)
        except Exception as e:  # e.g. no compiler toolchain for torch.compile
            print(f"{variant:20s} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        base = base or ips
        print(f"{variant:20s} {ips:9.0f} images/s  ({ips / base:.2f}× {variants[0]})", flush=True)


def packing() -> None:
    print("\n## Packing trials on one GPU (fp32), per-trial throughput vs 1 trial")
    one = None
    for k in (1, 2, 4, 8):
        rate = packed(k, "fp32")
        one = one or rate
        print(f"{k} trial(s): {rate:9.0f} images/s each, {rate / one:.2f} of one trial, "
              f"{k * rate:9.0f} total", flush=True)



def accuracy() -> None:
    print("\n## Time to ≥ 98% judge accuracy (fp32, w = 2, probe of 200 DDIM-25 samples)")
    first, accs = time_to_accuracy()
    print("training seconds → accuracy:", accs)
    print(f"reached 98% after {first} s of training" if first is not None
          else "did not reach 98% within the budget")


if __name__ == "__main__":
    main()

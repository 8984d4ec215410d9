"""A tabular benchmark of the study's search space: every configuration of a grid trained once,
with quality and cost recorded after **every epoch**, so searches and ASHA replay cheaply
(benchmarks/search.py), as HPOBench / NAS-Bench-201 / YAHPO Gym do for their spaces.

    # the cpu preset's space on the offline 10k MNIST (2 configurations at a time, 1 thread each)
    nice -n 19 python benchmarks/search_grid.py --preset cpu --lrs 5e-4 1.22e-3 3e-3 \\
        --out benchmarks/grids/cpu.csv
    # the gpu preset's space (4 lrs) on all of MNIST, 2 configurations sharing one GPU (not run)
    python benchmarks/search_grid.py --preset gpu --device cuda --jobs 2 \\
        --data-dir ../shared/data/mnist-full --out benchmarks/grids/gpu.csv
    # a slice of a grid (the test's tiny grid)
    python benchmarks/search_grid.py --slice benchmarks/grids/cpu.csv --depths 2 3 \\
        --widths 8 16 --lrs 5e-4 3e-3 --epochs 3 --out benchmarks/grids/tiny.csv

Each configuration (depth × width × lr; the preset's batch, T, epochs and the study's seed) is
trained by the study's own ``fit`` with the study's own in-training probe (``quality_probe``:
what ASHA reads, recorded every epoch). Quality is scored only where a replayed study can read
it, to save time: at the epochs ASHA can stop at (the rungs of ``AshaConfig.for_budget`` for
the epoch budget), at the last epoch, and either side of the preset's time cap. It is the
study's objective, class-conditional coverage (``trainables/quality.py``), at the best w of
``QUALITY_W`` (10 per digit, DDIM-10, the guidance search's noise: its first grid points).
For the lrs in ``--check-lrs`` the last epoch also gets the study's whole protocol
(``search_guidance``, then DDIM-25 at the chosen w): ``study_quality``, to check the cheap score
against it.

Cost: ``cost_s`` is the process's CPU seconds of the epoch's training steps and validation
loss on a CPU (one torch thread per configuration: the seconds an uncontended study trial would
take, whatever else loads the machine), their wall seconds on a GPU; ``wall_s``
is always ``fit``'s training seconds. The preset's time cap is applied on ``cost_s``: training
stops after the epoch that crosses it (stop reason ``time_budget``), and the epoch before it is
scored too, since a replay counts a capped epoch as the nearer whole epoch. Rows are appended per
finished configuration, so a stopped run resumes where it was; ``<out>.json`` holds the command,
machine, date, versions and settings.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.presets import PRESETS  # noqa: E402

QUALITY_W = (1.0, 2.0, 4.0)  # w the per-epoch quality is the best of
COLUMNS = ("depth", "width", "lr", "seed", "epoch", "images_seen", "cost_s", "wall_s",
           "probe_judge_acc", "probe_guidance", "val_loss", "quality", "quality_w",
           "study_quality", "study_w", "study_judge_acc", "stop_reason", "params",
           "forward_gflops", "eval_s")
KEY = ("depth", "width", "lr", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--depths", type=int, nargs="+", help="default: the preset's")
    p.add_argument("--widths", type=int, nargs="+", help="default: the preset's")
    p.add_argument("--lrs", type=float, nargs="+", help="default: 4 log-spaced in its range")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--seed", type=int, default=0, help="the study's --seed (default 0)")
    p.add_argument("--data-dir", default=os.environ.get("STUDY_DATA_DIR", "../shared/data/mnist"))
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--jobs", type=int, default=2, help="configurations trained at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    p.add_argument("--check-lrs", type=float, nargs="*",
                   help="lrs whose last epoch also gets the study's protocol (default: all)")
    p.add_argument("--out", required=True, type=Path, help="the grid's CSV (appended to)")
    p.add_argument("--slice", type=Path, metavar="GRID",
                   help="write the rows of GRID within --depths/--widths/--lrs/--epochs to --out")
    return p.parse_args(argv)


def log_spaced(lo: float, hi: float, n: int) -> list[float]:
    return [float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n)]


def grid(args) -> list[dict]:
    """The configurations, cheapest architectures first (a partial grid is a usable one)."""
    space = PRESETS[args.preset].space
    lrs = args.lrs or log_spaced(*space.lr, 4)
    archs = sorted(((d, w) for d in args.depths or space.depth for w in args.widths or space.width),
                   key=lambda a: (a[1], a[0]))
    return [{"depth": d, "width": w, "lr": lr, "seed": args.seed} for d, w in archs for lr in lrs]


def trial_config(point: dict, args):
    """The TrialConfig the study would train for this point (study/run.py build_spec's base,
    without the time cap, which the replay applies)."""
    from study.search_space import apply
    from trainables.config import TrialConfig

    preset = PRESETS[args.preset]
    base = TrialConfig.from_dict({
        "data": {"dataset": "mnist-idx", "data_dir": str(Path(args.data_dir).resolve())},
        "diffusion": {"timesteps": preset.timesteps},
        "train": {"epochs": args.epochs or preset.epochs, "batch_size": preset.batch_size,
                  "seed": point["seed"]},
        "sample": {"steps": preset.eval_steps},
    })
    return apply({"depth": point["depth"], "width": point["width"], "lr": point["lr"]}, base)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def rung_epochs(epochs: int) -> list[int]:
    """The epochs the study's ASHA (``Rungs(AshaConfig.for_budget(epochs))``) can stop a trial
    after: its rungs before the last epoch (fit asks no more after that one)."""
    from study.rungs import AshaConfig, Rungs

    bracket = Rungs(AshaConfig.for_budget(epochs)).asha._brackets[0]  # Tune's own milestones
    return sorted(int(m) for m, _ in bracket._rungs if m < epochs)


def train_point(point: dict, args) -> list[dict]:
    """Train one configuration; one row per epoch, quality where a replay can read it."""
    from copy import deepcopy

    import torch

    from trainables.data import DataConfig, load_splits
    from trainables.diffusion import Schedule
    from trainables.evaluate import EvalConfig, evaluate_model, quality_probe, quality_reference
    from trainables.guidance import score_guidance, search_guidance
    from trainables.judge import load_or_train_judge
    from trainables.quality import QUALITY_METRIC
    from trainables.session import LocalSession
    from trainables.train_loop import fit
    from trainables.unet import forward_flops

    cfg = trial_config(point, args)
    splits = load_splits(DataConfig("mnist-idx", cfg.data.data_dir))
    judge = load_or_train_judge(splits, device=args.device, verbose=False)
    preset = PRESETS[args.preset]
    ecfg = EvalConfig(n_per_digit=preset.eval_n_per_digit)
    reference = quality_reference(splits.val, judge, ecfg)
    search = preset.guidance
    sched = Schedule.from_config(cfg.diffusion)
    study_probe = quality_probe(judge, cfg)
    # CPU seconds on a CPU (1 thread: what an uncontended trial takes), wall seconds on a GPU
    now = time.process_time if torch.device(args.device).type == "cpu" else time.perf_counter
    cap = preset.max_trial_minutes * 60
    scored_at = set(rung_epochs(cfg.train.epochs))
    epochs: list[dict] = []  # per epoch: cost, and quality where scored
    clock = {"cost": 0.0, "mark": 0.0}
    previous: dict = {}  # the last epoch's EMA weights, scored if the next one crosses the cap

    def quality(ema) -> dict:
        t0 = time.perf_counter()
        scores = {w: score_guidance(ema, sched, judge, reference, w, search.n_per_digit,
                                    search.steps, cfg.sample.eta, search.seed)[QUALITY_METRIC]
                  for w in QUALITY_W}
        best = max(sorted(scores), key=scores.get)
        return {"quality": scores[best], "quality_w": best, "eval_s": time.perf_counter() - t0}

    def probe(ema) -> dict:  # fit calls this after each epoch's training and validation
        clock["cost"] += now() - clock["mark"]
        out = study_probe(ema)
        epochs.append({"cost_s": clock["cost"]})
        if clock["cost"] >= cap and len(epochs) > 1 and "quality" not in epochs[-2]:
            before = deepcopy(ema)
            before.load_state_dict(previous["ema"])
            epochs[-2].update(quality(before))  # a capped epoch may count as the one before
        if len(epochs) in scored_at:
            epochs[-1].update(quality(ema))
        previous["ema"] = deepcopy(ema.state_dict())
        clock["mark"] = now()
        return out

    with tempfile.TemporaryDirectory(prefix="grid-") as tmp:
        session = LocalSession(Path(tmp), verbose=False, device=args.device)
        session.report = _skip_checkpoint_copy(session.report, clock, now)
        # the study's cap, on the cost clock (fit's own max_seconds reads the wall clock)
        session.should_stop = lambda m: "time_budget" if clock["cost"] >= cap else None
        clock["mark"] = now()  # the set-up above is no training
        result = fit(cfg, session, splits, probe=probe)
    if result.history and "quality" not in epochs[len(result.history) - 1]:
        epochs[len(result.history) - 1].update(quality(result.ema))  # the last epoch
    rows = []
    for h, e in zip(result.history, epochs, strict=False):
        rows.append({**point, "epoch": h["epoch"], "images_seen": h["images_seen"],
                     "cost_s": e["cost_s"],
                     "wall_s": h["train_seconds"], "probe_judge_acc": h["probe_judge_acc"],
                     "probe_guidance": h["probe_guidance"], "val_loss": h["val_loss"],
                     "quality": e.get("quality", ""), "quality_w": e.get("quality_w", ""),
                     "eval_s": e.get("eval_s", ""), "stop_reason": ""})
    if rows:
        rows[-1].update(stop_reason=result.stop_reason, params=result.ema.num_params(),
                        forward_gflops=forward_flops(result.ema) / 1e9)
    if rows and (args.check_lrs is None or point["lr"] in args.check_lrs):
        # the study's own protocol on the last epoch's EMA weights
        curve = search_guidance(result.ema, cfg, judge, reference, search)
        m = evaluate_model(result.ema, cfg, judge, None, splits.val, None, ecfg,
                           guidance=curve.guidance, reference=reference)
        rows[-1].update(study_quality=m[QUALITY_METRIC], study_w=curve.guidance,
                        study_judge_acc=m["judge_acc"])
    return rows


def _skip_checkpoint_copy(report, clock, now):
    """LocalSession.report, with the checkpoint's save and copy kept out of the cost clock."""

    def wrapped(metrics, checkpoint_dir):
        report(metrics, checkpoint_dir)
        clock["mark"] = now()

    return wrapped


def done_points(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {_key(r) for r in csv.DictReader(f)}


def _key(r: dict) -> tuple:
    return int(r["depth"]), int(r["width"]), float(r["lr"]), int(r["seed"])


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _compact(r.get(k, "")) for k in COLUMNS})


def _compact(v):
    return f"{v:.5g}" if isinstance(v, float) else v


def write_sidecar(path: Path, args, points: list[dict], argv: list[str]) -> None:
    """<out>.json: what made the grid; a resumed run is added to its "runs"."""
    import optuna
    import ray
    import torch

    from benchmarks.common import machine

    run = {"command": "python benchmarks/search_grid.py " + " ".join(argv),
           "date": date.today().isoformat(), "machine": machine(),
           "versions": {"torch": torch.__version__, "ray": ray.__version__,
                        "optuna": optuna.__version__, "python": sys.version.split()[0]}}
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {
        "preset": args.preset, "epochs": args.epochs or PRESETS[args.preset].epochs,
        "max_trial_seconds": PRESETS[args.preset].max_trial_minutes * 60,
        "points": len(points), "quality_w": QUALITY_W, "device": args.device,
        "space": {"depth": sorted({p["depth"] for p in points}),
                  "width": sorted({p["width"] for p in points}),
                  "lr": list(PRESETS[args.preset].space.lr)},
        "cost_s": "process CPU seconds of training + validation loss (1 torch thread)"
                  if args.device == "cpu" else "wall seconds of training + validation loss",
        "runs": []}
    epochs = args.epochs or PRESETS[args.preset].epochs
    meta["quality_at"] = (f"epochs ASHA can stop at {rung_epochs(epochs)}, the last, and either "
                          "side of the time cap (cost_s); a run without --check-lrs scored "
                          "every epoch")
    meta["runs"].append(run)
    sidecar.write_text(json.dumps(meta, indent=1))


def _record_wall(path: Path, seconds: float) -> None:
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["runs"][-1]["wall_s"] = round(seconds)
    sidecar.write_text(json.dumps(meta, indent=1))


def slice_grid(args, argv) -> None:
    import pandas as pd

    df = pd.read_csv(args.slice)
    keep = (df["depth"].isin(args.depths or df["depth"].unique())
            & df["width"].isin(args.widths or df["width"].unique())
            & df["lr"].isin(args.lrs or df["lr"].unique())
            & (df["epoch"] <= (args.epochs or df["epoch"].max())))
    df = df[keep]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    meta = json.loads(args.slice.with_suffix(".json").read_text())
    meta.update(sliced_by="python benchmarks/search_grid.py " + " ".join(argv),
                epochs=int(df["epoch"].max()), points=len(df.groupby(list(KEY))),
                space={"depth": sorted(map(int, df["depth"].unique())),
                       "width": sorted(map(int, df["width"].unique())),
                       "lr": [float(df["lr"].min()), float(df["lr"].max())]})
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"{len(df)} rows ({meta['points']} configurations) -> {args.out}")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.slice:
        return slice_grid(args, argv)
    points = grid(args)
    done = done_points(args.out)
    todo = [p for p in points if _key(p) not in done]
    print(f"{len(points)} configurations, {len(done)} done, {len(todo)} to train "
          f"({args.jobs} at a time, {args.threads} thread(s) each, {args.device})", flush=True)
    t0 = time.time()
    write_sidecar(args.out, args, points, argv)
    # fresh (spawned) processes: each sets its torch threads, and CUDA starts in each
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(args.threads,)) as pool:
        futures = {pool.submit(train_point, p, args): p for p in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            p, rows = futures[fut], fut.result()
            append_rows(args.out, rows)
            last = rows[-1] if rows else {}
            print(f"[{i}/{len(todo)}, {time.time() - t0:.0f} s] d{p['depth']} w{p['width']} "
                  f"lr {p['lr']:g}: {len(rows)} epochs, cost {last.get('cost_s', 0):.0f} s, "
                  f"quality {last.get('quality', float('nan')):.3f} (study protocol "
                  f"{last.get('study_quality', float('nan')):.3f})", flush=True)
    _record_wall(args.out, time.time() - t0)


if __name__ == "__main__":
    main()

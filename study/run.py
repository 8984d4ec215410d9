"""Run the hyperparameter study: Ray Train DDP trials under Ray Tune + Optuna.

    python study/run.py                        # local study, preset chosen by the hardware found
    python study/run.py --preset smoke --dataset digits --no-clip
    python study/run.py --name cpu-1 --resume  # continue an interrupted study

Every trial trains one conditional U-Net (depth, width, lr searched) and is judged at its
guidance weight w: CLIP-top-3 (the headline, unless --no-clip) beside the digit judge's
accuracy and Fréchet distance. Optuna searches two objectives: quality up, training seconds
down. Output: runs/<name>/ with results.csv (one row per trial), study.json, reference.json,
trials/<id>/ (samples.npz, samples.png, checkpoint.pt), optuna.db and Tune's state in ray/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python study/run.py` from a checkout
    sys.path.insert(0, str(ROOT))

from study.search_space import PRESETS  # noqa: E402
from trainables.data import DATASETS, default_data_dir, default_dataset  # noqa: E402


class UsageError(ValueError):
    """Bad input: printed as one line, exit status 2, nothing written."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python study/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("study")
    g.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default: gpu when CUDA is "
                   "present, else cpu): " + "; ".join(f"{k}: {v.description}"
                                                    for k, v in PRESETS.items()))
    g.add_argument("--num-trials", type=int, help="Optuna trials (default: the preset's)")
    g.add_argument("--epochs", type=int, help="per-trial epoch budget (default: the preset's)")
    g.add_argument("--space", type=Path, help="YAML/JSON file overriding search ranges, e.g. "
                   "'depth: [2, 3]' or 'lr: [0.0005, 0.002]'")
    g.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    g.add_argument("--confirm-seeds", type=int, default=0, metavar="N",
                   help="re-train each Pareto-front configuration with N more seeds")
    g.add_argument("--name", help="study name (default: <preset>-<date>-<time>)")
    g.add_argument("--output-dir", type=Path, default=Path("runs"), help="parent of runs/<name>")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted study --name without re-running finished "
                        "trials")
    g.add_argument("--storage", help="Optuna storage SQLAlchemy URL, e.g. postgresql://… for a "
                   "cluster (default: sqlite:///runs/<name>/optuna.db)")
    r = p.add_argument_group("resources")
    r.add_argument("--workers-per-trial", type=int, help="DDP workers per trial")
    r.add_argument("--trials-per-gpu", type=int, default=4,
                   help="trials sharing one GPU (fractional GPUs; default %(default)s)")
    r.add_argument("--address", help="attach to a running Ray cluster instead of a local one")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default=default_dataset(),
                   help="default: $STUDY_DATASET, else mnist-idx if $STUDY_DATA_DIR is set, "
                        "else mnist (downloaded)")
    d.add_argument("--data-dir", default=default_data_dir(),
                   help="download / IDX folder (default: $STUDY_DATA_DIR or ./data)")
    c = p.add_argument_group("quality")
    c.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name or config JSON")
    c.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag")
    c.add_argument("--clip-checkpoint", help="local CLIP weights file (offline machines)")
    c.add_argument("--no-clip", action="store_true",
                   help="disable CLIP: quality becomes the judge's conditional accuracy and CLIP "
                        "columns are recorded as absent")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    """Validate every input and return the study's resolved settings (study.json), or raise
    UsageError before anything is written or trained."""
    import torch

    from trainables.config import TrialConfig

    cuda = torch.cuda.is_available()
    preset_name = args.preset or ("gpu" if cuda else "cpu")
    if preset_name not in PRESETS:
        raise UsageError(f"unknown preset {preset_name!r}: use one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    space = preset.space.override(args.space) if args.space else preset.space
    num_trials = preset.num_trials if args.num_trials is None else args.num_trials
    if num_trials < 1:
        raise UsageError(f"--num-trials {num_trials}: at least 1 trial is needed")
    epochs = args.epochs or preset.epochs
    workers = args.workers_per_trial or preset.workers_per_trial
    if workers < 1 or args.trials_per_gpu < 1 or args.confirm_seeds < 0:
        raise UsageError("--workers-per-trial and --trials-per-gpu must be >= 1, "
                         "--confirm-seeds >= 0")
    name = args.name or f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    study_dir = (args.output_dir / name).resolve()
    storage = args.storage or f"sqlite:///{study_dir / 'optuna.db'}"
    _check_storage_url(storage)

    base = TrialConfig.from_dict({
        "data": {"dataset": args.dataset, "data_dir": str(Path(args.data_dir).resolve())},
        "diffusion": {"timesteps": preset.timesteps},
        "train": {"epochs": epochs, "batch_size": preset.batch_size, "seed": args.seed,
                  "max_seconds": preset.max_trial_minutes * 60},
        "sample": {"steps": preset.eval_steps},
    })
    clip = None if args.no_clip else {"model": args.clip_model,
                                      "pretrained": args.clip_pretrained,
                                      "checkpoint": args.clip_checkpoint}
    return {
        "name": name, "study_dir": str(study_dir), "preset": preset_name,
        "num_trials": num_trials, "space": space.to_dict(), "seed": args.seed,
        "confirm_seeds": args.confirm_seeds, "workers_per_trial": workers,
        "trials_per_gpu": args.trials_per_gpu, "use_gpu": cuda, "address": args.address,
        "storage": storage, "base": base.to_dict(), "clip": clip,
        "eval": {"n_per_digit": preset.eval_n_per_digit, "top_k": min(3, preset.eval_n_per_digit)},
        "quality_metric": "judge_acc" if clip is None else "clip_top",
        "worker_retries": 2,
    }


def _check_storage_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {url!r} is not a SQLAlchemy URL (e.g. "
                         f"sqlite:///path/optuna.db or postgresql://user@host/db)") from None


# What must match for --resume: the settings that define the study's trials.
_RESUME_KEYS = ("preset", "space", "seed", "base", "clip", "eval", "workers_per_trial",
                "quality_metric")


def prepare(setup: dict, resume: bool) -> dict:
    """Check data and CLIP, write study.json, train (or load) the judge, score real digits."""
    import torch

    from trainables.config import TrialConfig
    from trainables.data import load_splits
    from trainables.evaluate import EvalConfig, reference_row
    from trainables.judge import load_or_train_judge

    study_dir = Path(setup["study_dir"])
    setup_file = study_dir / "study.json"
    if resume:
        if not setup_file.exists():
            raise UsageError(f"--resume: {study_dir} holds no study (no study.json); check "
                             f"--name and --output-dir")
        old = json.loads(setup_file.read_text())
        diff = [k for k in _RESUME_KEYS if json.dumps(old.get(k)) != json.dumps(setup.get(k))]
        if diff:
            raise UsageError(f"--resume: {study_dir} was made with different {', '.join(diff)}; "
                             f"resume with the same options or pick a new --name")
        setup = {**old, "num_trials": setup["num_trials"], "address": setup["address"]}
    elif setup_file.exists():
        raise UsageError(f"{study_dir} already holds a study: pass --resume to continue it, or "
                         f"choose another --name")

    base = TrialConfig.from_dict(setup["base"])
    splits = load_splits(base.data)  # DataError on bad data, before anything is written
    clip = None
    if setup["clip"] is not None:
        from trainables.clip_score import ClipConfig, ClipScorer

        clip = ClipScorer.load(ClipConfig(**setup["clip"]))  # ClipLoadError before training
    print(f"data: {splits.description}")
    print("quality: " + ("CLIP-top-3 with " + clip.description if clip else
                         "CLIP DISABLED (--no-clip): quality = judge conditional accuracy; "
                         "CLIP columns are absent"), flush=True)

    study_dir.mkdir(parents=True, exist_ok=True)
    judge = load_or_train_judge(splits)
    torch.save(judge.state(), study_dir / "judge.pt")
    ref = reference_row(splits.val, judge, clip, EvalConfig(**setup["eval"]))
    (study_dir / "reference.json").write_text(json.dumps(ref, indent=1))
    setup = {**setup, "judge_val_acc": judge.val_acc, "data_description": splits.description,
             "clip_description": clip.description if clip else None,
             "versions": _versions(), "machine": _machine()}
    setup_file.write_text(json.dumps(setup, indent=1))
    return {**setup, "judge": judge.state()}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "ray", "optuna", "open_clip_torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _machine() -> dict:
    import torch

    return {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def main(argv=None) -> int:
    args = parse_args(argv)
    from trainables.clip_score import ClipLoadError
    from trainables.data import DataError

    try:
        setup = resolve(args)
        setup = prepare(setup, args.resume)
    except (UsageError, DataError, ClipLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from study.driver import run_study

    return run_study(setup, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())

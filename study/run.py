"""Run the hyperparameter study: Ray Train DDP trials under Ray Tune + Optuna.

    python study/run.py                        # local study, preset chosen by the hardware found
    python study/run.py --preset smoke --dataset digits --no-clip
    python study/run.py --name cpu-1 --resume  # continue an interrupted study
    python study/run.py --cluster cluster.yaml --storage-path s3://bucket/runs   # on a cluster

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
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python study/run.py` from a checkout
    sys.path.insert(0, str(ROOT))

from study.errors import UsageError  # noqa: E402
from study.layout import StudyLayout  # noqa: E402
from study.presets import PRESETS  # noqa: E402
from study.spec import Sizing, StudyRecord, StudySpec, size_trials  # noqa: E402
from trainables.clip_score import ClipConfig  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import DATASETS, default_data_dir, default_dataset  # noqa: E402
from trainables.evaluate import EvalConfig  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    # allow_abbrev=False: the cluster path forwards argv to the job minus client-only options,
    # which it recognises by their full names.
    p = argparse.ArgumentParser(prog="python study/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
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
    r.add_argument("--trials-per-gpu", type=int, default=2,
                   help="trials sharing one GPU (fractional GPUs; default %(default)s: on an H200 "
                        "2 trials kept 97%% of one trial's speed each, 4 only 57%%)")
    r.add_argument("--address", help="attach to a running Ray cluster instead of a local one; "
                   "an http(s):// dashboard URL submits the study there as a Ray Job")
    r.add_argument("--gpus", type=int, help="GPUs the study may use (default: those Ray finds "
                   "when it starts); --cluster sets it from cluster.yaml's GPU workers, which "
                   "are then brought up as trials need them")
    k = p.add_argument_group("cluster (see cluster.yaml and study/cluster.py)")
    k.add_argument("--cluster", type=Path, metavar="CLUSTER_YAML",
                   help="bring up (or reuse) this Ray cluster and run the study on it as a Ray "
                        "Job; the study directory is fetched into --output-dir at the end")
    k.add_argument("--storage-path", help="where the study directory <name>/ is written, "
                   "reachable from every node: s3://… or gs://… (Tune's state goes there "
                   "directly, the rest when the study ends), or a path (with --shared-fs when "
                   "every node mounts it). Default: --output-dir, for one-node runs")
    k.add_argument("--shared-fs", action="store_true",
                   help="--storage-path is a mount every node shares (NFS, EFS, …)")
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


def build_spec(args: argparse.Namespace) -> StudySpec:
    """Validate every input and return the study's spec, or raise UsageError before anything
    is written or trained."""
    import torch

    from study import storage

    # A CPU head node plans for the GPUs its cluster brings up (--gpus; see study/cluster.py).
    cuda = torch.cuda.is_available() or bool(args.gpus)
    preset_name = args.preset or ("gpu" if cuda else "cpu")
    if preset_name not in PRESETS:
        raise UsageError(f"unknown preset {preset_name!r}: use one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    space = preset.space.override(args.space) if args.space else preset.space
    num_trials = preset.num_trials if args.num_trials is None else args.num_trials
    if num_trials < 1:
        raise UsageError(f"--num-trials {num_trials}: at least 1 trial is needed")
    epochs = preset.epochs if args.epochs is None else args.epochs
    if epochs < 1:
        raise UsageError(f"--epochs {epochs}: at least 1 epoch is needed")
    workers = preset.workers_per_trial if args.workers_per_trial is None \
        else args.workers_per_trial
    if workers < 1 or args.trials_per_gpu < 1 or args.confirm_seeds < 0:
        raise UsageError("--workers-per-trial and --trials-per-gpu must be >= 1, "
                         "--confirm-seeds >= 0")
    local_gpus = torch.cuda.device_count() if cuda and not (args.address or args.cluster) else 0
    if workers > local_gpus > 0:  # NCCL needs a GPU per DDP worker (see spec.size_trials)
        if args.workers_per_trial is not None:
            raise UsageError(f"--workers-per-trial {workers}: each DDP worker needs a GPU of its "
                             f"own and this machine has {local_gpus}")
        print(f"note: the {preset_name} preset's {workers} DDP workers per trial need "
              f"{workers} GPUs; this machine has {local_gpus}, so each trial runs "
              f"{local_gpus} worker(s)", file=sys.stderr)
        workers = local_gpus
    name = args.name or f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage.check_storage_path(args.storage_path)
    study_dir = (storage.study_root(args.storage_path, args.output_dir) / name).resolve()
    optuna_url = args.storage or f"sqlite:///{StudyLayout(study_dir).optuna_db}"
    _check_storage_url(optuna_url)

    base = TrialConfig.from_dict({
        "data": {"dataset": args.dataset, "data_dir": str(Path(args.data_dir).resolve())},
        "diffusion": {"timesteps": preset.timesteps},
        "train": {"epochs": epochs, "batch_size": preset.batch_size, "seed": args.seed,
                  "max_seconds": preset.max_trial_minutes * 60},
        "sample": {"steps": preset.eval_steps},
    })
    clip = None if args.no_clip else ClipConfig(args.clip_model, args.clip_pretrained,
                                                args.clip_checkpoint)
    return StudySpec(
        name=name, study_dir=str(study_dir), preset=preset_name, num_trials=num_trials,
        space=space, base=base, evaluation=EvalConfig(n_per_digit=preset.eval_n_per_digit),
        clip=clip, seed=args.seed, confirm_seeds=args.confirm_seeds, workers_per_trial=workers,
        trials_per_gpu=args.trials_per_gpu, use_gpu=cuda, gpus=args.gpus, storage=optuna_url,
        tune_storage=storage.tune_storage(args.storage_path, name),
        shared_storage=storage.is_remote(args.storage_path) or args.shared_fs,
        address=args.address)


def _check_storage_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {url!r} is not a SQLAlchemy URL (e.g. "
                         f"sqlite:///path/optuna.db or postgresql://user@host/db)") from None


def local_sizing(spec: StudySpec) -> Sizing | None:
    """The sizing of a study on a local Ray (None when it attaches to a cluster: sized there)."""
    import torch

    if spec.address or os.environ.get("RAY_ADDRESS"):
        return None
    return size_trials(spec, os.cpu_count() or 1, torch.cuda.device_count())


def prepare(spec: StudySpec, sizing: Sizing | None, resume: bool) -> tuple[StudyRecord, dict]:
    """Check data and CLIP, write study.json, train (or load) the judge, score real digits.
    Returns the study's record and the judge's state."""
    import torch

    from trainables.data import load_splits
    from trainables.evaluate import reference_row
    from trainables.judge import load_or_train_judge

    layout = spec.layout
    if resume:
        if not layout.exists():
            raise UsageError(f"--resume: {layout.root} holds no study (no study.json); check "
                             f"--name and --output-dir")
        saved = StudyRecord.load(layout).spec
        diff = spec.resume_mismatch(saved)
        if diff:
            raise UsageError(f"--resume: {layout.root} was made with different {', '.join(diff)}; "
                             f"resume with the same options or pick a new --name")
        spec = replace(saved, **{k: getattr(spec, k) for k in StudySpec.RESUMABLE})
    elif layout.exists():
        raise UsageError(f"{layout.root} already holds a study: pass --resume to continue it, or "
                         f"choose another --name")

    splits = load_splits(spec.base.data)  # DataError on bad data, before anything is written
    clip = None
    if spec.clip is not None:
        from trainables.clip_score import ClipScorer

        clip = ClipScorer.load(spec.clip)  # ClipLoadError before training
    print(f"data: {splits.description}")
    print("quality: " + ("CLIP-top-3 with " + clip.description if clip else
                         "CLIP DISABLED (--no-clip): quality = judge conditional accuracy; "
                         "CLIP columns are absent"), flush=True)

    layout.root.mkdir(parents=True, exist_ok=True)
    judge = load_or_train_judge(splits)
    torch.save(judge.state(), layout.judge)
    ref = reference_row(splits.val, judge, clip, spec.evaluation)
    layout.reference.write_text(json.dumps(ref, indent=1))
    record = StudyRecord(spec, sizing, {
        "judge_val_acc": judge.val_acc, "data_description": splits.description,
        "clip_description": clip.description if clip else None,
        "versions": _versions(), "machine": _machine()})
    record.save(layout)
    return record, judge.state()


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if not (args.cluster or args.address or os.environ.get("RAY_ADDRESS")):
        # A local Ray binds its GCS, raylet and agents to all interfaces unless it believes it
        # cannot form a cluster; this (read when Ray is imported, below) keeps them on 127.0.0.1.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from study import jobs, storage
    from trainables.clip_score import ClipLoadError
    from trainables.data import DataError

    remote = storage.is_remote(args.storage_path)
    try:
        if args.cluster or jobs.is_jobs_url(args.address):  # submit to a cluster
            from study.cluster import load_cluster_config

            config = load_cluster_config(args.cluster) if args.cluster else None
            args.name = args.name or f"{args.preset or 'study'}-{time.strftime('%Y%m%d-%H%M%S')}"
            build_spec(args)  # the study's options are checked here, before any cloud cost
            return jobs.submit(argv, name=args.name, output_dir=args.output_dir,
                               storage_path=args.storage_path, shared_fs=args.shared_fs,
                               config=config, address=args.address, gpus=args.gpus)
        spec = build_spec(args)
        sizing = local_sizing(spec)  # a study that cannot fit fails here, before any file
        if remote and args.resume:
            storage.pull_study(args.storage_path, spec.name, spec.layout.root)
        record, judge = prepare(spec, sizing, args.resume)
    except (UsageError, DataError, ClipLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from study.driver import run_study

    try:
        return run_study(record, judge, resume=args.resume)
    finally:
        if remote:  # Tune's state is there already; results, Optuna db, trials/ follow
            storage.push_study(record.spec.layout.root, args.storage_path, record.spec.name)


if __name__ == "__main__":
    sys.exit(main())

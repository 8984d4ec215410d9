"""Run the hyperparameter study: Ray Train DDP trials under Ray Tune + Optuna.

    python study/run.py                        # local study, preset chosen by the hardware found
    python study/run.py --preset smoke --dataset digits --no-clip
    python study/run.py --name cpu-1 --resume  # continue an interrupted study
    python study/run.py --cluster cluster.yaml --storage-path s3://bucket/runs   # on a cluster

Every trial trains one conditional U-Net (depth, width, lr searched), tunes its guidance weight
w, and is judged there: quality is class-conditional coverage in the digit judge's feature
space, beside the judge's accuracy, precision, recall and (unless --no-clip) CLIP-top-3.
Optuna searches two objectives: quality up, training seconds down; the Pareto front's
configurations are re-trained with more seeds (--confirm-seeds), each as soon as the running
trials can no longer displace it from the front.

Output: the study directory <output-dir>/<name>/ (its path is printed first) with results.csv
(one row per trial), study.json, reference.json, trials/<id>/, optuna.db, Tune's state in ray/,
Ray's own output in logs/ and the report in report/index.html. The console shows one line per
trial event and a progress line; --verbose adds Ray's, Tune's and Train's own output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python study/run.py` from a checkout
    sys.path.insert(0, str(ROOT))

from study.errors import UsageError  # noqa: E402
from study.layout import StudyLayout  # noqa: E402
from study.presets import (  # noqa: E402
    PRESETS,
    SAMPLER_KINDS,
    Preset,
    SamplerConfig,
    sampler_kind,
)
from study.spec import Sizing, StudyRecord, StudySpec, size_trials  # noqa: E402
from trainables.clip_score import ClipConfig  # noqa: E402
from trainables.config import TrainConfig, TrialConfig  # noqa: E402
from trainables.data import DATASETS, default_data_dir, default_dataset  # noqa: E402
from trainables.evaluate import EvalConfig  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as UsageError: one line (no usage block), exit status 2."""

    def error(self, message: str):
        raise UsageError(f"{message}; see python study/run.py --help")


def _per_preset(value) -> str:
    """A default that differs by preset, for the help: 'smoke 2, cpu 7, gpu 24'."""
    return ", ".join(f"{name} {value(preset)}" for name, preset in PRESETS.items())


def parse_args(argv=None) -> argparse.Namespace:
    # allow_abbrev=False: the cluster path forwards argv to the job minus client-only options,
    # which it recognises by their full names.
    p = _Parser(prog="python study/run.py", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    g = p.add_argument_group("study")
    g.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default: gpu when CUDA is "
                   "present or --gpus is given, else cpu): " + "; ".join(f"{k}: {v.description}"
                                                    for k, v in PRESETS.items()))
    g.add_argument("--num-trials", type=int, help="Optuna trials of the search (default: the "
                   f"preset's: {_per_preset(lambda p: p.num_trials)}); confirmation runs come "
                   "on top")
    g.add_argument("--epochs", type=int, help="per-trial epoch budget (default: the preset's: "
                   f"{_per_preset(lambda p: p.epochs)}); a trial also stops at the preset's "
                   "time limit, after "
                   f"{TrainConfig.early_stop_patience} epochs without a better validation loss, "
                   "or early by ASHA")
    g.add_argument("--space", type=Path, help="YAML/JSON file overriding search ranges, e.g. "
                   "'depth: [2, 3]' or 'lr: [0.0005, 0.002]'")
    g.add_argument("--seed", type=int, default=0, help="Optuna's sampler seed and the trials' "
                   "training seed; confirmation runs train with seed+1, seed+2, … "
                   "(default %(default)s)")
    g.add_argument("--asha", action=argparse.BooleanOptionalAction, default=None,
                   help="stop trials early on the in-training probe (ASHA, study/rungs.py); "
                        "default: the preset's "
                        f"({_per_preset(lambda p: 'on' if p.asha else 'off')}; off where "
                        "replaying searches showed it cost the front, benchmarks/RESULTS.md)")
    g.add_argument("--sampler", choices=SAMPLER_KINDS,
                   help="the Optuna sampler of the search; default: the preset's "
                   f"({_per_preset(lambda p: sampler_kind(p.sampler))}). gp found the best "
                   "fronts in replayed studies but thinks 0.2 s per suggestion at first and 2 s "
                   "after 1,000 trials, serially in the driver: for hundreds of short trials on "
                   "many GPUs tpe (0.05 s) keeps them busy (benchmarks/RESULTS.md)")
    g.add_argument("--confirm-seeds", type=int, metavar="N",
                   help="re-train each configuration on the Pareto front of the search's trials "
                        "(those ASHA did not stop) with N more seeds, for error bars; each "
                        "starts once the running trials can no longer displace it "
                        f"(default: the preset's: {_per_preset(lambda p: p.confirm_seeds)})")
    g.add_argument("--name", help="study name, the study directory's name (default: "
                   "<preset>-<date>-<time>; study-<date>-<time> when a study submitted with "
                   "--cluster or a dashboard --address names no --preset)")
    g.add_argument("--output-dir", type=Path, default=Path("runs"),
                   help="the folder the study directory <name>/ is made in (default: "
                        "%(default)s, so runs/<name>/); with --cluster or an http:// --address "
                        "the finished study is fetched there; a local --storage-path takes its "
                        "place")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted study --name without re-running finished "
                        "trials; give the options it was made with (only --num-trials and "
                        "--address may differ)")
    g.add_argument("--storage", help="Optuna storage SQLAlchemy URL, e.g. postgresql://… for a "
                   "cluster; a password may come from $STUDY_STORAGE_PASSWORD instead (default: "
                   "sqlite:///<study directory>/optuna.db)")
    g.add_argument("--verbose", action="store_true",
                   help="print Ray's, Tune's and Train's own output (Tune's trial table, "
                        "every worker's lines) too; it is always kept in <study "
                        "directory>/logs/")
    r = p.add_argument_group("resources")
    r.add_argument("--workers-per-trial", type=int, help="DDP workers per trial (default: the "
                   "preset's: " + _per_preset(lambda p: p.workers_per_trial) + ")")
    r.add_argument("--trials-per-gpu", type=int, default=2,
                   help="single-worker trials sharing one GPU (fractional GPUs; a DDP worker "
                        "takes a whole GPU; default %(default)s: on an H200 2 trials kept 97%% "
                        "of one trial's speed each, 4 only 57%%)")
    r.add_argument("--address", help="attach to a running Ray cluster instead of a local one; "
                   "an http(s):// dashboard URL submits the study there as a Ray Job")
    r.add_argument("--gpus", type=int, help="GPUs to plan the trials for when Ray does not "
                   "see them yet (the study uses this or the GPUs Ray finds when it starts, "
                   "whichever is more; default: those Ray finds); it selects the gpu preset. "
                   "--cluster sets it from cluster.yaml's GPU workers, which are then brought up "
                   "as trials need them")
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
                   help="disable CLIP (needed offline without local weights): its columns stay "
                        "empty and the report leads with the quality (coverage) instead of "
                        "CLIP-top-3; the quality itself does not change")
    return p.parse_args(argv)


def build_spec(args: argparse.Namespace, on_this_machine: bool = True) -> StudySpec:
    """Validate every input and return the study's spec, or raise UsageError before anything
    is written or trained. `on_this_machine` False: the study runs on a cluster, whose storage
    URL and address are checked there."""
    import torch

    from study import checks, redact, storage

    for option in checks.LIMITS:
        checks.check_count(option, getattr(args, option[2:].replace("-", "_")))
    for option in ("--output-dir", "--data-dir", "--storage-path", "--clip-model"):
        if getattr(args, option[2:].replace("-", "_")) is not None:
            checks.check_path(option, getattr(args, option[2:].replace("-", "_")))
    if args.clip_checkpoint is not None:
        checks.check_regular("--clip-checkpoint", args.clip_checkpoint)
    if args.clip_model.endswith(".json"):  # a local model config file
        checks.check_regular("--clip-model", args.clip_model)
    # A CPU head node plans for the GPUs its cluster brings up (--gpus; see study/cluster.py).
    cuda = torch.cuda.is_available() or bool(args.gpus)
    preset_name = args.preset or ("gpu" if cuda else "cpu")
    if preset_name not in PRESETS:
        raise UsageError(f"unknown preset {preset_name!r}: use one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    if args.space:
        checks.read_space_file(args.space)  # the file itself: bounded, finite, no aliases
    space = preset.space.override(args.space) if args.space else preset.space
    num_trials = preset.num_trials if args.num_trials is None else args.num_trials
    epochs = preset.epochs if args.epochs is None else args.epochs
    workers = preset.workers_per_trial if args.workers_per_trial is None \
        else args.workers_per_trial
    local_gpus = torch.cuda.device_count() if cuda and not (args.address or args.cluster) else 0
    if workers > local_gpus > 0:  # NCCL needs a GPU per DDP worker (see spec.size_trials)
        if args.workers_per_trial is not None:
            raise UsageError(f"--workers-per-trial {workers}: each DDP worker needs a GPU of its "
                             f"own and this machine has {local_gpus}")
        print(f"note: the {preset_name} preset's {workers} DDP workers per trial need "
              f"{workers} GPUs; this machine has {local_gpus}, so each trial runs "
              f"{local_gpus} worker(s)", file=sys.stderr)
        workers = local_gpus
    name = args.name if args.name is not None else \
        f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    checks.check_name(name)
    storage.check_storage_path(args.storage_path)
    root = storage.study_root(args.storage_path, args.output_dir)
    checks.check_output_dir(root)
    study_dir = (root / name).resolve()
    optuna_url = redact.with_password(args.storage) if args.storage else \
        f"sqlite:///{StudyLayout(study_dir).optuna_db}"
    checks.check_storage_url(optuna_url, study_dir, connect=on_this_machine)
    if on_this_machine:
        checks.check_address(args.address)

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
        guidance=preset.guidance, clip=clip, seed=args.seed,
        confirm_seeds=preset.confirm_seeds if args.confirm_seeds is None else args.confirm_seeds,
        workers_per_trial=workers,
        trials_per_gpu=args.trials_per_gpu, use_gpu=cuda, gpus=args.gpus, storage=optuna_url,
        tune_storage=storage.tune_storage(args.storage_path, name),
        shared_storage=storage.is_remote(args.storage_path) or args.shared_fs,
        address=args.address, sampler=sampler_config(preset, args.sampler),
        asha=preset.asha if args.asha is None else args.asha)


def sampler_config(preset: Preset, kind: str | None) -> SamplerConfig | None:
    """The preset's sampler, or one of `kind` with the preset's start-up trials."""
    if kind is None or (preset.sampler and preset.sampler.kind == kind):
        return preset.sampler
    return replace(preset.sampler or SamplerConfig(), kind=kind)


def local_sizing(spec: StudySpec) -> Sizing | None:
    """The sizing of a study on a local Ray (None when it attaches to a cluster: sized there)."""
    import torch

    if spec.address or os.environ.get("RAY_ADDRESS"):
        return None
    cpus = os.cpu_count() or 1
    if not spec.use_gpu and spec.workers_per_trial > cpus * 100 - 1:  # 0.01 CPU each at least
        raise UsageError(f"--workers-per-trial {spec.workers_per_trial}: this machine's {cpus} "
                         f"CPU(s) hold at most {cpus * 100 - 1} workers (0.01 CPU each); "
                         f"use fewer")
    return size_trials(spec, cpus, torch.cuda.device_count())


def check_existence(layout: StudyLayout, resume: bool) -> None:
    """--resume needs a study; a new study must not overwrite one."""
    if resume and not layout.exists():
        raise UsageError(f"--resume: {layout.root} holds no study (no study.json); check "
                         f"--name and --output-dir")
    if not resume and layout.exists():
        raise UsageError(f"{layout.root} already holds a study: pass --resume to continue it, or "
                         f"choose another --name")


def prepare(spec: StudySpec, sizing: Sizing | None, resume: bool) -> tuple[StudyRecord, dict]:
    """Check data and CLIP, write study.json, train (or load) the judge, score real digits.
    Returns the study's record and the judge's state. The caller holds the study's lock
    (study/lock.py)."""
    import secrets

    import torch

    from study import checks, lock
    from trainables.data import load_splits
    from trainables.evaluate import reference_row
    from trainables.judge import load_or_train_judge

    layout = spec.layout
    check_existence(layout, resume)  # again, now under the lock
    saved = None
    if resume:
        saved = checks.load_record(layout)
        diff = spec.resume_mismatch(saved.spec)
        if diff:
            raise UsageError(f"--resume: {layout.root} was made with different {', '.join(diff)}; "
                             f"resume with the same options or pick a new --name")
        checks.check_study_files(layout)
        # storage: the same URL (compared redacted), with the password given this time
        spec = replace(saved.spec, storage=spec.storage,
                       **{k: getattr(spec, k) for k in StudySpec.RESUMABLE})
    token = (saved.facts.get("study_token") if saved else None) or secrets.token_hex(8)
    lock.check_claim(spec, token, resume)

    splits = load_splits(spec.base.data)  # DataError on bad data, before anything is written
    fingerprint = checks.data_fingerprint(splits)
    if saved and saved.facts.get("data_fingerprint") not in (None, fingerprint):
        raise UsageError(f"--resume: the data in {spec.base.data.data_dir} changed since the "
                         f"study was made (fingerprint {saved.facts['data_fingerprint']}, now "
                         f"{fingerprint}): restore the original files, or start a new --name")
    clip = None
    if spec.clip is not None:
        from trainables.clip_score import ClipScorer

        clip = ClipScorer.load(spec.clip)  # ClipLoadError before training
    print(f"data: {splits.description}")
    print(f"quality: {spec.quality_metric} (class-conditional, in the judge's features) at each "
          f"trained model's best w; " + (f"CLIP-top-3 beside it with {clip.description}" if clip
                                          else "CLIP DISABLED (--no-clip): CLIP columns are "
                                               "absent"), flush=True)

    layout.root.mkdir(parents=True, exist_ok=True)
    judge = load_or_train_judge(splits)
    torch.save(judge.state(), layout.judge)
    ref = reference_row(splits.val, judge, clip, spec.evaluation)
    layout.reference.write_text(json.dumps(ref, indent=1))
    record = StudyRecord(spec, sizing, {
        "judge_val_acc": judge.val_acc, "data_description": splits.description,
        "data_fingerprint": fingerprint, "study_token": token,
        "clip_description": clip.description if clip else None,
        "versions": _versions(), "machine": _machine()})
    record.save(layout)
    lock.claim(spec, token, resume)  # the Optuna study is this directory's from now on
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


def error_line(e: BaseException) -> str:
    """An error's message on one line: control characters in a value it quotes (a newline in a
    path) are shown escaped."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m[0])[1:-1], str(e))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from study import jobs, storage
    from study.interrupt import EXIT_STATUS, INTERRUPTS, resume_hint
    from study.lock import StudyLock
    from trainables.clip_score import ClipLoadError
    from trainables.data import DataError

    errors = (UsageError, DataError, ClipLoadError, ValueError)
    try:
        args = parse_args(argv)
        if not (args.cluster or args.address or os.environ.get("RAY_ADDRESS")):
            # A local Ray binds its GCS, raylet and agents to all interfaces unless it believes
            # it cannot form a cluster; this (read when Ray is imported) keeps them on 127.0.0.1.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        remote = storage.is_remote(args.storage_path)
        if args.cluster or jobs.is_jobs_url(args.address):  # submit to a cluster
            from study.cluster import load_cluster_config

            config = load_cluster_config(args.cluster) if args.cluster else None
            if args.name is None:
                args.name = f"{args.preset or 'study'}-{time.strftime('%Y%m%d-%H%M%S')}"
            # The study's options are checked here, before any cloud cost; its storage URL is
            # reached from the cluster, so it is checked there.
            build_spec(args, on_this_machine=False)
            print(f"study directory: {(args.output_dir / args.name).resolve()} (written at "
                  f"{args.storage_path}/{args.name} on the cluster, fetched here at the end)",
                  flush=True)
            return jobs.submit(argv, name=args.name, output_dir=args.output_dir,
                               storage_path=args.storage_path, shared_fs=args.shared_fs,
                               config=config, address=args.address, gpus=args.gpus)
        spec = build_spec(args)
        sizing = local_sizing(spec)  # a study that cannot fit fails here, before any file
        if not remote:  # (a remote study is pulled first, under the lock)
            check_existence(spec.layout, args.resume)  # refused before the lock writes a file
    except errors as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2

    print(f"study directory: {spec.layout.root}" + (f" (copied to {args.storage_path}/"
                                                     f"{spec.name})" if remote else ""),
          flush=True)
    lock = StudyLock(spec.layout)  # one driver per study (study/lock.py)
    code = None
    try:
        with INTERRUPTS.installed():
            try:
                lock.acquire()
                if remote and args.resume:
                    try:
                        storage.pull_study(args.storage_path, spec.name, spec.layout.root)
                    except OSError as e:  # pyarrow's object-store errors
                        raise UsageError(f"--resume: cannot read {args.storage_path}/"
                                         f"{spec.name} ({error_line(e)[:200]})") from None
                record, judge = prepare(spec, sizing, args.resume)
            except errors as e:
                print(f"error: {error_line(e)}", file=sys.stderr)
                return 2
            lock.started = True
            from study.driver import run_study

            try:
                code = run_study(record, judge, resume=args.resume, verbose=args.verbose)
            finally:
                if remote and code is not None:  # Tune's state is there; the rest follows
                    storage.push_study(spec.layout.root, args.storage_path, spec.name)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the tuning: stop at once
        code = EXIT_STATUS
    finally:
        lock.release()  # a directory made for a study that never began is removed
    if code == EXIT_STATUS:
        print(resume_hint(spec.name, argv) if lock.started else
              "interrupted before the study began" + (": nothing was kept" if lock.created
                                                      else ""), file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

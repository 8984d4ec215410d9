"""What a study is: its typed spec (``StudySpec``), and how its trials are sized (``Sizing``).

The spec holds everything that defines the trials and how they are judged: the search space,
the base trial config every trial starts from, evaluation and CLIP settings, seeds, workers and
storage. It is built once from the command line (``study/run.py``), saved in ``study.json`` and
compared field by field on ``--resume``. The sizing (trials at a time, CPU/GPU per worker) is
computed from the resources before any trial starts, so a study that cannot fit fails first.

    spec = StudySpec.from_dict(json.loads(layout.spec.read_text())["spec"])
    sizing = size_trials(spec, cpus=2, gpus=0)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from study.errors import UsageError
from study.layout import StudyLayout
from study.presets import SamplerConfig
from study.redact import redact
from study.search_space import SearchSpace
from trainables.clip_score import ClipConfig
from trainables.config import TrialConfig
from trainables.evaluate import EvalConfig
from trainables.guidance import GuidanceSearch
from trainables.quality import QUALITY_METRIC

WORKER_RETRIES = 2  # Ray Train restarts of a trial's workers (from its checkpoint) before it fails
TRIAL_RETRIES = 1  # Tune retries of a trial whose driver failed (it resumes from its checkpoint)
DRIVER_CPU = 0.01  # each trial's driver function; its workers hold the real resources


@dataclass(frozen=True)
class StudySpec:
    name: str
    study_dir: str  # absolute path of the study directory (see study/layout.py)
    preset: str
    num_trials: int  # Optuna trials (may grow on --resume)
    space: SearchSpace
    base: TrialConfig  # every trial's config before its searched values are set
    evaluation: EvalConfig
    guidance: GuidanceSearch  # how each trained model's w is tuned (trainables/guidance.py)
    clip: ClipConfig | None  # None: --no-clip, CLIP columns stay empty
    seed: int  # the searcher's seed and the base training seed
    confirm_seeds: int  # further seeds each Pareto configuration is retrained with
    workers_per_trial: int  # DDP workers
    trials_per_gpu: int  # single-worker trials sharing one GPU
    use_gpu: bool  # trials train on GPUs (found here, or brought up by a cluster)
    gpus: int | None  # GPUs a cluster brings up, beyond those Ray sees at start
    storage: str  # Optuna storage URL
    tune_storage: str | None  # object-store URI of Tune's state; None: <study_dir>/ray
    shared_storage: bool  # every node reaches the study's storage (object store or mount)
    address: str | None = None  # a running Ray cluster to attach to (may change on --resume)
    # the Optuna sampler (study.search.make_sampler); None: OptunaSearch's TPESampler(seed)
    sampler: SamplerConfig | None = None
    asha: bool = True  # stop trials early on the probe (study/rungs.py)
    worker_retries: int = WORKER_RETRIES
    trial_retries: int = TRIAL_RETRIES

    #: Fields that may differ when a study is resumed: how much to run and where, not what.
    RESUMABLE = ("num_trials", "address")

    def __post_init__(self):
        for name, cls in (("space", SearchSpace), ("evaluation", EvalConfig),
                          ("guidance", GuidanceSearch)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls(**value))
        if isinstance(self.base, dict):
            object.__setattr__(self, "base", TrialConfig.from_dict(self.base))
        if isinstance(self.clip, dict):
            object.__setattr__(self, "clip", ClipConfig(**self.clip))
        if isinstance(self.sampler, dict):
            object.__setattr__(self, "sampler", SamplerConfig(**self.sampler))

    @property
    def layout(self) -> StudyLayout:
        return StudyLayout(Path(self.study_dir))

    @property
    def quality_metric(self) -> str:
        """The results column Optuna maximises: class-conditional coverage in the judge's
        feature space, which neither guidance nor mode collapse can inflate
        (trainables/quality.py; CLIP-top-3 can be inflated by both)."""
        return QUALITY_METRIC

    @property
    def headline_metric(self) -> str:
        """The number a report leads with: CLIP-top-3 when CLIP is on, else the quality."""
        return "clip_top" if self.clip is not None else QUALITY_METRIC

    @property
    def tune_path(self) -> str:
        """Tune's and Train's storage_path: an object-store URI, or the study's ray/ folder."""
        return self.tune_storage or str(self.layout.tune)

    def to_dict(self) -> dict:
        """The spec as study.json stores it: tuples as lists, the storage URL's password
        masked (study/redact.py; a resumed study gets it from the command line again)."""
        d = asdict(self)
        d["space"] = self.space.to_dict()
        d["storage"] = redact(self.storage)
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> StudySpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown study spec field(s) {sorted(unknown)}")
        return cls(**d)

    def resume_mismatch(self, saved: StudySpec) -> list[str]:
        """The fields that define the trials and differ from the saved spec."""
        mine, theirs = self.to_dict(), saved.to_dict()
        diff = [path for k in mine if k not in self.RESUMABLE
                for path in _differences(k, mine[k], theirs.get(k))]
        return sorted(diff, key=lambda path: path.count("."))  # the plainest names first


def _differences(path: str, a, b) -> list[str]:
    """Dotted paths of the leaves where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in a.keys() | b.keys()
                for p in _differences(f"{path}.{k}", a.get(k), b.get(k))]
    return [] if a == b else [path]


@dataclass(frozen=True)
class Sizing:
    """How many trials run at once and what each worker holds."""

    concurrent: int  # trials at a time
    cpus_per_worker: float
    gpus_per_worker: float = 0.0  # 0: CPU trials

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def threads(self) -> int:
        """Torch threads of a worker: its whole CPUs, at least one."""
        return max(1, int(self.cpus_per_worker))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, workers: int) -> str:
        return (f"{self.concurrent} at a time, {workers} worker(s) each ({self.cpus_per_worker} "
                f"CPU" + (f", {self.gpus_per_worker:.2f} GPU" if self.use_gpu else "")
                + " per worker)")


def size_trials(spec: StudySpec, cpus: float, gpus: float) -> Sizing:
    """Trials at a time and per-worker CPU/GPU shares for `cpus` and `gpus` (GPUs count only
    when the spec trains on them). UsageError when a trial cannot fit at all."""
    workers = spec.workers_per_trial
    gpus = max(gpus, spec.gpus or 0) if spec.use_gpu else 0
    if gpus > 0:
        # NCCL refuses two ranks of one process group on the same GPU, so only single-worker
        # trials share a GPU; a DDP trial takes a whole GPU per worker.
        gpus_per_worker = 1 / spec.trials_per_gpu if workers == 1 else 1.0
        if workers > gpus:
            raise UsageError(f"a trial's {workers} DDP workers each need a GPU of their own and "
                             f"the cluster has {gpus:g}: use --workers-per-trial {int(gpus)}")
        concurrent = max(1, math.floor(gpus / (gpus_per_worker * workers)))
    else:
        gpus_per_worker = 0.0
        concurrent = max(1, math.floor(cpus / workers))
    concurrent = min(concurrent, spec.num_trials)
    # Hundredths of a CPU, rounded down, so drivers and workers of all trials always fit.
    per_worker = math.floor(100 * (cpus - DRIVER_CPU * concurrent) / (concurrent * workers))
    return Sizing(concurrent, max(per_worker / 100, 0.01), gpus_per_worker)


@dataclass(frozen=True)
class StudyRecord:
    """study.json: the spec, the sizing of its latest run, and facts measured when it started."""

    spec: StudySpec
    sizing: Sizing | None = None
    facts: dict = field(default_factory=dict)  # judge accuracy, data, CLIP, versions, machine

    def save(self, layout: StudyLayout) -> None:
        """Write study.json into `layout` (a copied or fetched study directory is its own, wherever
        its spec says it was made)."""
        path = layout.spec
        sizing = self.sizing.to_dict() if self.sizing else None
        path.write_text(json.dumps({"spec": self.spec.to_dict(), "sizing": sizing,
                                    **self.facts,
                                    # derived, for readers without this code (analysis/)
                                    "quality_metric": self.spec.quality_metric,
                                    "headline_metric": self.spec.headline_metric}, indent=1))

    @classmethod
    def load(cls, layout: StudyLayout) -> StudyRecord:
        return cls.from_dict(json.loads(layout.spec.read_text()))

    @classmethod
    def from_dict(cls, d: dict) -> StudyRecord:
        d = dict(d)
        sizing = d.pop("sizing", None)
        d.pop("quality_metric", None), d.pop("headline_metric", None)
        return cls(StudySpec.from_dict(d.pop("spec")), Sizing(**sizing) if sizing else None, d)

"""A discrete-event model of a study: N trials on D devices (GPUs, or CPU slots), to predict its
wall time and where the device time goes before renting a cluster.

    python benchmarks/scale_model.py                       # inputs: benchmarks/scale_inputs.json
    python benchmarks/scale_model.py --seeds 50 --inputs my_inputs.json

The model (every number comes from the inputs file, each with its source):

- **Slots.** Each device runs up to ``trials_per_device`` trials; m trials training on one
  device each progress at ``packing_speed[m]`` of a lone trial's speed (processor sharing:
  progress is re-rated whenever m changes). At most ``max_concurrent`` trials are in flight.
- **A trial** is asked for by the driver, launched (``launch_s``: Tune starts the trial's
  driver process), starts Ray Train (``startup_s``; ``first_startup_s`` for the session's
  first wave), then trains epochs of ``epoch_s`` lone-device seconds (up to ``max_train_s``
  in all: fit stops mid-epoch on its budget), each followed by ``epoch_overhead_s`` of
  validation, probe, checkpoint and report, and ends with its evaluation (``eval_s``). It
  holds its slot from launch to the end of its evaluation.
- **ASHA** (Tune's asynchronous rule, as the study's ``make_scheduler`` sets it): rungs at
  ``grace_period · rf^k`` epochs below ``epochs + 1``; at a rung a trial stops when its value is
  below the (1 − 1/rf) quantile of the values recorded there before it. Each trial's value is
  a seeded uniform draw, the same at every rung, so outcomes vary with the seed: the model
  reports the median (and range) over seeds. A trial waits at a rung for the driver's decision.
- **The driver** (the Tune driver process) is one serial server, first come first served: per
  trial an Optuna ask and a tell (latency interpolated in the measured table against the number
  of finished trials) plus ``driver_trial_s``; per reported result ``driver_result_s``; and,
  when ``stopped_eval_in_driver`` is set (as the study did until 2 Dec 2026), the evaluation of
  every ASHA-stopped trial (``driver_eval_s``, on the driver's machine). Results do not block
  training (Train V2 hands them to Tune through a queue).
- **Rung decisions.** The study decides ASHA inside each trial: after a rung's epoch the
  trial's rank 0 asks the study's RungKeeper actor (study/rungs.py), a round trip of
  ``rung_s``, and a stopped trial evaluates itself in its own slot. With ``rungs_in_driver``
  (Tune's scheduler, as the study did until 2 Dec 2026) the decision waits in the driver's
  queue: in Tune a trial's workers train on meanwhile, but epochs past a STOP are lost, so the
  model counts that time as the driver's.
- **Overlap.** ``prestart`` more trials than slots may be in flight: they launch and start up
  without a slot and take the first one that frees (a what-if: the study does not do this).

Device time is split at every instant into useful training — m·speed(m) of the device's
capacity max_m m·speed(m) — and the rest, shared among its non-training slots by what they
do: start-up, per-epoch overhead, evaluation, driver (waiting for an ask or a rung decision)
and idle (nothing left to run: the tail). The shares are of devices × wall time.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

INPUTS = Path(__file__).with_name("scale_inputs.json")
CATEGORIES = ("train", "startup", "epoch", "eval", "driver", "idle", "packing")


@dataclass(frozen=True)
class Scenario:
    name: str
    trials: int
    devices: int  # GPUs, or CPU slots (a 1-worker, 1-thread CPU trial per core)
    epochs: int  # the per-trial budget (trials ASHA keeps train them all)
    epoch_s: float  # training seconds per epoch of a lone trial on a device
    startup_s: float  # Ray Train start-up: trial driver -> worker function entered
    eval_s: float  # a trial's own evaluation, on its device
    trials_per_device: int = 1
    packing_speed: dict = field(default_factory=lambda: {1: 1.0})  # m -> speed of each of m
    max_concurrent: int | None = None
    launch_s: float = 0.0  # Tune starting the trial's driver process, before startup_s
    first_startup_s: float | None = None  # startup_s of the session's first wave
    epoch_overhead_s: float = 0.0  # validation, probe, checkpoint, report per epoch
    max_train_s: float | None = None  # training budget per trial (lone-device seconds)
    asha_grace: int | None = None  # ASHA grace period in epochs (None: no ASHA)
    asha_rf: float = 3.0
    stopped_eval_in_driver: bool = False
    rungs_in_driver: bool = False  # ASHA in Tune's driver (before), not the RungKeeper actor
    rung_s: float = 0.0  # a trial's round trip to the RungKeeper at a rung
    driver_eval_s: float | None = None  # a stopped trial's evaluation in the driver (≠ eval_s)
    driver_trial_s: float = 0.0  # the driver's own cost per trial (besides Optuna)
    driver_result_s: float = 0.0  # the driver's cost per reported result
    optuna_finished: tuple = (0,)  # finished trials at which ask/tell were measured
    optuna_ask_ms: tuple = (0.0,)
    optuna_tell_ms: tuple = (0.0,)
    # the same for TPE (``--sampler tpe``), where the study's sampler is another (GP)
    tpe_ask_ms: tuple | None = None
    tpe_tell_ms: tuple | None = None
    prestart: int = 0  # trials beyond the slots allowed to start up ahead (overlap)
    seed: int = 0

    @property
    def slots(self) -> int:
        return self.devices * self.trials_per_device

    def speed(self, m: int) -> float:
        """Each trial's speed (of a lone trial's) while m train on one device; interpolated."""
        ms = sorted(self.packing_speed)
        return interp(tuple(ms), tuple(self.packing_speed[k] for k in ms), m)

    @classmethod
    def from_inputs(cls, name: str, spec: dict) -> Scenario:
        """A scenario from the inputs file: numbers may be {"value": v, "source": "..."}."""
        known = {f.name for f in fields(cls)}
        values = {k: v["value"] if isinstance(v, dict) and "value" in v else v
                  for k, v in spec.items() if k in known}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        speeds = values.get("packing_speed", {1: 1.0})
        values["packing_speed"] = {int(m): x for m, x in speeds.items()}
        for k in ("driver_trial_s", "driver_result_s"):  # placeholders, 0 until measured
            values[k] = values.get(k) or 0.0
        return cls(name=name, **values)


@dataclass
class Result:
    wall_s: float
    shares: dict  # category -> share of devices × wall
    trial_train_share: float  # training ÷ trial wall, summed over trials (the study's metric)
    epochs_trained: int
    stopped: int
    driver_busy_s: float


def interp(xs: tuple, ys: tuple, x: float) -> float:
    """Piecewise-linear interpolation, flat beyond the ends."""
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def asha_rungs(grace: int, rf: float, max_t: int) -> list[int]:
    """Tune's ASHA milestones (one bracket, ``_Bracket.__init__``): grace·rf^k for
    k < int(log(max_t / grace) / log(rf) + 1)."""
    return [round(grace * rf**k) for k in range(int(math.log(max_t / grace) / math.log(rf) + 1))]


def asha_continues(recorded: list[float], value: float, rf: float) -> bool:
    """Tune's rule: a trial stops at a rung when its value is below the (1 − 1/rf) percentile
    of the values recorded there before it; the first trial at a rung always continues."""
    return not recorded or value >= np.percentile(recorded, (1 - 1 / rf) * 100)


@dataclass
class _Trial:
    value: float  # what ASHA compares (a seeded draw)
    phase: str = "queued"  # startup, train, epoch, driver (rung decision), eval, waiting, done
    device: int | None = None
    epoch: int = 0
    work: float = 0.0  # lone-device training seconds begun, against max_train_s
    remaining: float = 0.0  # of the current epoch, at `since`
    rate: float = 1.0
    since: float = 0.0
    version: int = 0  # invalidates epoch ends scheduled before a re-rating
    entered: float = 0.0  # the trial function starts (after launch_s)
    ended: float = 0.0
    phase_t: float = 0.0
    train_time: float = 0.0


def simulate(s: Scenario) -> Result:
    """Run the event simulation of one study; see the module docstring for the model."""
    rng = random.Random(s.seed)
    trials = [_Trial(rng.random()) for _ in range(s.trials)]
    rungs = set(asha_rungs(s.asha_grace, s.asha_rf, s.epochs + 1)) if s.asha_grace else set()
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    k = s.trials_per_device
    capacity = max(m * s.speed(m) for m in range(1, k + 1))
    cap = min(s.max_concurrent or s.slots + s.prestart, s.slots + s.prestart)
    budget = s.max_train_s or math.inf
    driver_eval_s = s.eval_s if s.driver_eval_s is None else s.driver_eval_s
    events: list = []
    order = itertools.count()
    slots: list[list[int]] = [[] for _ in range(s.devices)]
    training: list[set[int]] = [set() for _ in range(s.devices)]
    dev_t = [0.0] * s.devices
    acc = dict.fromkeys(CATEGORIES + ("free",), 0.0)
    waiting: list[int] = []  # started up, no slot free yet (prestart only)
    st = dict.fromkeys(("driver_free", "driver_busy", "free_t", "free_int", "driver_int",
                        "launched", "finished", "pending", "in_flight", "epochs", "stopped"), 0)
    st["free"] = s.slots

    def push(t, kind, i, version=0):
        heapq.heappush(events, (t, next(order), kind, i, version))

    def driver(t: float, service: float) -> float:  # one serial server, FIFO
        st["driver_free"] = max(t, st["driver_free"]) + service
        st["driver_busy"] += service
        return st["driver_free"]

    def track_free(t: float, change: int = 0) -> None:  # free slots, and those awaiting an ask
        dt = t - st["free_t"]
        st["free_int"] += st["free"] * dt
        st["driver_int"] += min(st["free"], st["pending"]) * dt
        st["free"], st["free_t"] = st["free"] + change, t

    def flush(d: int, t: float) -> None:  # account device d's time up to t
        dt, m = t - dev_t[d], len(training[d])
        useful = m * s.speed(m) / capacity if m else 0.0
        acc["train"] += useful * dt
        others = [trials[i].phase for i in slots[d] if i not in training[d]]
        others += ["free"] * (k - len(slots[d]))
        for p in others:
            acc[p] = acc.get(p, 0.0) + (1 - useful) * dt / len(others)
        acc["packing"] += 0.0 if others else (1 - useful) * dt
        dev_t[d] = t

    def set_phase(i: int, phase: str, t: float) -> None:
        tr = trials[i]
        if tr.device is not None:
            flush(tr.device, t)
        if tr.phase == "train":
            tr.train_time += t - tr.phase_t
        tr.phase, tr.phase_t = phase, t

    def rerate(d: int, t: float, add: int | None = None, drop: int | None = None) -> None:
        for i in training[d]:  # processor sharing: progress at the old rate, then re-rate
            trials[i].remaining -= (t - trials[i].since) * trials[i].rate
        training[d].add(add) if add is not None else training[d].discard(drop)
        for i in training[d]:
            tr = trials[i]
            tr.rate, tr.since, tr.version = s.speed(len(training[d])), t, tr.version + 1
            push(t + max(tr.remaining, 0.0) / tr.rate, "epoch_end", i, tr.version)

    def take_slot(i: int, t: float) -> bool:
        d = min(range(s.devices), key=lambda j: len(slots[j]))  # the emptiest device
        if len(slots[d]) >= k:
            return False
        track_free(t, -1)
        flush(d, t)
        slots[d].append(i)
        trials[i].device = d
        return True

    def release(i: int, t: float) -> None:
        d = trials[i].device
        track_free(t, +1)
        flush(d, t)
        slots[d].remove(i)
        trials[i].device = None
        if waiting:  # a trial that has started up takes the slot at once
            j = waiting.pop(0)
            take_slot(j, t)
            begin_epoch(j, t)

    def begin_epoch(i: int, t: float) -> None:
        tr = trials[i]
        set_phase(i, "train", t)
        tr.remaining = min(s.epoch_s, budget - tr.work)  # fit stops mid-epoch on its budget
        tr.work += tr.remaining
        rerate(tr.device, t, add=i)

    def evaluate(i: int, t: float) -> None:  # in its slot, then finished
        set_phase(i, "eval", t)
        push(t + s.eval_s, "evaluated", i)

    def after_epoch(i: int, t: float) -> None:
        tr = trials[i]
        evaluate(i, t) if tr.epoch >= s.epochs or tr.work >= budget - 1e-9 else begin_epoch(i, t)

    def launch(t: float) -> None:  # ask Optuna for trials while slots allow
        while st["launched"] < s.trials and st["in_flight"] < cap:
            track_free(t)
            st["pending"] += 1
            st["in_flight"] += 1
            ask = interp(s.optuna_finished, s.optuna_ask_ms, st["finished"]) / 1000
            push(driver(t, ask + s.driver_trial_s), "asked", st["launched"])
            st["launched"] += 1

    def finish(i: int, t: float, eval_in_driver: bool) -> None:
        set_phase(i, "done", t)
        release(i, t)
        trials[i].ended = t
        st["in_flight"] -= 1
        st["finished"] += 1
        tell = interp(s.optuna_finished, s.optuna_tell_ms, st["finished"]) / 1000
        driver(t, tell + (driver_eval_s if eval_in_driver else 0.0))
        launch(t)

    launch(0.0)
    t = 0.0
    while events:
        t_event, _, kind, i, version = heapq.heappop(events)
        tr = trials[i]
        if kind == "epoch_end" and version != tr.version:
            continue  # scheduled before a re-rating
        t = t_event
        if kind == "asked":
            track_free(t)
            st["pending"] -= 1
            take_slot(i, t)
            set_phase(i, "startup", t)
            first = s.first_startup_s is not None and i < s.slots
            tr.entered = t + s.launch_s
            push(tr.entered + (s.first_startup_s if first else s.startup_s), "started", i)
        elif kind == "started":
            if tr.device is not None or take_slot(i, t):
                begin_epoch(i, t)
            else:
                set_phase(i, "waiting", t)
                waiting.append(i)
        elif kind == "epoch_end":
            set_phase(i, "epoch", t)
            rerate(tr.device, t, drop=i)
            tr.epoch += 1
            st["epochs"] += 1
            push(t + s.epoch_overhead_s, "reported", i)
        elif kind == "reported":
            decided = driver(t, s.driver_result_s)
            if tr.epoch in rungs and s.rungs_in_driver:  # waits for ASHA in the driver
                set_phase(i, "driver", t)
                push(decided, "decided", i)
            elif tr.epoch in rungs:  # asks the RungKeeper itself
                set_phase(i, "epoch", t)
                push(t + s.rung_s, "decided", i)
            else:
                after_epoch(i, t)
        elif kind == "decided":
            go_on = asha_continues(recorded[tr.epoch], tr.value, s.asha_rf)
            recorded[tr.epoch].append(tr.value)
            st["stopped"] += not go_on
            if go_on:
                after_epoch(i, t)
            elif s.stopped_eval_in_driver:
                finish(i, t, eval_in_driver=True)
            else:
                evaluate(i, t)
        elif kind == "evaluated":
            finish(i, t, eval_in_driver=False)

    wall = max(t, st["driver_free"])
    track_free(wall)
    for d in range(s.devices):
        flush(d, wall)
    awaiting_ask = st["driver_int"] / st["free_int"] if st["free_int"] else 0.0
    acc["driver"] += acc["free"] * awaiting_ask
    acc["idle"] += acc.pop("free") * (1 - awaiting_ask)
    walls = sum(tr.ended - tr.entered for tr in trials)
    return Result(wall, {c: acc[c] / (s.devices * wall) for c in CATEGORIES},
                  sum(tr.train_time for tr in trials) / walls, st["epochs"], st["stopped"],
                  st["driver_busy"])


def over_seeds(s: Scenario, seeds: int) -> list[Result]:
    return [simulate(replace(s, seed=seed)) for seed in range(seeds)]


def summary(results: list[Result]) -> dict:
    """Median wall time, range, and the run at the median (for its shares)."""
    walls = sorted(r.wall_s for r in results)
    return {"wall": statistics.median(walls), "lo": walls[0], "hi": walls[-1],
            "median": sorted(results, key=lambda r: r.wall_s)[len(results) // 2]}


# ----------------------------------------------------------------------------- the report


def load_inputs(path: Path) -> dict[str, tuple[Scenario, dict]]:
    """{name: (scenario, measured values)}; a scenario inherits its 'base' scenario's inputs."""
    specs = json.loads(Path(path).read_text())["scenarios"]

    def resolved(name: str) -> dict:
        spec = dict(specs[name])
        base = spec.pop("base", None)
        merged = {**(resolved(base) if base else {}), **spec}
        merged["measured"] = spec.get("measured", {})  # measurements are never inherited
        return merged

    out = {}
    for name in specs:
        spec = resolved(name)
        measured = {k: v["value"] for k, v in spec.pop("measured").items()}
        out[name] = (Scenario.from_inputs(name, spec), measured)
    return out


def what_if(s: Scenario, tpe=False, report_every=1, overlap=False, train_x=1,
            trials_x=1, per_gpu=None) -> Scenario:
    """The scenario with settings changed (settings, not measurements). `tpe`: Optuna's TPE
    sampler's measured latency instead of the scenario's sampler's."""
    k = per_gpu or s.trials_per_device
    if tpe and s.tpe_ask_ms:
        s = replace(s, optuna_ask_ms=s.tpe_ask_ms, optuna_tell_ms=s.tpe_tell_ms)
    return replace(s, epoch_overhead_s=s.epoch_overhead_s / report_every,
                   prestart=s.devices * k if overlap else s.prestart, epoch_s=s.epoch_s * train_x,
                   trials=s.trials * trials_x, trials_per_device=k)


LADDER = (  # applied one after another
    ("as the study runs now (its sampler, ASHA as the scenario says)", {}),
    ("+ TPE's suggestions instead (`--sampler tpe`)", {"tpe": True}),
    ("+ validation, checkpoint and report every 10 epochs", {"report_every": 10}),
    ("+ the next trial starts up while the slots train (overlap)", {"overlap": True}),
    ("+ 16× the training per trial (bigger models, more data)", {"train_x": 16}),
    ("+ 4× the trials (the tail shrinks relative to the study)", {"trials_x": 4}),
)


def validate(scenarios: dict, seeds: int) -> None:
    print(f"## Predicted vs measured\n\nASHA's outcome is a draw: the median over {seeds} "
          "seeds [range], and over the seeds whose epochs trained equal the measured count "
          "(n of them).\n\n| study | predicted span | given the measured epochs | measured "
          "span | error | training ÷ trial wall, model / measured | training ÷ slot time, "
          "model / measured |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (s, m) in scenarios.items():
        if s.trials > 64:
            continue
        runs = over_seeds(s, seeds)
        same = [r for r in runs if r.epochs_trained == m.get("epochs_trained")]
        every, given = summary(runs), summary(same) if same else None
        best = given or every
        r, wall = best["median"], m.get("wall_s")
        shown = f"{wall:.0f} s" if wall else (f"≤ {m['command_s']:.0f} s (whole command)"
                                              if "command_s" in m else "not recorded")
        share = {key: f"{x:.1%} / " + (f"{m[key]:.1%}" if key in m else "–") for key, x in
                 (("trial_train_share", r.trial_train_share), ("slot_train_share",
                                                                r.shares["train"]))}
        err = f"{best['wall'] / wall - 1:+.1%}" if wall else "n/a"
        print(f"| {name} | {every['wall']:.0f} s [{every['lo']:.0f}–{every['hi']:.0f}] | "
              + (f"{given['wall']:.0f} s (n = {len(same)})" if given else "–")
              + f" | {shown} | {err} | {share['trial_train_share']} | "
              f"{share['slot_train_share']} |")


def table_row(label: str, s: Scenario, seeds: int) -> tuple[str, float]:
    sm = summary(over_seeds(s, seeds))
    r, x = sm["median"], sm["median"].shares
    lost = 1 - x["train"]
    mark = "**" if lost < 0.05 else ""
    return (f"| {label} | {sm['wall'] / 60:.1f} | {mark}{lost:.1%}{mark} | {x['startup']:.1%} | "
            f"{x['epoch']:.1%} | {x['eval']:.1%} | {x['driver']:.1%} | "
            f"{x['idle'] + x['packing']:.1%} | {r.stopped} | {r.driver_busy_s / r.wall_s:.0%} |",
            lost)


def cluster(s: Scenario, seeds: int) -> None:
    header = ("wall (min) | GPU time lost | start-up | per-epoch | eval | driver | idle (tail) "
              "| ASHA-stopped | driver busy |")
    print(f"\n## {s.trials} trials on {s.devices} GPUs ({s.trials_per_device} per GPU)\n")
    if s.driver_trial_s == 0 and s.driver_result_s == 0:
        print("The driver's own cost per trial and per result is a PLACEHOLDER (0 here): "
              "measure it with the real Tuner and fill in scale_inputs.json.\n")
    print(f"| setting (cumulative) | {header}\n|---" + " | ---:" * 9 + " |")
    settings: dict = {}
    for label, more in LADDER:
        settings |= more
        print(table_row(label, what_if(s, **settings), seeds)[0])
    print("\nWith the first four changes, by training per trial, trials and packing:\n\n"
          f"| training × | trials | per GPU | {header}\n|" + " ---: |" * 12)
    below = []
    for train_x, trials_x, k in itertools.product((1, 4, 16, 64), (1, 4), (2, 1)):
        x = what_if(s, tpe=True, report_every=10, overlap=True, train_x=train_x,
                    trials_x=trials_x, per_gpu=k)
        text, lost = table_row(f"{train_x} | {x.trials} | {k}", x, seeds)
        print(text)
        below += [(train_x, x.trials, k)] if lost < 0.05 else []
    if below:
        t, n, k = min(below)
        full = t * s.epochs * s.epoch_s
        capped = full > (s.max_train_s or math.inf)
        print(f"\n→ below 5% lost: {len(below)} settings; the least training per trial: {t}× "
              f"the gpu preset's ({min(full, s.max_train_s or math.inf) / 60:.0f} min of "
              f"training for a trial that runs to its budget), {n} trials, {k} per GPU."
              + (" Every trial then stops on its time budget: equal lengths leave no tail"
                 + (", but ASHA saves little." if s.asha_grace else ".") if capped else ""))
    else:
        print("\n→ no setting here loses less than 5%.")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=Path, default=INPUTS)
    p.add_argument("--seeds", type=int, default=200, help="ASHA draws per measured study")
    p.add_argument("--cluster-seeds", type=int, default=3, help="ASHA draws per cluster row")
    p.add_argument("--cluster", default="gpu-64", help="the scenario of the what-ifs")
    a = p.parse_args(argv)
    scenarios = load_inputs(a.inputs)
    print(f"# Scale model — {a.inputs.name}\n")
    validate(scenarios, a.seeds)
    cluster(scenarios[a.cluster][0], a.cluster_seeds)


if __name__ == "__main__":
    main()

"""Sample digits on command and store them as ``samples.npz`` (what evaluation and analysis read).

    images, labels = generate(ema, sched, digits=range(10), n_per_digit=10, guidance=2.0)
    save_samples(run_dir / "samples.npz", images, labels, config=cfg.to_dict())

A style-conditioned model also takes a style in standard scores (see ``style.py``)::

    images, labels = generate(ema, sched, style={"slant": 1.5, "thickness": -1.0})
    columns, labels = style_sweep(ema, sched, "slant", [-2, -1, 0, 1, 2])  # same noise per level

From the command line, digits on command from a trained trial (its EMA weights)::

    python -m trainables.sample runs/<study>/trials/<id> --digits 0-9 -n 10 --out digits.png
    python -m trainables.sample runs/single/checkpoint.pt --digits 1,4,7 --guidance 3 \\
        --npz digits.npz --style slant=1.5,thickness=-1

Bad input is one line on stderr (``error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from trainables import artefacts, precision
from trainables.config import SampleConfig
from trainables.data import NUM_CLASSES
from trainables.diffusion import Schedule, sample
from trainables.errors import squeeze
from trainables.style import STYLE_NAMES, style_tensor
from trainables.unet import UNet

# Most images per U-Net call when sampling on a CPU. There a forward of 2B images costs more
# than two of B (caches): per image, d3 w16 took 0.8 ms at 50-200 images and 1.5 ms at 500-1000;
# d4 w64 11 ms at 50 and 26 ms at 1000 (2-core EPYC, benchmarks/RESULTS.md "Sampling"). A GPU
# takes the whole batch, conditional and unconditional halves in one call.
CPU_FORWARD_BATCH = 64


def forward_batch(device: torch.device) -> int | None:
    return CPU_FORWARD_BATCH if device.type == "cpu" else None


@torch.no_grad()
def generate(model: UNet, sched: Schedule, digits: Iterable[int] = range(10),
             n_per_digit: int = 10, guidance: float = 2.0, sampler: str = "ddim",
             steps: int | None = 25, eta: float = 1.0, seed: int = 0, batch_size: int = 500,
             return_trajectory: bool = False,
             style: Mapping[str, float | Sequence[float] | torch.Tensor] | None = None,
             amp: bool | None = False):
    """`n_per_digit` images of each requested digit, grouped by digit.

    `amp`: the U-Net's calls under bf16 autocast (the sampler's arithmetic stays fp32); None:
    where it pays on the model's device (`SampleConfig.amp`, trainables/precision.py).

    `style` (style-on models only) gives standard scores of slant and thickness, one value for
    all images or one per image (N = len(digits) · n_per_digit); an attribute left out is at
    the training mean. Without it a style-on model samples any style of the digit.

    Returns (images (N, 1, 28, 28) float in [-1, 1] on the CPU, labels (N,)), plus the list of
    intermediate batches when `return_trajectory`. A fixed `seed` gives every model the same
    starting noise, so trials are compared on equal terms.
    """
    digits = list(digits)
    for d in digits:
        if not 0 <= d < model.cfg.num_classes:
            raise ValueError(f"digit {d} is outside 0..{model.cfg.num_classes - 1}")
    device = next(model.parameters()).device
    labels = torch.tensor(digits).repeat_interleave(n_per_digit)
    if style is not None and not model.cfg.style_dim:
        raise ValueError("style requested from a model trained without style conditioning "
                         "(style_dim=0)")
    styles = None if style is None else style_tensor(style, len(labels)).to(device)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    images, trajectories = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision.resolve(amp, device))
    for start in range(0, len(labels), batch_size):
        with autocast:
            out = sample(model, sched, labels[start : start + batch_size].to(device),
                         null_label=model.cfg.null_label, guidance=guidance, sampler=sampler,
                         steps=steps, eta=eta, generator=g, max_batch=forward_batch(device),
                         image_shape=(model.cfg.in_channels, model.cfg.image_size,
                                      model.cfg.image_size),
                         return_trajectory=return_trajectory,
                         style=None if styles is None else styles[start : start + batch_size])
        if return_trajectory:
            out, traj = out
            trajectories.append(torch.stack(traj))  # (S+1, b, 1, 28, 28)
        images.append(out.cpu())
    model.train(was_training)
    images = torch.cat(images)
    if return_trajectory:
        return images, labels, list(torch.cat(trajectories, dim=1))
    return images, labels


@torch.no_grad()
def style_sweep(model: UNet, sched: Schedule, attribute: str, levels: Sequence[float],
                digits: Iterable[int] = range(10), n_per_digit: int = 1, **kwargs):
    """One batch per requested level of `attribute` (a standard score; the other attribute at
    its mean), every level from the same starting noise, so only the style differs.

    Returns (images (L, N, 1, 28, 28), labels (N,)); `kwargs` go to `generate`.
    """
    if attribute not in STYLE_NAMES:
        raise ValueError(f"unknown style attribute {attribute!r}; use {', '.join(STYLE_NAMES)}")
    if len(levels) == 0:
        raise ValueError("style_sweep needs at least one level")
    digits = list(digits)
    columns = []
    for level in levels:
        images, labels = generate(model, sched, digits, n_per_digit,
                                  style={attribute: float(level)}, **kwargs)
        columns.append(images)
    return torch.stack(columns), labels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images → uint8 0..255 (N, 28, 28), as MNIST stores them."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.squeeze(1).numpy()


def save_samples(path: Path, images: torch.Tensor, labels: torch.Tensor, config: dict,
                 **extra: np.ndarray) -> Path:
    """Write images (uint8), labels and the generating config (JSON) to an .npz file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=to_uint8(images), labels=labels.numpy(),
                        config=np.array(json.dumps(config)), **extra)
    return path


def load_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images float [-1, 1] (N, 1, 28, 28), labels, config) from a samples.npz."""
    with np.load(path, allow_pickle=False) as f:
        images = torch.from_numpy(f["images"].astype(np.float32)).unsqueeze(1) / 127.5 - 1
        return images, torch.from_numpy(f["labels"]).long(), json.loads(str(f["config"]))


# ----------------------------------------------------------------------------- command line



class UsageError(ValueError):
    """Bad command-line input; the message is one line naming the value and the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line too, not usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_digits(text: str) -> list[int]:
    """'0-9' → [0..9], '3' → [3], '1,4,7' → [1, 4, 7]; ranges and lists combine ('0-2,7')."""
    digits: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use digits and ranges such as 0-9, 3 or 1,4,7") from None
        if not 0 <= a <= b < NUM_CLASSES:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a digit or an increasing range in 0-9")
        for d in range(a, b + 1):
            if d in digits:
                raise argparse.ArgumentTypeError(f"{text!r} lists digit {d} twice")
            digits.append(d)
    return digits


def parse_style(text: str) -> dict[str, float]:
    """'slant=1.5,thickness=-1' → {'slant': 1.5, 'thickness': -1.0} (standard scores)."""
    style: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in STYLE_NAMES or name in style:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give each of {', '.join(STYLE_NAMES)} at most once as NAME=SCORE, "
                f"e.g. slant=1.5,thickness=-1")
        try:
            style[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None
        if not math.isfinite(style[name]):
            raise argparse.ArgumentTypeError(f"{text!r}: {name} must be finite")
    return style


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="python -m trainables.sample", formatter_class=argparse.RawTextHelpFormatter,
                description="Draw digits on command from a trained model's EMA weights.")
    p.add_argument("source", type=Path, metavar="TRIAL_DIR_OR_CHECKPOINT",
                   help="a study trial (runs/<study>/trials/<id>), a run directory of\n"
                        "python -m trainables.train, or a checkpoint.pt file")
    p.add_argument("--digits", type=parse_digits, default=list(range(NUM_CLASSES)),
                   help="which digits, e.g. 0-9 (default), 3, 1,4,7 or 0-2,7")
    p.add_argument("-n", "--per-digit", type=positive_int, default=10, metavar="N",
                   help="images of each digit (default 10)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance w, eps = (1+w) eps_cond - w eps_uncond\n"
                        "(0: conditional only). Default: the trial's tuned w, from its\n"
                        f"{artefacts.OUTCOME} (metrics.guidance) if the directory has one, else\n"
                        "the checkpoint config's sample.guidance")
    p.add_argument("--sampler", choices=("ddim", "ddpm"),
                   help="default: the checkpoint config's (the study evaluates with ddim)")
    p.add_argument("--steps", type=positive_int,
                   help="DDIM steps, at most the model's T (default: the checkpoint config's,\n"
                        "capped at T); DDPM always takes T")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the starting noise: the same seed, the same images (default 0)")
    p.add_argument("--style", type=parse_style, metavar="slant=Z,thickness=Z",
                   help="style-conditioned models only: standard scores of slant (+ leans\n"
                        "right) and stroke thickness; one left out is at the training mean.\n"
                        "Without it a style model draws any style of the digit")
    p.add_argument("--out", type=Path, metavar="F.png",
                   help="write a digits x samples grid as a PNG")
    p.add_argument("--npz", type=Path, metavar="F.npz",
                   help="write images (uint8, N x 28 x 28), labels (N,) and the config used")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)")
    args = p.parse_args(argv)
    if args.out is None and args.npz is None:
        p.error("nothing to write: pass --out F.png and/or --npz F.npz")
    if args.out is not None and args.out.suffix.lower() != ".png":
        p.error(f"--out {args.out}: the grid is written as PNG, name it *.png")
    if args.npz is not None and args.npz.suffix != ".npz":
        p.error(f"--npz {args.npz}: name it *.npz")
    return args


def recorded_guidance(trial_dir: Path) -> float | None:
    """The guidance w a study trial was evaluated with (its outcome.json), if it records one."""
    path = trial_dir / artefacts.OUTCOME
    if not path.is_file():
        return None
    try:
        w = json.loads(path.read_text()).get("metrics", {}).get("guidance")
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"{path} is unreadable ({type(e).__name__}): repair it or pass "
                         f"--guidance W") from None
    if w is None:
        return None
    if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
        raise UsageError(f"{path} records guidance {w!r}, not a w >= 0: pass --guidance W")
    return float(w)


def load_trial(source: Path, device: str):
    """(config, EMA model, trial directory) of a trial directory or checkpoint file."""
    from trainables.train_loop import CHECKPOINT_FILE, load_checkpoint  # imports this module

    hint = (f"pass a study trial directory (runs/<study>/trials/<id>), a run directory or a "
            f"{CHECKPOINT_FILE}")
    if not source.exists():
        raise UsageError(f"{source} does not exist: {hint}")
    if source.is_dir() and not (source / CHECKPOINT_FILE).is_file():
        raise UsageError(f"{source} holds no {CHECKPOINT_FILE}: {hint}")
    try:
        cfg, _, ema, _ = load_checkpoint(source, device=device)
    # torch.load reports a file that is not a checkpoint in many ways (a bad zip, a pickle it
    # refuses with weights_only, a missing key); each is the same mistake for the user
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, ValueError, AttributeError,
            pickle.UnpicklingError) as e:
        raise UsageError(f"{source} is not a checkpoint of this project "
                         f"({squeeze(f'{type(e).__name__}: {e}', 120)}): {hint}") from None
    return cfg, ema, source if source.is_dir() else source.parent


def _device(name: str | None) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise UsageError(f"--device {name!r}: use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA device; use cpu")
    return name


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = _device(args.device)
        cfg, ema, trial_dir = load_trial(args.source, device)
        if args.style is not None and not cfg.model.style_dim:
            raise UsageError(f"--style: {args.source} was trained without style conditioning "
                             f"(style_dim=0); drop --style or use a style-on trial")
        w, origin = args.guidance, "w from --guidance"
        if w is None:
            w, origin = recorded_guidance(trial_dir), f"the trial's tuned w ({artefacts.OUTCOME})"
        if w is None:
            w, origin = cfg.sample.guidance, "the checkpoint config's w"
        if not math.isfinite(w):
            raise UsageError(f"--guidance {w}: use a finite w >= 0")
        used = SampleConfig(guidance=w, sampler=args.sampler or cfg.sample.sampler,
                            steps=args.steps or min(cfg.sample.steps, cfg.diffusion.timesteps),
                            eta=cfg.sample.eta, amp=cfg.sample.amp)  # validates w >= 0
        for out in (args.out, args.npz):  # fail before sampling, not after
            if out is not None:
                _writable(out)
        images, labels = generate(ema, Schedule.from_config(cfg.diffusion).to(device),
                                  args.digits, args.per_digit, used.guidance, used.sampler,
                                  used.steps, used.eta, seed=args.seed, style=args.style,
                                  amp=used.amp)
        steps = used.steps if used.sampler == "ddim" else cfg.diffusion.timesteps
        title = (f"w = {w:g}, {used.sampler}-{steps}, seed {args.seed}"
                 + "".join(f", {k} {v:+g}" for k, v in (args.style or {}).items()))
        written = []
        if args.npz is not None:
            generation = {"source": str(args.source), "digits": args.digits,
                          "per_digit": args.per_digit, "seed": args.seed, "style": args.style}
            save_samples(args.npz, images, labels, {**cfg.to_dict(), "sample": asdict(used)},
                         generation=np.array(json.dumps(generation)))
            written.append(str(args.npz))
        if args.out is not None:
            from trainables import figures  # matplotlib only when a figure is drawn

            figures.close(figures.sample_grid(images, labels, max_per_digit=args.per_digit,
                                              title=title, path=args.out))
            written.append(str(args.out))
    except ValueError as e:  # UsageError, and what generate / SampleConfig refuse
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output that cannot be written (permissions, a full disk)
        print(f"error: cannot write {e.filename or 'the output'} ({e.strerror or e}): choose "
              f"another --out / --npz", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(written)}: {len(labels)} images, {title} ({origin})")
    return 0


def _writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder of {path} ({e.strerror}): choose another "
                         f"output path") from None
    if path.is_dir():
        raise UsageError(f"{path} is a directory: give a file name")


if __name__ == "__main__":
    sys.exit(main())

"""The files a trained trial leaves behind (in its final Ray Train checkpoint, then in a study's
``trials/<id>/``), named once. Imports nothing, so study/layout.py and ``analysis/`` can name
them without loading torch."""

import zipfile
from pathlib import Path

CHECKPOINT = "checkpoint.pt"  # model, EMA, optimizer, scheduler, epoch history, config
SAMPLES = "samples.npz"  # the evaluation samples, from the fixed evaluation noise
GRID = "samples.png"  # those samples as a grid
PER_DIGIT = "per_digit.csv"  # the evaluation's scores per digit
OUTCOME = "outcome.json"  # the worker's final metrics and per-epoch history
GUIDANCE = "guidance.csv"  # the guidance search's quality-vs-w curve
PROGRESS = "progress.npz"  # the in-training probe's samples after every epoch


def is_whole_archive(path: Path) -> bool:
    """Whether a checkpoint or .npz (both zip archives) is complete: a truncated or edited one
    fails its CRC check."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False

"""The files a trained trial leaves behind (in its final Ray Train checkpoint, then in a study's
``trials/<id>/``), named once. Imports nothing, so study/layout.py and ``analysis/`` can name
them without loading torch."""

CHECKPOINT = "checkpoint.pt"  # model, EMA, optimizer, scheduler, epoch history, config
SAMPLES = "samples.npz"  # the evaluation samples, from the fixed evaluation noise
GRID = "samples.png"  # those samples as a grid
PER_DIGIT = "per_digit.csv"  # the evaluation's scores per digit
OUTCOME = "outcome.json"  # the worker's final metrics and per-epoch history
GUIDANCE = "guidance.csv"  # the guidance search's quality-vs-w curve
PROGRESS = "progress.npz"  # the in-training probe's samples after every epoch

"""The tools every evaluation needs, loaded in one place: the digit judge, CLIP (or None when
it is disabled) and the real validation digits the samples are compared with.

    tools = EvalTools.load(judge_state, clip_cfg, splits.val)          # in a trial worker
    tools = EvalTools.load(torch.load(judge_file), clip_cfg, data_cfg)  # on the driver
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.clip_score import ClipConfig
from trainables.data import DataConfig, Digits, load_splits
from trainables.judge import Judge


@dataclass(frozen=True)
class EvalTools:
    judge: Judge
    clip: object | None  # trainables.clip_score.ClipScorer; None: CLIP disabled
    real: Digits  # real validation digits

    @classmethod
    def load(cls, judge: dict | Judge, clip: ClipConfig | None, real: Digits | DataConfig,
             device: str = "cpu") -> EvalTools:
        """`judge`: a Judge or its saved state; `clip`: the CLIP config or None; `real`: the
        validation digits, or the data config to load them from. CLIP loads only if enabled
        (open_clip's import alone takes ~2 s) and raises ClipLoadError if it cannot."""
        if isinstance(judge, dict):
            judge = Judge.from_state(judge, device=device)
        if isinstance(real, DataConfig):
            real = load_splits(real).val
        scorer = None
        if clip is not None:
            from trainables.clip_score import ClipScorer

            scorer = ClipScorer.load(clip, device=device)
        return cls(judge, scorer, real)

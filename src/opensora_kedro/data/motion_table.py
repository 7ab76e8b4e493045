"""The VMAF motion score of every clip of the video table, reusing scores of unchanged files."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import pandas as pd

from opensora_kedro.data.cached_stage import run_cached_stage
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal, PerClip
from opensora_kedro.video.motion import MotionConfig, motion_score

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.data.params import MotionParams

logger = logging.getLogger(__name__)


def _score_row(row: dict, config: MotionConfig) -> dict:
    """Score one clip; never raises, so one bad file cannot stop the run."""
    path, num_frames = row["path"], row["num_frames"]
    if num_frames <= 1:
        return {"path": path, "score_vmafmotion": 0.0}  # a still has no motion (libvmaf: 0)
    try:
        return {"path": path, "score_vmafmotion": motion_score(path, config).score}
    except Exception as error:  # noqa: BLE001 - record anything a broken file throws at us
        return {
            "path": path,
            "reason": "motion_failed",
            "detail": f"{type(error).__name__}: {error}",
        }


def score_motion(
    meta: pd.DataFrame,
    params: MotionParams,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, rejected)``: ``path, file_size, file_mtime_ns, score_vmafmotion`` for every
    clip of ``meta``, and the clips whose full decode failed. Clips unchanged since
    ``previous`` (the last scores) keep their score if it was computed the same way
    (``motion_settings``: the variant and libvmaf's edge rule)."""
    # The motion kernel's own config: the feature to reproduce, plus its block size.
    config = MotionConfig(variant=params.variant, edge_rule=params.edge_rule)
    variant = f"{config.variant}, libvmaf {config.edge_rule} edges"
    stage = PerClip(partial(_score_row, config=config))
    return run_cached_stage(meta, stage, "motion", ["score_vmafmotion"], variant, previous,
                            engine, journal)  # fmt: skip

"""The VMAF motion score of every clip of the video table, reusing scores of unchanged files."""

from __future__ import annotations

import logging
from functools import partial

import pandas as pd

from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal, PerClip, run_stage
from opensora_kedro.data.video_table import FILE_KEY, reusable_rows
from opensora_kedro.video.motion import MotionConfig, motion_score

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ["path", *FILE_KEY, "score_vmafmotion", "motion_variant"]


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
    config: MotionConfig,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, rejected)``: ``path, file_size, file_mtime_ns, score_vmafmotion`` for every
    clip of ``meta``, and the clips whose full decode failed. Clips unchanged since
    ``previous`` (the last scores) keep their score if it was computed the same way."""
    variant = f"{config.variant}, libvmaf {config.edge_rule} edges"
    if previous is not None and "motion_variant" in previous:
        previous = previous[previous["motion_variant"] == variant]
    known = reusable_rows(meta[["path", *FILE_KEY]], previous, ["score_vmafmotion"])
    todo = meta[~meta["path"].isin(known["path"])]
    rows = run_stage(
        PerClip(partial(_score_row, config=config)),
        todo[["path", "num_frames", *FILE_KEY]].to_dict("records"),
        engine,
        "motion scores",
        journal,
    )
    failed = pd.DataFrame(
        [row for row in rows if "reason" in row], columns=["path", "reason", "detail"]
    )
    fresh = pd.DataFrame(
        [row for row in rows if "reason" not in row], columns=["path", "score_vmafmotion"]
    )
    fresh = fresh.merge(todo[["path", *FILE_KEY]], on="path")
    scores = pd.concat([known, fresh], ignore_index=True).assign(motion_variant=variant)
    scores = scores[SCORE_COLUMNS]
    logger.info(
        "motion scores: %d computed, %d unchanged, %d failed", len(fresh), len(known), len(failed)
    )
    return scores, failed.assign(stage="motion")[["path", "stage", "reason", "detail"]]

"""Training captions with Open-Sora's fps and motion-score suffix, and the training table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from opensora_kedro.data.aspect import UNLIMITED_FPS_MAX, map_target_fps
from opensora_kedro.hashing import caption_hash


def _fps_text(fps: float) -> str:
    # Whole rates read "24 FPS"; others keep their decimals ("23.976 FPS"), as in Open-Sora.
    return str(int(fps)) if float(fps).is_integer() else f"{fps:g}"


def training_suffix(fps: float | None, motion_score: int | None) -> str:
    """Open-Sora's training suffix from its parts, e.g. ``" 24 FPS, 5 motion score."``.

    The one place that writes it: training captions and, with ``suffix_style: training``,
    inference prompts (:func:`opensora_kedro.sampling.prompts.add_inference_suffix`). A part
    that is ``None`` is left out; no parts give ``""``.
    """
    parts = []
    if fps:
        parts.append(f"{_fps_text(fps)} FPS")
    if motion_score is not None:
        parts.append(f"{motion_score} motion score")
    return " " + ", ".join(parts) + "." if parts else ""


def motion_score_text(score: float) -> int:
    """The integer a motion score is written as in a caption (Open-Sora: ``int(score + 0.5)``)."""
    return int(score + 0.5)


def caption_suffix(fps: float, motion: float | None, fps_max: float | None, vmaf: bool) -> str:
    """The training suffix of one clip (see :func:`training_suffix`).

    The fps part is the fps after reduction to ``fps_max`` (left out for stills and when
    ``fps_max`` is unlimited); the motion part is :func:`motion_score_text` of the score.
    """
    new_fps, _ = map_target_fps(fps, fps_max)
    limited = (fps_max if fps_max is not None else UNLIMITED_FPS_MAX) < 999
    scored = vmaf and motion is not None and not math.isnan(motion)
    return training_suffix(
        new_fps if new_fps != 0 and limited else None,
        motion_score_text(motion) if scored else None,
    )


def typical_motion_score(table: pd.DataFrame) -> int:
    """The motion score most training captions state: what ``motion_score: auto`` prompts with.

    Raises:
        ValueError: the table has no motion scores (``score_vmafmotion``).
    """
    scores = table.get("score_vmafmotion", pd.Series(dtype=float)).dropna()
    if scores.empty:
        raise ValueError(
            "motion_score: auto needs the training table's motion scores (score_vmafmotion); "
            "run data_processing first, or set a number"
        )
    written = scores.map(motion_score_text).value_counts()
    return int(written.index[written.to_numpy() == written.max()].min())


def build_training_table(table: pd.DataFrame, fps_max: float | None, vmaf: bool) -> pd.DataFrame:
    """The training table: ``text`` gets the suffix (the raw caption stays in ``caption``)
    and ``caption_hash`` keys the text the encoders will see."""
    scores = table.get("score_vmafmotion", pd.Series(np.nan, index=table.index))
    suffixes = [
        caption_suffix(fps, motion, fps_max, vmaf)
        for fps, motion in zip(table["fps"], scores, strict=True)
    ]
    out = table.copy()
    out["caption"] = table["text"]
    out["text"] = table["text"].astype(str).str.rstrip() + pd.Series(suffixes, index=table.index)
    out["caption_hash"] = out["text"].map(caption_hash)
    return out

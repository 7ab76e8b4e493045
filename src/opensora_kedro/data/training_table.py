"""Training captions with Open-Sora's fps and motion-score suffix, and the training table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from opensora_kedro.data.aspect import UNLIMITED_FPS_MAX, map_target_fps
from opensora_kedro.data.video_table import caption_hash


def _fps_text(fps: float) -> str:
    # Whole rates read "24 FPS"; others keep their decimals ("23.976 FPS"), as in Open-Sora.
    return str(int(fps)) if float(fps).is_integer() else f"{fps:g}"


def caption_suffix(fps: float, motion: float | None, fps_max: float | None, vmaf: bool) -> str:
    """Open-Sora's training suffix, e.g. ``" 24 FPS, 5 motion score."`` (empty if no parts).

    The fps part is the fps after reduction to ``fps_max`` (left out for stills and when
    ``fps_max`` is unlimited); the motion part is ``int(score + 0.5)``.
    """
    new_fps, _ = map_target_fps(fps, fps_max)
    parts = []
    if new_fps != 0 and (fps_max if fps_max is not None else UNLIMITED_FPS_MAX) < 999:
        parts.append(f"{_fps_text(new_fps)} FPS")
    if vmaf and motion is not None and not math.isnan(motion):
        parts.append(f"{int(motion + 0.5)} motion score")
    return " " + ", ".join(parts) + "." if parts else ""


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

"""Open-Sora 2.0's inference caption suffix (brief §2.4 "Inference suffix").

At inference the prompt gets ``" {fps} FPS."`` and ``" {score} motion score."`` appended, each
as its own sentence. Training captions join the same parts with ``", "`` instead; that separator
mismatch is Open-Sora's and is kept here on purpose, because the released weights were sampled
with exactly this text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import overload

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24
DEFAULT_MOTION_SCORE = 4
_FPS_SUFFIX = re.compile(r"\d+ FPS\.$")


def _end_with_period(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


def _fps_one(text: str, fps: float) -> str:
    text = _end_with_period(text)
    # A prompt that already states its frame rate (e.g. a re-used saved prompt) keeps it.
    if _FPS_SUFFIX.search(text):
        return text
    return f"{text} {fps} FPS."


def _motion_one(text: str, motion_score: int | str) -> str:
    return f"{_end_with_period(text)} {motion_score} motion score."


@overload
def add_fps_info_to_text(text: str, fps: float = ...) -> str: ...
@overload
def add_fps_info_to_text(text: Sequence[str], fps: float = ...) -> list[str]: ...
def add_fps_info_to_text(text: str | Sequence[str], fps: float = DEFAULT_FPS) -> str | list[str]:
    """Append ``" {fps} FPS."`` to a prompt (or to each of a list of prompts).

    The prompt is stripped and given a final ``"."`` first; nothing is appended when it already
    ends with ``"<digits> FPS."``.
    """
    if isinstance(text, str):
        return _fps_one(text, fps)
    return [_fps_one(t, fps) for t in text]


@overload
def add_motion_score_to_text(text: str, motion_score: int | str | None = ...) -> str: ...
@overload
def add_motion_score_to_text(
    text: Sequence[str], motion_score: int | str | None = ...
) -> list[str]: ...
def add_motion_score_to_text(
    text: str | Sequence[str], motion_score: int | str | None = DEFAULT_MOTION_SCORE
) -> str | list[str]:
    """Append ``" {motion_score} motion score."`` to a prompt (or each of a list of prompts).

    The prompt is stripped and given a final ``"."`` first. ``None`` leaves the text as it is.

    Raises:
        ValueError: ``"dynamic"`` (Open-Sora asks GPT-4o for a score; not supported here) or a
            score that is not an integer.
    """
    if motion_score is None:
        return text if isinstance(text, str) else list(text)
    if isinstance(motion_score, str):
        if not motion_score.strip().isdigit():
            raise ValueError(
                f"motion score must be an integer, got {motion_score!r} "
                "('dynamic' needs a prompt-refinement model, which is not supported)"
            )
        motion_score = int(motion_score)
    if isinstance(text, str):
        return _motion_one(text, motion_score)
    return [_motion_one(t, motion_score) for t in text]


@overload
def add_inference_suffix(
    text: str, fps: float = ..., motion_score: int | str | None = ...
) -> str: ...
@overload
def add_inference_suffix(
    text: Sequence[str], fps: float = ..., motion_score: int | str | None = ...
) -> list[str]: ...
def add_inference_suffix(
    text: str | Sequence[str],
    fps: float = DEFAULT_FPS,
    motion_score: int | str | None = DEFAULT_MOTION_SCORE,
) -> str | list[str]:
    """FPS then motion score, in Open-Sora's order: ``"raining, sea. 24 FPS. 4 motion score."``."""
    return add_motion_score_to_text(add_fps_info_to_text(text, fps), motion_score)

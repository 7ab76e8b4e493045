"""The fps and motion-score suffix of inference prompts, in one of two styles.

- ``opensora`` (Open-Sora 2.0's inference helpers, brief §2.4): ``" {fps} FPS."`` and
  ``" {score} motion score."`` appended, each as its own sentence. Open-Sora's training captions
  join the same parts with ``", "`` instead; that mismatch is Open-Sora's and is kept for its
  released weights, which were sampled with exactly this text.
- ``training``: the suffix the training captions carry (``" 24 FPS, 5 motion score."``), built
  by the same function as the training table's
  (:func:`opensora_kedro.data.training_table.training_suffix`): a model trained here reads at
  inference the text form it was trained on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Literal, get_args, overload

import pandas as pd

from opensora_kedro.data.training_table import training_suffix, typical_motion_score

logger = logging.getLogger(__name__)

DEFAULT_FPS = 24
DEFAULT_MOTION_SCORE = 4
SuffixStyle = Literal["opensora", "training"]
SUFFIX_STYLES: tuple[str, ...] = get_args(SuffixStyle)
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


def _motion_int(motion_score: int | str | None) -> int | None:
    """The score as an integer (``None`` stays ``None``); rejects ``dynamic`` and non-integers."""
    if motion_score is None or isinstance(motion_score, int):
        return motion_score
    if not motion_score.strip().isdigit():
        raise ValueError(
            f"motion score must be an integer, got {motion_score!r} "
            "('dynamic' needs a prompt-refinement model, which is not supported; "
            "'auto' is resolved from the training table before generation)"
        )
    return int(motion_score)


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
    motion_score = _motion_int(motion_score)
    if motion_score is None:
        return text if isinstance(text, str) else list(text)
    if isinstance(text, str):
        return _motion_one(text, motion_score)
    return [_motion_one(t, motion_score) for t in text]


@overload
def add_inference_suffix(
    text: str, fps: float = ..., motion_score: int | str | None = ..., style: SuffixStyle = ...
) -> str: ...
@overload
def add_inference_suffix(
    text: Sequence[str],
    fps: float = ...,
    motion_score: int | str | None = ...,
    style: SuffixStyle = ...,
) -> list[str]: ...
def add_inference_suffix(
    text: str | Sequence[str],
    fps: float = DEFAULT_FPS,
    motion_score: int | str | None = DEFAULT_MOTION_SCORE,
    style: SuffixStyle = "opensora",
) -> str | list[str]:
    """The prompt(s) with the fps and motion-score suffix in ``style`` (see the module doc).

    ``opensora``: ``"raining, sea. 24 FPS. 4 motion score."``; ``training``:
    ``"raining, sea 24 FPS, 4 motion score."`` (the prompt's own text kept as written).
    """
    if style == "opensora":
        return add_motion_score_to_text(add_fps_info_to_text(text, fps), motion_score)
    if style != "training":
        raise ValueError(f"unknown suffix style {style!r}; known: {SUFFIX_STYLES}")
    suffix = training_suffix(fps, _motion_int(motion_score))
    if isinstance(text, str):
        return text.strip() + suffix
    return [t.strip() + suffix for t in text]


def resolve_motion_score(
    motion_score: int | str | None, training_table: pd.DataFrame | None
) -> int | str | None:
    """``motion_score`` with ``"auto"`` replaced by the score most training captions state.

    Raises:
        ValueError: ``"auto"`` without a training table that has motion scores.
    """
    if motion_score != "auto":
        return motion_score
    if training_table is None or training_table.empty:
        raise ValueError(
            "inference.motion_score is 'auto' but there is no training table to read it from: "
            "run data_processing first, or set a number"
        )
    score = typical_motion_score(training_table)
    logger.info("motion_score auto: %d, the score most training captions state", score)
    return score

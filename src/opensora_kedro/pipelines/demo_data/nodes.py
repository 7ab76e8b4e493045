"""Nodes of the ``demo_data`` pipeline: render the embedded default's captioned clips."""

from __future__ import annotations

import logging

import pandas as pd

from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.video.codec import encode_image, encode_mp4
from opensora_kedro.video.render import (
    ClipSpec,
    MultiShotSpec,
    plan_demo_clips,
    plan_multishot_videos,
    render_frames,
    render_shot_sequence,
)

logger = logging.getLogger(__name__)


def plan_clips(params: DemoDataParams) -> list[ClipSpec | MultiShotSpec]:
    """The clips to render, chosen deterministically from ``params`` (parameters_demo_data.yml):
    captioned clips, then uncaptioned multi-shot videos."""
    return [*plan_demo_clips(params), *plan_multishot_videos(params)]


def render_clips(
    specs: list[ClipSpec | MultiShotSpec], crf: int
) -> tuple[dict[str, bytes], pd.DataFrame]:
    """Render and encode every clip; returns the files and the ``path,text`` captions table
    (multi-shot videos have no caption, as uncut footage)."""
    files, captions = {}, []
    for spec in specs:
        if isinstance(spec, MultiShotSpec):
            files[f"{spec.name}{spec.suffix}"] = encode_mp4(
                render_shot_sequence(list(spec.shots)), spec.fps, crf=crf
            )
            continue
        frames = render_frames(spec)
        if spec.suffix == ".mp4":
            content = encode_mp4(frames, spec.fps, crf=crf)
        else:
            content = encode_image(frames[0], spec.suffix)
        name = f"{spec.name}{spec.suffix}"
        files[name] = content
        captions.append({"path": name, "text": spec.caption})
    logger.info("rendered %d demo clips", len(files))
    return files, pd.DataFrame(captions, columns=["path", "text"])

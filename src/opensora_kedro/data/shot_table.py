"""The clip table: each usable video's shots as clip rows, reusing the shots of unchanged videos.

A video that is one shot within the length rules is its own clip (same file); a longer or
multi-shot video becomes one cut file per kept shot; shots the rules drop are recorded as
rejected with their frames. Per video the splitter's result is kept in the ``video_shots``
table (keyed by file and settings), so a re-run cuts only new or changed videos.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from opensora_kedro.data.cached_stage import settings_fingerprint
from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal, run_stage
from opensora_kedro.data.scan import FILE_KEY, META_COLUMNS, REJECT_COLUMNS, reusable_rows
from opensora_kedro.video.shots import SHOT_SETTINGS, ShotSplitter

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.data.params import ShotParams

logger = logging.getLogger(__name__)

SHOT_COLUMNS = ["source", "start_frame", "end_frame", "start_s", "end_s"]
CLIP_COLUMNS = [*META_COLUMNS, *SHOT_COLUMNS]
RESULT_COLUMNS = ["path", *FILE_KEY, "shot_settings", "shots"]


def whole_clips(meta: pd.DataFrame) -> pd.DataFrame:
    """Every video as its own one clip (shot splitting off)."""
    seconds = meta["num_frames"] / meta["fps"].where(meta["fps"] > 0)
    return meta.assign(
        source=meta["path"], start_frame=0, end_frame=meta["num_frames"], start_s=0.0,
        end_s=seconds.fillna(0.0),
    )[CLIP_COLUMNS]  # fmt: skip


def split_videos(
    meta: pd.DataFrame,
    root: str | os.PathLike,
    params: ShotParams,
    output_dir: str | os.PathLike,
    engine: EngineSettings = LOCAL_ENGINE,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(video_shots, clips, rejected)`` for the videos of ``meta`` (under ``root``).

    Cut shots go to ``output_dir/<video path without suffix>/shot-NNN.mp4``. A cut shot keeps
    its video's caption only with ``params.inherit_caption`` (a whole video's caption rarely
    describes one of its shots: by default shots go to the captioner).
    """
    fingerprint = settings_fingerprint(params, SHOT_SETTINGS)
    output_dir = Path(output_dir)
    if previous is not None and not previous.empty and "shot_settings" in previous:
        previous = previous[previous["shot_settings"] == fingerprint]
        previous = previous[previous["shots"].map(lambda r: _reusable(r, output_dir))]
    known = reusable_rows(meta[["path", *FILE_KEY]], previous, ["shot_settings", "shots"])
    todo = meta[~meta["path"].isin(known["path"])]
    rows = [
        {**row, "clip_stem": Path(row["path"]).relative_to(root).with_suffix("").as_posix()}
        for row in todo[["path", "num_frames", "fps", *FILE_KEY]].to_dict("records")
    ]
    splitter = ShotSplitter(params, output_dir)
    results = run_stage(splitter, rows, engine, "shots", journal)
    fresh = todo[["path", *FILE_KEY]].assign(
        shot_settings=fingerprint, shots=[_stored(r, output_dir) for r in results]
    )
    video_shots = pd.concat([known, fresh], ignore_index=True)[RESULT_COLUMNS]
    clips, rejected = _expand(meta, video_shots, output_dir, params.inherit_caption)
    logger.info(
        "shots: %d video(s) split (%d unchanged since the last run) into %d clip(s); %d "
        "rejected", len(todo), len(known), len(clips), len(rejected),
    )  # fmt: skip
    return video_shots, clips, rejected


def _stored(result: dict, output_dir: Path) -> str:
    """A splitter result as stored: cut clips relative to ``output_dir`` (so the table
    survives a moved project), a video that is its own clip as null."""
    for shot in result.get("shots", []):
        clip = Path(shot["clip_path"])
        shot["clip_path"] = None if clip.as_posix() == result["path"] else (
            clip.relative_to(output_dir).as_posix())  # fmt: skip
    return json.dumps(result)


def _loaded(stored: str, path: str, output_dir: Path) -> dict:
    result = json.loads(stored)
    for shot in result.get("shots", []):
        clip = shot["clip_path"]
        shot["clip_path"] = path if clip is None else str(output_dir / clip)
    return result


def _reusable(stored: str, output_dir: Path) -> bool:
    """A stored result that needs no new run: a success whose cut files are all there (a
    failed video is tried again, as the other stages do)."""
    result = json.loads(stored)
    shots = result.get("shots", [])
    clips_there = all(
        s["clip_path"] is None or (output_dir / s["clip_path"]).exists() for s in shots
    )
    return "reason" not in result and clips_there


def _expand(
    meta: pd.DataFrame, video_shots: pd.DataFrame, output_dir: Path, inherit_caption: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clip rows and rejected rows from each video's splitter result."""
    results = {
        path: _loaded(stored, path, output_dir)
        for path, stored in zip(video_shots["path"], video_shots["shots"], strict=True)
    }
    clips, rejected = [], []
    for video in meta.to_dict("records"):
        result = results[video["path"]]
        if "reason" in result:
            rejected.append({**result, "stage": "shots"})
            continue
        for drop in result["dropped"]:
            detail = f"frames {drop['start_frame']}-{drop['end_frame'] - 1}: {drop['detail']}"
            rejected.append({"path": video["path"], "stage": "shots", "reason": drop["reason"],
                             "detail": detail})  # fmt: skip
        for shot in result["shots"]:
            clips.append(_clip_row(video, shot, inherit_caption))
    clip_table = pd.DataFrame(clips, columns=CLIP_COLUMNS)
    clip_table = clip_table.astype({"num_frames": "int64", "file_size": "int64",
                                    "file_mtime_ns": "int64"})  # fmt: skip
    return clip_table, pd.DataFrame(rejected, columns=REJECT_COLUMNS)


def _clip_row(video: dict, shot: dict, inherit_caption: bool) -> dict:
    whole = shot["clip_path"] == video["path"]
    row = {**video, "path": shot["clip_path"], "source": video["path"],
           **{k: shot[k] for k in ("start_frame", "end_frame", "start_s", "end_s")}}  # fmt: skip
    if whole:
        return row
    stat = os.stat(shot["clip_path"])
    row.update(num_frames=shot["end_frame"] - shot["start_frame"], file_size=stat.st_size,
               file_mtime_ns=stat.st_mtime_ns)  # fmt: skip
    height, width = row["height"] - row["height"] % 2, row["width"] - row["width"] % 2
    row.update(height=height, width=width, aspect_ratio=height / width, resolution=height * width)
    if not inherit_caption:
        row.update(text=None, caption_hash=None)
    return row

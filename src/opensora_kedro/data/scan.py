"""The video table: Open-Sora's per-clip metadata, and a record of every unusable file."""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import pandas as pd

from opensora_kedro.data.engine import LOCAL_ENGINE, EngineSettings, Journal, PerClip, run_stage
from opensora_kedro.data.folder import VideoFolder
from opensora_kedro.hashing import caption_hash
from opensora_kedro.video.probe import ProbeError, probe_video

logger = logging.getLogger(__name__)

PROBE_COLUMNS = ["num_frames", "height", "width", "fps"]
# A file whose size and modification time are unchanged is not probed again.
FILE_KEY = ["file_size", "file_mtime_ns"]
META_COLUMNS = [
    "path", "text", "num_frames", "height", "width", "fps", "aspect_ratio", "resolution",
    "caption_hash", *FILE_KEY,
]  # fmt: skip
REJECT_COLUMNS = ["path", "stage", "reason", "detail"]


def _probe_row(row: dict, check_frames: int) -> dict:
    """Probe one file; never raises, so one bad file cannot stop a scan."""
    path = row["path"]
    try:
        info = probe_video(path, check_frames=check_frames)
    except ProbeError as error:
        return {"path": path, "reason": error.reason, "detail": str(error)}
    except Exception as error:  # noqa: BLE001 - record anything a broken file throws at us
        return {
            "path": path,
            "reason": "probe_failed",
            "detail": f"{type(error).__name__}: {error}",
        }
    return {
        "path": path,
        "num_frames": info.num_frames,
        "height": info.height,
        "width": info.width,
        "fps": info.fps,
    }


def file_keys(paths: list[str]) -> pd.DataFrame:
    """Size and modification time of each path: what makes a stored result still valid."""
    stats = [os.stat(path) for path in paths]
    return pd.DataFrame(
        {"path": paths, "file_size": [st.st_size for st in stats],
         "file_mtime_ns": [st.st_mtime_ns for st in stats]}
    )  # fmt: skip


def reusable_rows(keys: pd.DataFrame, previous: pd.DataFrame | None, columns: list[str]):
    """Rows of ``previous`` (by path) whose file is unchanged and that hold ``columns``."""
    needed = {"path", *FILE_KEY, *columns}
    if previous is None or previous.empty or not needed <= set(previous.columns):
        return pd.DataFrame(columns=sorted(needed))
    previous = previous.drop_duplicates("path")[list(needed)]
    return keys.merge(previous, on=["path", *FILE_KEY], how="inner")


def _caption_lookup(folder: VideoFolder, captions: pd.DataFrame) -> dict[str, str]:
    """Captions keyed by path relative to the folder (captions may give either form)."""
    lookup: dict[str, str] = {}
    for path, text in zip(captions["path"].astype(str), captions["text"], strict=True):
        candidate = Path(path)
        if candidate.is_absolute() and candidate.is_relative_to(folder.root):
            path = candidate.relative_to(folder.root).as_posix()
        if path in lookup:
            logger.warning("caption for %s given twice; keeping the first", path)
            continue
        lookup[path] = "" if pd.isna(text) else str(text)
    return lookup


def build_video_table(
    folder: VideoFolder,
    captions: pd.DataFrame,
    engine: EngineSettings = LOCAL_ENGINE,
    check_frames: int = 2,
    previous: pd.DataFrame | None = None,
    journal: Journal | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every file of ``folder`` and join the captions.

    Returns ``(video_meta, rejected)``: usable files with Open-Sora's columns, and
    every other file (and every caption whose file is missing) with the reason. A file
    without a caption is kept with ``text`` None: the captioning stage captions it, or
    rejects it as ``no_caption``. Files unchanged since ``previous`` (the last video_meta)
    are not probed again.
    """
    missing = {"path", "text"} - set(captions.columns)
    if missing:
        raise ValueError(f"captions table lacks columns {sorted(missing)}; it needs path,text")
    texts = _caption_lookup(folder, captions)
    listed = set(folder.files)
    rejected = [
        {
            "path": str(folder.path(rel)),
            "reason": "missing_file",
            "detail": "captioned but not on disk",
        }
        for rel in texts
        if rel not in listed
    ]
    keys = file_keys([str(folder.path(rel)) for rel in folder.files])
    known = reusable_rows(keys, previous, PROBE_COLUMNS).set_index("path")
    todo = [path for path in keys["path"] if path not in known.index]
    stage = PerClip(partial(_probe_row, check_frames=check_frames))
    todo_rows = keys[keys["path"].isin(todo)].to_dict("records")
    rows = run_stage(stage, todo_rows, engine, "scanning videos", journal)
    probed = dict(zip(todo, rows, strict=True))
    usable = []
    for rel, key in zip(folder.files, keys.itertuples(index=False), strict=True):
        row = probed.get(key.path) or {"path": key.path, **known.loc[key.path, PROBE_COLUMNS]}
        if "reason" in row:
            rejected.append(row)
            continue
        text = texts.get(rel)
        hashed = caption_hash(text) if text is not None else None
        usable.append({**row, "text": text, "caption_hash": hashed, **key._asdict()})
    meta = pd.DataFrame(usable, columns=META_COLUMNS).astype(
        {"num_frames": "int64", "height": "int64", "width": "int64", "fps": "float64"}
    )
    meta["aspect_ratio"] = meta["height"] / meta["width"]
    meta["resolution"] = meta["height"] * meta["width"]
    rejected_table = pd.DataFrame(rejected, columns=REJECT_COLUMNS).assign(stage="scan")
    logger.info(
        "scanned %d files (%d probed, %d unchanged since the last run): %d usable, %d rejected",
        len(folder.files), len(todo), len(folder.files) - len(todo), len(meta), len(rejected),
    )  # fmt: skip
    return meta, rejected_table

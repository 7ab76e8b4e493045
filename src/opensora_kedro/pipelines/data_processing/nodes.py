"""Nodes of the ``data_processing`` pipeline."""

from __future__ import annotations

import os

import pandas as pd

from opensora_kedro.data.video_table import build_video_table
from opensora_kedro.datasets.video_folder import VideoFolder


def scan_videos(
    folder: VideoFolder, captions: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Probe every raw file: ``video_meta``, ``rejected_videos`` and scan metrics for MLflow."""
    workers = params["workers"] or os.cpu_count() or 1
    meta, rejected = build_video_table(folder, captions, workers, params["check_frames"])
    metrics = {
        "scan_files": len(folder.files),
        "scan_usable": len(meta),
        "scan_rejected": len(rejected),
    }
    return meta, rejected, {name: {"value": value, "step": 0} for name, value in metrics.items()}

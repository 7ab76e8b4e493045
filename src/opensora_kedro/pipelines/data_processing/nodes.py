"""Nodes of the ``data_processing`` pipeline: thin adapters over ``opensora_kedro.data``."""

from __future__ import annotations

import os

import pandas as pd

from opensora_kedro.data.bucket import BucketConfig, assign_buckets
from opensora_kedro.data.bucket_report import bucket_report, plot_bucket_report
from opensora_kedro.data.dedup import find_duplicates, hash_videos
from opensora_kedro.data.filtering import FilterRules, filter_table
from opensora_kedro.data.motion_table import score_motion
from opensora_kedro.data.training_table import build_training_table
from opensora_kedro.data.video_folder import VideoFolder
from opensora_kedro.data.video_table import REJECT_COLUMNS, build_video_table
from opensora_kedro.video.motion import MotionConfig


def _workers(requested: int | None) -> int:
    return requested or os.cpu_count() or 1


def _metrics(**values: float) -> dict:
    """Values in the form MlflowMetricsHistoryDataset logs."""
    return {name: {"value": float(value), "step": 0} for name, value in values.items()}


def scan_videos(
    folder: VideoFolder, captions: pd.DataFrame, previous: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every raw file (unchanged files keep their last result): video table and rejects."""
    return build_video_table(
        folder, captions, _workers(params["workers"]), params["check_frames"], previous
    )


def hash_clips(
    meta: pd.DataFrame, previous: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame hashes of every clip (unchanged clips keep their last ones) and the failures."""
    if not params["enabled"]:
        return pd.DataFrame(columns=["path"]), pd.DataFrame(columns=REJECT_COLUMNS)
    return hash_videos(meta, params["frames"], _workers(params["workers"]), previous)


def drop_duplicates(
    meta: pd.DataFrame, hashes: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The clips that are no near-duplicate of another (nor failed hashing), and the rest."""
    if not params["enabled"]:
        return meta, pd.DataFrame(columns=REJECT_COLUMNS)
    duplicates = find_duplicates(hashes, params["max_distance"])
    kept = meta["path"].isin(hashes["path"]) & ~meta["path"].isin(duplicates["path"])
    return meta[kept].reset_index(drop=True), duplicates


def score_videos(
    meta: pd.DataFrame, previous: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """VMAF motion score of every clip (unchanged clips keep their last score)."""
    config = MotionConfig(variant=params["variant"], edge_rule=params["edge_rule"])
    return score_motion(meta, config, _workers(params["workers"]), previous)


def filter_videos(
    meta: pd.DataFrame, scores: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the scores and apply the thresholds of ``data_processing.filter``."""
    table = meta.merge(scores[["path", "score_vmafmotion"]], on="path", how="inner")
    return filter_table(table, FilterRules(**params))


def make_training_table(table: pd.DataFrame, dataset: dict) -> pd.DataFrame:
    """Training captions (fps / motion suffix per the stage's dataset settings)."""
    return build_training_table(table, dataset["fps_max"], dataset["vmaf"])


def report_buckets(table: pd.DataFrame, bucket_config: dict, dataset: dict, seed: int):
    """How the training table falls into the stage's buckets (epoch 0): table, plot, metrics."""
    assignment = assign_buckets(
        table, BucketConfig.from_dict(bucket_config), seed=seed, epoch=0, fps_max=dataset["fps_max"]
    )
    report = bucket_report(assignment)
    assigned = report["skip_reason"].isna()
    metrics = _metrics(
        clips=len(table),
        bucketed_clips=report.loc[assigned, "samples"].sum(),
        full_batches=report.loc[assigned, "batches"].sum(),
        buckets_used=int(assigned.sum()),
    )
    return report, plot_bucket_report(report), metrics


def collect_rejected(*tables: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Every clip left out, from every stage, with the rule that left it out."""
    rejected = pd.concat([t.reindex(columns=REJECT_COLUMNS) for t in tables], ignore_index=True)
    counts = rejected.groupby("stage").size()
    return rejected, _metrics(**{f"rejected_{stage}": n for stage, n in counts.items()})

"""Bucketed clip batches of a training table: the data side of every training job."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from opensora_kedro.data.bucket import assign_buckets
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.clip_dataset import ClipDataset, collate_clips
from opensora_kedro.data.sampler import SampleKey, VariableShapeBatchSampler


def split_holdout(table: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, held_out)`` by a hash of each file name: stable when rows are added or
    reordered and when the data folder moves."""
    if fraction <= 0:
        return table.reset_index(drop=True), table.iloc[:0].reset_index(drop=True)
    names = table["path"].map(lambda p: Path(p).name)
    draws = names.map(lambda n: int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) / 16**8)
    held = draws < fraction
    if held.all():
        raise ValueError(
            f"holdout_fraction {fraction} keeps every one of the {len(table)} clips out of training"
        )
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True)


def scaled_bucket_config(raw: dict, scale: float) -> BucketConfig:
    """The bucket config with every batch size multiplied by ``scale`` (at least 1)."""
    scaled = {
        resolution: {
            frames: (entry[0], max(1, int(entry[1] * scale))) for frames, entry in keys.items()
        }
        for resolution, keys in raw.items()
    }
    return BucketConfig.from_dict(scaled)


def clip_batches(
    table: pd.DataFrame, params: dict[str, Any], rank: int, world_size: int
) -> tuple[ClipDataset, VariableShapeBatchSampler, Any]:
    """Dataset, variable-shape batch sampler and collate function for a training job.

    ``params`` is a training group (``bucket_config``, ``batch_size_scale``, ``seed``,
    ``dataset.fps_max``, ``dataset.transform_name``); buckets are re-drawn every epoch.
    """
    config = scaled_bucket_config(params["bucket_config"], params.get("batch_size_scale", 1.0))
    seed, fps_max = params["seed"], params["dataset"]["fps_max"]

    def assign(epoch: int) -> pd.DataFrame:
        return assign_buckets(table, config, seed=seed, epoch=epoch, fps_max=fps_max)

    sampler = VariableShapeBatchSampler(assign, num_replicas=world_size, rank=rank, seed=seed)
    dataset = ClipDataset(
        table, seed=seed, fps_max=fps_max, transform=params["dataset"]["transform_name"]
    )
    return dataset, sampler, collate_clips


# Evaluations read one fixed epoch: the same bucket draws and crop windows on every run.
FIXED_EPOCH = 0


def fixed_bucket_assignment(rows: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Bucket assignment (epoch 0, unscaled batch sizes) of the rows that fit a bucket.

    Reads ``params["bucket_config"]``, ``params["seed"]`` and ``params["dataset"]["fps_max"]``;
    the result is indexed like ``rows`` and carries :mod:`opensora_kedro.data.bucket`'s
    assignment columns.
    """
    config = scaled_bucket_config(params["bucket_config"], 1.0)
    assignment = assign_buckets(rows, config, seed=params["seed"], epoch=FIXED_EPOCH,
                                fps_max=params["dataset"]["fps_max"])  # fmt: skip
    return assignment[assignment["skip_reason"].isna()]


def fixed_sample_key(index: Any, row: pd.Series) -> SampleKey:
    """The :class:`SampleKey` of one assigned row (its bucket shape and stride, epoch 0)."""
    return SampleKey(
        int(index),
        int(row.bucket_num_frames),
        int(row.bucket_height),
        int(row.bucket_width),
        sampling_interval=int(row.sampling_interval),
        epoch=FIXED_EPOCH,
    )


def fixed_bucket_keys(rows: pd.DataFrame, params: dict[str, Any]) -> list[SampleKey]:
    """One key per row that fits a bucket, in table order: what evaluations and measurements
    read, the same on every run."""
    return [fixed_sample_key(i, r) for i, r in fixed_bucket_assignment(rows, params).iterrows()]

"""Bucketed clip batches of a training table: the data side of every training job."""

from __future__ import annotations

from typing import Any

import pandas as pd

from opensora_kedro.data.bucket import assign_buckets
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.clip_dataset import ClipDataset, collate_clips
from opensora_kedro.data.sampler import SampleKey, VariableShapeBatchSampler
from opensora_kedro.training.params import LoopParams


def clip_batches(
    table: pd.DataFrame, params: LoopParams, rank: int, world_size: int
) -> tuple[ClipDataset, VariableShapeBatchSampler, Any]:
    """Dataset, variable-shape batch sampler and collate function for a training job.

    Reads the training group's ``bucket_config`` (batch sizes times ``batch_size_scale``),
    ``seed``, ``dataset.fps_max`` and ``dataset.transform_name``; buckets are re-drawn every
    epoch.
    """
    config = BucketConfig.from_tree(params.bucket_config, batch_size_scale=params.batch_size_scale)
    seed, fps_max = params.seed, params.dataset.fps_max

    def assign(epoch: int) -> pd.DataFrame:
        return assign_buckets(table, config, seed=seed, epoch=epoch, fps_max=fps_max)

    sampler = VariableShapeBatchSampler(assign, num_replicas=world_size, rank=rank, seed=seed)
    dataset = ClipDataset(
        table, seed=seed, fps_max=fps_max, transform=params.dataset.transform_name
    )
    return dataset, sampler, collate_clips


# Evaluations read one fixed epoch: the same bucket draws and crop windows on every run.
FIXED_EPOCH = 0


def fixed_bucket_assignment(rows: pd.DataFrame, params: LoopParams) -> pd.DataFrame:
    """Bucket assignment (epoch 0, unscaled batch sizes) of the rows that fit a bucket.

    Reads the training group's ``bucket_config``, ``seed`` and ``dataset.fps_max``; the result
    is indexed like ``rows`` and carries :mod:`opensora_kedro.data.bucket`'s assignment columns.
    """
    config = BucketConfig.from_tree(params.bucket_config)
    assignment = assign_buckets(rows, config, seed=params.seed, epoch=FIXED_EPOCH,
                                fps_max=params.dataset.fps_max)  # fmt: skip
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


def fixed_bucket_keys(rows: pd.DataFrame, params: LoopParams) -> list[SampleKey]:
    """One key per row that fits a bucket, in table order: what evaluations and measurements
    read, the same on every run."""
    return [fixed_sample_key(i, r) for i, r in fixed_bucket_assignment(rows, params).iterrows()]

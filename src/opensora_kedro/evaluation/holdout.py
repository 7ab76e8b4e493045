"""Held-out clips at their training bucket shape: shared by every held-out evaluation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from opensora_kedro.data.bucket import assign_buckets
from opensora_kedro.data.clip_batches import scaled_bucket_config
from opensora_kedro.data.sampler import SampleKey

EVAL_EPOCH = 0  # one fixed epoch: the same bucket draws and crop windows on every run


def held_out_assignment(held: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Bucket assignment (epoch 0, unscaled batch sizes) of the held-out rows that fit a bucket.

    Reads ``params["bucket_config"]``, ``params["seed"]`` and ``params["dataset"]["fps_max"]``;
    the result is indexed like ``held`` and carries :mod:`opensora_kedro.data.bucket`'s
    assignment columns.
    """
    config = scaled_bucket_config(params["bucket_config"], 1.0)
    assignment = assign_buckets(held, config, seed=params["seed"], epoch=EVAL_EPOCH,
                                fps_max=params["dataset"]["fps_max"])  # fmt: skip
    return assignment[assignment["skip_reason"].isna()]


def sample_key(index: Any, row: pd.Series) -> SampleKey:
    """The :class:`SampleKey` of one assigned row (its bucket shape and stride, epoch 0)."""
    return SampleKey(
        int(index),
        int(row.bucket_num_frames),
        int(row.bucket_height),
        int(row.bucket_width),
        sampling_interval=int(row.sampling_interval),
        epoch=EVAL_EPOCH,
    )


def held_out_keys(held: pd.DataFrame, params: dict[str, Any]) -> list[SampleKey]:
    """One key per held-out row that fits a bucket, in table order."""
    return [sample_key(i, r) for i, r in held_out_assignment(held, params).iterrows()]

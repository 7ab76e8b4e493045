"""Open-Sora's ``get_bucket_id`` loop, row by row in plain Python: the reference that
:func:`opensora_kedro.data.bucket.assign_buckets` (vectorised) must agree with on every row.
Used by the tests and the bucket benchmark only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from opensora_kedro.data.aspect import _check_fps_max, get_closest_ratio, map_target_fps
from opensora_kedro.data.bucket import (
    AREA_APPROX,
    DROPPED,
    IMAGE_WITHOUT_1,
    KEEP,
    OUTPUT_COLUMNS,
    SKIP,
    SKIP_REASONS,
    TOO_SHORT,
    TOO_SMALL,
    _table_arrays,
)
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.bucket_random import row_seed, uniform


def _reference_row(
    num_frames: int, height: int, width: int, fps: float, seed_of_row: int, config: BucketConfig,
    fps_max: float | None,
) -> tuple[tuple[str, int, str] | None, str | None]:  # fmt: skip
    """Open-Sora's ``get_bucket_id`` loop, line for line, with :func:`uniform` as ``u``."""
    _, interval = map_target_fps(fps, _check_fps_max(fps_max))
    t_eff, area = int(num_frames) // interval, int(height) * int(width)
    eligible = fitted = False
    for res in config.resolutions:
        if area < res.num_pixels * AREA_APPROX:
            continue
        eligible = True
        if t_eff == 1:
            if 1 in res.frames:
                fitted = True
                k = res.frames.index(1)
                if uniform(seed_of_row, 2 * (res.key_offset + k) + KEEP) < res.keep_probs[k]:
                    return (res.name, 1, get_closest_ratio(height, width, res.ratios)), None
            continue
        for k, t in enumerate(res.frames):
            if t_eff >= t and t != 1:
                fitted = True
                flat, skip, keep = res.key_offset + k, res.skip_probs[k], res.keep_probs[k]
                if skip is not None and (
                    skip >= 1 or uniform(seed_of_row, 2 * flat + SKIP) <= skip
                ):
                    continue
                if keep >= 1 or uniform(seed_of_row, 2 * flat + KEEP) <= keep:
                    return (res.name, t, get_closest_ratio(height, width, res.ratios)), None
                break
    if not eligible:
        return None, SKIP_REASONS[TOO_SMALL]
    if fitted:
        return None, SKIP_REASONS[DROPPED]
    return None, SKIP_REASONS[IMAGE_WITHOUT_1 if t_eff == 1 else TOO_SHORT]


def get_bucket_id(
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    row_id: int,
    config: BucketConfig,
    *,
    seed: int,
    epoch: int,
    fps_max: float | None,
) -> tuple[str, int, str] | None:
    """Row-by-row reference: ``(resolution, num_frames, ratio)`` or None (skipped).

    Plain Python over one row, written after Open-Sora's loop; :func:`assign_buckets`
    must agree with it on every row (the tests check this).
    """
    seed_of_row = row_seed(seed, epoch, row_id, config.num_bucket)
    return _reference_row(num_frames, height, width, fps, seed_of_row, config, fps_max)[0]


def assign_buckets_reference(
    table: pd.DataFrame, config: BucketConfig, *, seed: int, epoch: int, fps_max: float | None
) -> pd.DataFrame:
    """:func:`assign_buckets` computed one row at a time (slow; for tests and benchmarks)."""
    num_frames, height, width, fps, row_ids = _table_arrays(table)
    rows = []
    for t, h, w, f, row_id in zip(
        num_frames.tolist(), height.tolist(), width.tolist(), fps.tolist(), row_ids.tolist(),
        strict=True,
    ):  # fmt: skip
        seed_of_row = row_seed(seed, epoch, row_id, config.num_bucket)
        bucket, reason = _reference_row(t, h, w, f, seed_of_row, config, fps_max)
        interval = map_target_fps(f, _check_fps_max(fps_max))[1]
        if bucket is None:
            rows.append((None, 0, None, 0, 0, 0, interval, reason))
            continue
        name, frames, ratio = bucket
        res = config.resolution(name)
        hw = res.heights[res.ratios.index(ratio)], res.widths[res.ratios.index(ratio)]
        rows.append((name, frames, ratio, *hw, config.batch_size(name, frames), interval, None))
    columns = zip(*rows, strict=True) if rows else [()] * len(OUTPUT_COLUMNS)
    return pd.DataFrame(
        {
            name: pd.Series(list(values), index=table.index, dtype=_dtype(name))
            for name, values in zip(OUTPUT_COLUMNS, columns, strict=True)
        },
        index=table.index,
    )


def _dtype(column: str) -> type:
    return object if column in ("bucket_resolution", "bucket_aspect", "skip_reason") else np.int64

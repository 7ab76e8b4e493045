"""Bucket assignment with Open-Sora 2.0's ``bucket_config`` semantics, vectorised.

The rules are those of ``opensora/datasets/bucket.py::Bucket.get_bucket_id`` (reference
brief §3.2): resolutions by pixel count descending, the 0.8 area gate, images
(``T_eff == 1``) only into ``1``-frame buckets, videos into the largest frame key
``t != 1`` with ``T_eff >= t``, keep-or-fall-back-to-the-next-resolution by probability,
the two-probability skip-to-shorter-``t`` form, and the closest aspect ratio of the chosen
resolution's training table.

**Random numbers**: counter-based uniforms (:mod:`opensora_kedro.data.bucket_random`), the
same semantics and determinism as Open-Sora's per-row Generators, not its exact stream. A plain
row-by-row version with the same uniforms (``tests/data/bucket_reference.py``) must agree
with the vectorised assignment on every row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opensora_kedro.data.aspect import (
    _check_fps_max,
    _map_target_fps_array,
    closest_ratio_indices,
)
from opensora_kedro.data.bucket_config import BucketConfig, ResolutionBuckets, is_int
from opensora_kedro.data.bucket_random import row_keys, row_seeds, uniform_from_keys

logger = logging.getLogger(__name__)

AREA_APPROX = 0.8  # Open-Sora's ``approx``: a clip may be up to 20% smaller than the bucket
SKIP_REASONS: tuple[str, ...] = (
    "too_small",  # below 0.8 x the pixel count of every resolution
    "too_short",  # a video for which no frame key t != 1 fits T_eff at any eligible resolution
    "image_without_1_frame_bucket",  # T_eff == 1 but no eligible resolution has a 1 key
    "dropped_by_probability",  # some bucket fitted, but the draws kept it in none
)
TOO_SMALL, TOO_SHORT, IMAGE_WITHOUT_1, DROPPED = range(4)
OUTPUT_COLUMNS = [
    "bucket_resolution", "bucket_num_frames", "bucket_aspect", "bucket_height",
    "bucket_width", "batch_size", "sampling_interval", "skip_reason",
]  # fmt: skip
REQUIRED_COLUMNS = ["num_frames", "height", "width", "fps"]
KEEP, SKIP = 0, 1  # the ``kind`` part of a draw index

# --- vectorised assignment --------------------------------------------------------------


@dataclass
class _Codes:
    """Per-row results as flat indices (-1 = unassigned), before they become columns."""

    key: np.ndarray  # flat (resolution, frame key) index
    ratio: np.ndarray  # flat (resolution, ratio) index
    interval: np.ndarray
    reason: np.ndarray  # index into SKIP_REASONS


def _video_keys(res: ResolutionBuckets) -> tuple[np.ndarray, np.ndarray]:
    """Descending frame keys other than 1, and their positions in ``res.frames``."""
    positions = np.array([k for k, t in enumerate(res.frames) if t != 1], dtype=np.int64)
    return np.array(res.frames, dtype=np.int64)[positions], positions


def _keep_draws(
    rows: np.ndarray, keys: np.ndarray, flat: np.ndarray, prob: np.ndarray
) -> np.ndarray:
    """Video keep test ``p >= 1 or u <= p``; draws only where ``p < 1``, as Open-Sora."""
    keep = prob >= 1.0
    draw = np.flatnonzero(~keep)
    if draw.size:
        u = uniform_from_keys(keys[rows[draw]], 2 * flat[draw] + KEEP)
        keep[draw] = u <= prob[draw]
    return keep


def _walk_skips(
    rows: np.ndarray, start: np.ndarray, keys: np.ndarray, res: ResolutionBuckets
) -> tuple[np.ndarray, np.ndarray]:
    """Two-probability form: from each row's first fitting key, skip to shorter keys with
    ``p_skip`` and then keep with ``p_keep`` (else fall back). One pass per key position;
    each pass touches only the rows waiting at that position."""
    video_frames, positions = _video_keys(res)
    # Group rows by starting position so each pass slices its newcomers out.
    order = np.argsort(start, kind="stable")
    rows, start = rows[order], start[order]
    bounds = np.searchsorted(start, np.arange(len(video_frames) + 1))
    carry = rows[:0]
    kept_rows, kept_flat = [], []
    for j, position in enumerate(positions):
        waiting = np.concatenate([carry, rows[bounds[j] : bounds[j + 1]]])
        flat = res.key_offset + int(position)
        skip = res.skip_probs[position]
        carry = waiting[:0]
        if skip is not None:
            if skip >= 1.0:
                carry = waiting
                continue
            jumps = uniform_from_keys(keys[waiting], 2 * flat + SKIP) <= skip
            carry, waiting = waiting[jumps], waiting[~jumps]
        flats = np.full(waiting.size, flat, dtype=np.int64)
        probs = np.full(waiting.size, res.keep_probs[position])
        keep = _keep_draws(waiting, keys, flats, probs)
        kept_rows.append(waiting[keep])
        kept_flat.append(flats[keep])
    if not kept_rows:
        return rows[:0], rows[:0]
    return np.concatenate(kept_rows), np.concatenate(kept_flat)


def _assign_videos(
    rows: np.ndarray, t_eff: np.ndarray, keys: np.ndarray, res: ResolutionBuckets
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Videos at one resolution: returns (rows that fit a key, kept rows, their flat keys)."""
    video_frames, positions = _video_keys(res)
    if not video_frames.size:
        return rows[:0], rows[:0], rows[:0]
    # Largest key <= T_eff: count the keys <= T_eff in ascending order.
    n_fit = np.searchsorted(video_frames[::-1], t_eff, side="right")
    fits = n_fit > 0
    rows, start = rows[fits], len(video_frames) - n_fit[fits]
    if any(res.skip_probs[p] is not None for p in positions):
        return (rows, *_walk_skips(rows, start, keys, res))
    flat = res.key_offset + positions[start]
    prob = np.array(res.keep_probs)[positions][start]
    keep = _keep_draws(rows, keys, flat, prob)
    return rows, rows[keep], flat[keep]


def _assign_images(
    rows: np.ndarray, keys: np.ndarray, res: ResolutionBuckets
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images at one resolution: kept when ``u < p`` (strict, as Open-Sora)."""
    position = res.image_key
    if position is None or not rows.size:
        return rows[:0], rows[:0], rows[:0]
    flat = res.key_offset + position
    prob = res.keep_probs[position]
    # u < 1 always, so p == 1 needs no draw (Open-Sora draws; the outcome is the same).
    kept = rows if prob >= 1.0 else rows[uniform_from_keys(keys[rows], 2 * flat + KEEP) < prob]
    return rows, kept, np.full(kept.size, flat, dtype=np.int64)


def _assign_codes(
    num_frames: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    fps: np.ndarray,
    row_ids: np.ndarray,
    config: BucketConfig,
    *,
    seed: int,
    epoch: int,
    fps_max: float | None,
) -> _Codes:
    """The whole table at once: one pass per resolution over the rows still unassigned."""
    n = num_frames.size
    _, interval = _map_target_fps_array(fps, _check_fps_max(fps_max))
    t_eff = num_frames // interval
    area = height * width
    keys = row_keys(row_seeds(row_ids, seed, epoch, config.num_bucket))
    key = np.full(n, -1, dtype=np.int64)
    ratio = np.full(n, -1, dtype=np.int64)
    eligible = np.zeros(n, dtype=bool)  # passed some area gate
    fitted = np.zeros(n, dtype=bool)  # some bucket's frame rule fitted
    open_rows = np.arange(n)
    for res in config.resolutions:
        if not open_rows.size:
            break
        rows = open_rows[area[open_rows] >= res.num_pixels * AREA_APPROX]
        if not rows.size:
            continue
        eligible[rows] = True
        is_image = t_eff[rows] == 1
        image_fit, image_kept, image_flat = _assign_images(rows[is_image], keys, res)
        video_fit, video_kept, video_flat = _assign_videos(
            rows[~is_image], t_eff[rows[~is_image]], keys, res
        )
        fitted[image_fit] = True
        fitted[video_fit] = True
        kept = np.concatenate([image_kept, video_kept])
        if kept.size:
            key[kept] = np.concatenate([image_flat, video_flat])
            nearest = closest_ratio_indices(height[kept], width[kept], res.ratios)
            ratio[kept] = res.ratio_offset + nearest
            open_rows = open_rows[key[open_rows] < 0]
    reason = np.where(fitted, DROPPED, np.where(t_eff == 1, IMAGE_WITHOUT_1, TOO_SHORT))
    reason = np.where(eligible, reason, TOO_SMALL)
    reason[key >= 0] = -1
    return _Codes(key, ratio, interval, reason)


def _int_column(table: pd.DataFrame, column: str) -> np.ndarray:
    values = table[column]
    if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
        return values.to_numpy(dtype=np.int64)
    floats = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(floats).all() or (floats != np.floor(floats)).any():
        raise ValueError(f"column {column!r} must hold whole numbers without NaN")
    return floats.astype(np.int64)


def _row_ids(index: pd.Index) -> np.ndarray:
    # Open-Sora seeds with ``data["id"] = data.index``; a non-integer index has no such id,
    # so positions stand in for it.
    if pd.api.types.is_integer_dtype(index.dtype):
        return index.to_numpy(dtype=np.int64)
    return np.arange(len(index), dtype=np.int64)


def _table_arrays(table: pd.DataFrame) -> tuple[np.ndarray, ...]:
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; bucketing needs {REQUIRED_COLUMNS}")
    fps = table["fps"].to_numpy(dtype=np.float64, na_value=np.nan)
    ints = [_int_column(table, column) for column in ("num_frames", "height", "width")]
    return (*ints, fps, _row_ids(table.index))


def _lookup(values: list, missing: object, dtype: type) -> np.ndarray:
    """A lookup array whose last slot answers index -1 (unassigned)."""
    return np.array([*values, missing], dtype=dtype)


def _codes_to_frame(codes: _Codes, config: BucketConfig, index: pd.Index) -> pd.DataFrame:
    by_key: dict[str, list] = {"res": [], "frames": [], "size": []}
    by_ratio: dict[str, list] = {"name": [], "height": [], "width": []}
    for res in config.resolutions:
        by_key["res"] += [res.name] * len(res.frames)
        by_key["frames"] += res.frames
        by_key["size"] += res.batch_sizes
        by_ratio["name"] += res.ratios
        by_ratio["height"] += res.heights
        by_ratio["width"] += res.widths
    columns = {
        "bucket_resolution": _lookup(by_key["res"], None, object)[codes.key],
        "bucket_num_frames": _lookup(by_key["frames"], 0, np.int64)[codes.key],
        "bucket_aspect": _lookup(by_ratio["name"], None, object)[codes.ratio],
        "bucket_height": _lookup(by_ratio["height"], 0, np.int64)[codes.ratio],
        "bucket_width": _lookup(by_ratio["width"], 0, np.int64)[codes.ratio],
        "batch_size": _lookup(by_key["size"], 0, np.int64)[codes.key],
        "sampling_interval": codes.interval,
        "skip_reason": _lookup(list(SKIP_REASONS), None, object)[codes.reason],
    }
    # Explicit Series dtypes: pandas 3 would infer str dtype and turn None into NaN.
    series = {
        name: pd.Series(values, index=index, dtype=values.dtype, copy=False)
        for name, values in columns.items()
    }
    return pd.DataFrame(series, index=index)


def assign_buckets(
    table: pd.DataFrame, config: BucketConfig, *, seed: int, epoch: int, fps_max: float | None
) -> pd.DataFrame:
    """Assign every row of ``table`` to a bucket, vectorised over the whole table.

    ``table`` needs ``num_frames, height, width, fps`` (fps NaN for images). Returns a frame
    on ``table``'s index with :data:`OUTPUT_COLUMNS`: ``bucket_resolution`` (str or None),
    ``bucket_num_frames`` (0 if unassigned), ``bucket_aspect`` (ratio name or None),
    ``bucket_height``/``bucket_width`` (the ratio's H, W in the resolution's training
    table; 0 if unassigned), ``batch_size`` (0 if unassigned), ``sampling_interval``
    (from :func:`map_target_fps`) and ``skip_reason`` (one of :data:`SKIP_REASONS`, None
    if assigned). Deterministic per (seed, epoch, row id); row ids are the integer index
    values (Open-Sora's ``data.index``), else positions.
    """
    if not (is_int(seed) and is_int(epoch)):
        raise ValueError(f"seed and epoch must be ints, got {seed!r} and {epoch!r}")
    num_frames, height, width, fps, row_ids = _table_arrays(table)
    codes = _assign_codes(
        num_frames, height, width, fps, row_ids, config, seed=seed, epoch=epoch, fps_max=fps_max
    )
    counts = np.bincount(codes.reason + 1, minlength=len(SKIP_REASONS) + 1)
    # Every epoch re-draws the buckets: the first draw is news, the others are alike.
    logger.log(
        logging.INFO if epoch == 0 else logging.DEBUG,
        "bucketed %d of %d rows (seed %d, epoch %d); skipped: %s",
        counts[0], len(table), seed, epoch,
        ", ".join(f"{name} {c}" for name, c in zip(SKIP_REASONS, counts[1:], strict=True)),
    )  # fmt: skip
    return _codes_to_frame(codes, config, table.index)

"""Bucket assignment with Open-Sora 2.0's ``bucket_config`` semantics, vectorised.

The rules are those of ``opensora/datasets/bucket.py::Bucket.get_bucket_id`` (reference
brief §3.2): resolutions by pixel count descending, the 0.8 area gate, images
(``T_eff == 1``) only into ``1``-frame buckets, videos into the largest frame key
``t != 1`` with ``T_eff >= t``, keep-or-fall-back-to-the-next-resolution by probability,
the two-probability skip-to-shorter-``t`` form, and the closest aspect ratio of the chosen
resolution's training table.

**Random numbers.** Open-Sora draws ``u`` from ``np.random.default_rng(row_seed)`` per row,
with ``row_seed = seed + epoch + row_id * num_bucket``. A Generator per row cannot be
vectorised, so each decision here gets a counter-based uniform instead: a SplitMix64 hash of
``(row_seed, draw)``, where ``draw = 2 * flat_key + kind`` names the decision (``flat_key``
counts (resolution, frame key) pairs in config order, like Open-Sora's ``bucket_id``
counter; ``kind`` is 0 for "keep at this resolution", 1 for "skip to a shorter t"). It gives
the same semantics and the same determinism (a function of seed, epoch and row only, new
draws every epoch) but not Open-Sora's exact random stream. A plain row-by-row version with
the same uniform (``tests/data/bucket_reference.py``) must agree with it on every row.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opensora_kedro.data.aspect import (
    _check_compression,
    _check_fps_max,
    _map_target_fps_array,
    closest_ratio_indices,
    resolution_table,
)

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
MERGE_DIRECTIVE = "_delete_"  # the config layer's "replace, don't merge" flag, not a resolution

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (odd, golden ratio)
_MUL1, _MUL2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_TO_UNIT = 2.0**-53


# --- the deterministic uniform -----------------------------------------------------------


def row_seed(seed: int, epoch: int, row_id: int, num_bucket: int) -> int:
    """Open-Sora's per-row seed ``seed + epoch + row_id * num_bucket``, modulo 2**64."""
    return (seed + epoch + row_id * num_bucket) & _MASK64


def _mix64(z: int) -> int:
    """SplitMix64's finaliser on Python ints (the scalar twin of :func:`_mix64_array`)."""
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (numpy wraps multiplication modulo 2**64)."""
    z = z ^ (z >> np.uint64(30))
    z *= np.uint64(_MUL1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MUL2)
    z ^= z >> np.uint64(31)
    return z


def uniform(seed_of_row: int, draw: int) -> float:
    """The uniform in [0, 1) for decision ``draw`` of a row with seed ``seed_of_row``.

    ``mix(mix(row_seed) + (draw + 1) * GAMMA) >> 11``, scaled by 2**-53: the ``draw``-th
    output of a SplitMix64 stream started at ``mix(row_seed)``. Hashing the row seed first
    decorrelates rows whose seeds differ by ``num_bucket``.
    """
    key = _mix64(seed_of_row & _MASK64)
    return (_mix64((key + (draw + 1) * _GAMMA) & _MASK64) >> 11) * _TO_UNIT


def _row_keys(row_seeds: np.ndarray) -> np.ndarray:
    """``mix(row_seed)`` per row: hashed once, reused by every draw of the row."""
    return _mix64_array(np.asarray(row_seeds, dtype=np.uint64))  # the first xor copies


def _uniform_from_keys(keys: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    if isinstance(draw, np.ndarray):
        offset = (draw.astype(np.uint64) + np.uint64(1)) * np.uint64(_GAMMA)
    else:
        offset = np.uint64(((draw + 1) * _GAMMA) & _MASK64)
    bits = _mix64_array(keys + offset) >> np.uint64(11)
    return bits.astype(np.float64) * _TO_UNIT


def uniform_array(row_seeds: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    """Vectorised :func:`uniform` over uint64 row seeds (bit-identical to the scalar form)."""
    return _uniform_from_keys(_row_keys(row_seeds), draw)


def row_seeds(row_ids: np.ndarray, seed: int, epoch: int, num_bucket: int) -> np.ndarray:
    """Vectorised :func:`row_seed` (uint64, wrapping like the scalar form)."""
    base = np.uint64((seed + epoch) & _MASK64)
    ids = np.asarray(row_ids).astype(np.int64).astype(np.uint64)
    return ids * np.uint64(num_bucket & _MASK64) + base


# --- the config -------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolutionBuckets:
    """One resolution of a bucket config: its training ratio table and its frame keys."""

    name: str
    num_pixels: int
    ratios: tuple[str, ...]  # training-table order (nearest-ratio ties go to the earlier)
    heights: tuple[int, ...]
    widths: tuple[int, ...]
    frames: tuple[int, ...]  # descending, as Open-Sora walks them
    keep_probs: tuple[float, ...]
    skip_probs: tuple[float | None, ...]  # None where the prob was a plain float
    batch_sizes: tuple[int, ...]
    key_offset: int  # flat index of frames[0] over the whole config (names the draws)
    ratio_offset: int  # flat index of ratios[0] over the whole config

    @property
    def image_key(self) -> int | None:
        """Position of the ``1``-frame key in :attr:`frames`, or None."""
        return self.frames.index(1) if 1 in self.frames else None

    @property
    def num_buckets(self) -> int:
        """``#frame keys × #ratios``."""
        return len(self.frames) * len(self.ratios)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_frame_key(key: object, path: str) -> int:
    if _is_int(key):
        frames = int(key)
    elif isinstance(key, str) and key.strip().lstrip("+").isdigit():
        frames = int(key)
    else:
        raise ValueError(f"{path}: frame key {key!r} is not an int (a frame count like 33)")
    if frames < 1:
        raise ValueError(f"{path}: frame key {frames} must be at least 1")
    return frames


def _parse_prob(value: object, path: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{path}: probability {value!r} is not a number")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(f"{path}: probability {value!r} is outside [0, 1]")
    return float(value)


def _parse_batch_size(value: object, path: str) -> int:
    if not _is_int(value) or int(value) <= 0:
        raise ValueError(f"{path}: batch size {value!r} must be a positive int")
    return int(value)


def _parse_value(
    value: object, path: str, batch_size: int | None
) -> tuple[float, float | None, int]:
    """``prob`` | ``(prob, bs)`` | ``((p_keep, p_skip), bs)`` -> (keep, skip, bs)."""
    if isinstance(value, list | tuple):
        if len(value) not in (1, 2):
            raise ValueError(f"{path}: expected (prob, batch_size), got {value!r}")
        prob, size = value[0], (value[1] if len(value) == 2 else None)
    else:
        prob, size = value, None
    if isinstance(prob, list | tuple):
        if len(prob) != 2:
            raise ValueError(f"{path}: a probability pair is (p_keep, p_skip), got {prob!r}")
        keep, skip = _parse_prob(prob[0], path), _parse_prob(prob[1], path)
    else:
        keep, skip = _parse_prob(prob, path), None
    if batch_size is not None:
        return keep, skip, batch_size
    if size is None:
        raise ValueError(f"{path}: no batch size; write (prob, batch_size) or pass batch_size=")
    return keep, skip, _parse_batch_size(size, path)


def _parse_resolution(
    name: object, frames_raw: object, d: int, batch_size: int | None
) -> tuple[str, int, dict[str, tuple[int, int]], list[tuple[int, float, float | None, int]]]:
    path = f"bucket_config.{name}"
    try:
        total, table = resolution_table(str(name), d, training=True)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(frames_raw, Mapping) or not frames_raw:
        raise ValueError(f"{path}: expected a non-empty mapping {{num_frames: (prob, batch_size)}}")
    keys: dict[int, tuple[int, float, float | None, int]] = {}
    for key, value in frames_raw.items():
        key_path = f"{path}.{key}"
        frames = _parse_frame_key(key, key_path)
        if frames in keys:
            raise ValueError(f"{key_path}: frame key {frames} is given twice")
        keys[frames] = (frames, *_parse_value(value, key_path, batch_size))
    return str(name), total, table, [keys[t] for t in sorted(keys, reverse=True)]


@dataclass(frozen=True)
class BucketConfig:
    """A validated ``bucket_config``: resolutions by pixel count, descending.

    Build it with :meth:`from_dict` from the plain YAML/Python shape
    ``{res_name: {num_frames: (prob, batch_size)}}``, where ``prob`` is a float or a pair
    ``(p_keep_at_this_res, p_skip_to_shorter_t)``; keys may be ints or digit strings and
    values lists or tuples. A ``_delete_`` key (the config layer's merge flag) is ignored.
    """

    resolutions: tuple[ResolutionBuckets, ...]
    spatial_compression: int = 16

    @classmethod
    def from_dict(
        cls, raw: Mapping, spatial_compression: int = 16, *, batch_size: int | None = None
    ) -> BucketConfig:
        """Parse and validate ``raw``; errors are ValueErrors naming the key path.

        ``batch_size``, when given, overrides every bucket's batch size (Open-Sora's global
        ``batch_size`` key) and lets values be a bare probability.
        """
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError(
                "bucket_config: expected a non-empty mapping "
                "{resolution: {num_frames: (prob, batch_size)}}"
            )
        _check_compression(spatial_compression)
        if batch_size is not None:
            batch_size = _parse_batch_size(batch_size, "batch_size")
        parsed = [
            _parse_resolution(name, frames, spatial_compression, batch_size)
            for name, frames in raw.items()
            if name != MERGE_DIRECTIVE
        ]
        if not parsed:
            raise ValueError("bucket_config: no resolutions")
        # Stable sort: equal pixel counts keep the config order, as in Open-Sora.
        parsed.sort(key=lambda item: item[1], reverse=True)
        resolutions, key_offset, ratio_offset = [], 0, 0
        for name, total, table, keys in parsed:
            frames, keep, skip, sizes = (tuple(column) for column in zip(*keys, strict=True))
            resolutions.append(
                ResolutionBuckets(
                    name=name,
                    num_pixels=total,
                    ratios=tuple(table),
                    heights=tuple(h for h, _ in table.values()),
                    widths=tuple(w for _, w in table.values()),
                    frames=frames,
                    keep_probs=keep,
                    skip_probs=skip,
                    batch_sizes=sizes,
                    key_offset=key_offset,
                    ratio_offset=ratio_offset,
                )
            )
            key_offset += len(frames)
            ratio_offset += len(table)
        return cls(tuple(resolutions), spatial_compression)

    @property
    def num_bucket(self) -> int:
        """``Σ_res (#frame keys × #ratios)``: the row-seed multiplier."""
        return sum(res.num_buckets for res in self.resolutions)

    @property
    def names(self) -> tuple[str, ...]:
        """Resolution names, largest pixel count first."""
        return tuple(res.name for res in self.resolutions)

    def resolution(self, name: str) -> ResolutionBuckets:
        """The buckets of resolution ``name`` (KeyError if absent)."""
        for res in self.resolutions:
            if res.name == name:
                return res
        raise KeyError(f"resolution {name!r} not in bucket_config; have {list(self.names)}")

    def batch_size(self, resolution: str, num_frames: int) -> int:
        """Per-GPU batch size of bucket ``(resolution, num_frames)`` (KeyError if absent)."""
        res = self.resolution(resolution)
        if num_frames not in res.frames:
            raise KeyError(f"bucket_config.{resolution} has no frame key {num_frames}")
        return res.batch_sizes[res.frames.index(num_frames)]

    def to_dict(self) -> dict[str, dict[int, tuple]]:
        """The plain ``{res: {t: (prob, batch_size)}}`` shape (pairs for two-prob keys)."""
        return {
            res.name: {
                t: ((keep if skip is None else (keep, skip)), size)
                for t, keep, skip, size in zip(
                    res.frames, res.keep_probs, res.skip_probs, res.batch_sizes, strict=True
                )
            }
            for res in self.resolutions
        }


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
        u = _uniform_from_keys(keys[rows[draw]], 2 * flat[draw] + KEEP)
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
            jumps = _uniform_from_keys(keys[waiting], 2 * flat + SKIP) <= skip
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
    kept = rows if prob >= 1.0 else rows[_uniform_from_keys(keys[rows], 2 * flat + KEEP) < prob]
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
    keys = _row_keys(row_seeds(row_ids, seed, epoch, config.num_bucket))
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
    if not (_is_int(seed) and _is_int(epoch)):
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

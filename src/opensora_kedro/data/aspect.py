"""Aspect-ratio tables, nearest-ratio lookup and fps reduction, as in Open-Sora 2.0.

This mirrors ``opensora/datasets/aspect.py`` and ``datasets/utils.py::map_target_fps``
(reference brief §2.4 and §3.1), with two changes of form, not of result:

- the spatial compression ``D`` is an argument, not the ``AE_SPATIAL_COMPRESSION``
  environment variable;
- ratio lookup and fps reduction also come in vectorised (numpy / pandas) forms.

A resolution name is ``{N}px`` (``N²`` pixels) or ``{N}p`` (``N²·16/9`` pixels), optionally
followed by ``_ar{w}:{h}`` (keep one ratio) or ``_max`` (keep the largest-area ratio).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import overload

import numpy as np
import pandas as pd

# width:height, in Open-Sora's order; the order decides dedup and nearest-ratio ties.
ASPECT_RATIO_NAMES: tuple[str, ...] = (
    "2.39:1", "2:1", "16:9", "1.85:1", "9:16", "5:8", "3:2", "4:3", "1:1",
)  # fmt: skip

# Open-Sora replaces ``fps_max=None`` by this "effectively unlimited" value.
UNLIMITED_FPS_MAX = 999_999_999

VALID_NAME_HINT = (
    "expected '{N}px' (N*N pixels) or '{N}p' (N*N*16/9 pixels), optionally followed by "
    "'_ar{w}:{h}' (one aspect ratio) or '_max' (the largest-area ratio), "
    "e.g. '256px', '768px', '720p', '256px_ar1:1', '768px_max'"
)
_NAME_RE = re.compile(
    r"^(?P<size>[1-9]\d*)(?P<unit>px|p)"
    r"(?:_(?P<setting>max|ar(?P<ratio>\d+(?:\.\d+)?:\d+(?:\.\d+)?)))?$"
)
_RATIO_RE = re.compile(r"^\d+(?:\.\d+)?:\d+(?:\.\d+)?$")

RatioTable = dict[str, tuple[int, int]]


def ratio_value(name: str) -> float:
    """The ``height / width`` value of a ratio name ``"w:h"`` (Open-Sora's ``get_ratio``)."""
    if not _RATIO_RE.match(name):
        raise ValueError(f"invalid aspect ratio {name!r}: expected 'w:h', e.g. '16:9' or '2.39:1'")
    width, height = map(float, name.split(":"))
    return height / width


def _check_compression(spatial_compression: int) -> int:
    if isinstance(spatial_compression, bool) or not isinstance(spatial_compression, int):
        raise ValueError(f"spatial_compression must be an int, got {spatial_compression!r}")
    if spatial_compression <= 0:
        raise ValueError(f"spatial_compression must be positive, got {spatial_compression}")
    return spatial_compression


def _parse_name(name: str) -> re.Match[str]:
    match = _NAME_RE.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"invalid resolution name {name!r}: {VALID_NAME_HINT}")
    return match


def num_pixels(resolution: str) -> int:
    """Pixel count ``P`` of a resolution name (suffixes are allowed and ignored).

    ``"{N}px"`` gives ``N*N``; ``"{N}p"`` gives ``int(N*N/9*16)``, computed in floating
    point exactly as Open-Sora does.
    """
    match = _parse_name(resolution)
    size = int(match["size"])
    if match["unit"] == "px":
        return size * size
    return int(size * size / 9 * 16)


def _ratio_hw(total_pixels: int, ratio: str, d: int, training: bool) -> tuple[int, int]:
    """(H, W) of one ratio: floor to multiples of D, then (training) the ±D area fix."""
    width_ratio, height_ratio = map(float, ratio.split(":"))
    # Same float expressions as Open-Sora so the floors land on the same multiples.
    width = int(math.sqrt(total_pixels * (width_ratio / height_ratio)) // d) * d
    if width == 0:
        raise ValueError(f"{total_pixels} pixels is too small for spatial compression {d}")
    height = int((total_pixels / width) // d) * d
    if training:
        diff = abs(height * width - total_pixels)
        candidates = [
            (height - d, width),
            (height + d, width),
            (height, width - d),
            (height, width + d),
        ]
        for h, w in candidates:
            if abs(h * w - total_pixels) < diff:
                height, width, diff = h, w, abs(h * w - total_pixels)
    if height <= 0:
        raise ValueError(f"{total_pixels} pixels is too small for spatial compression {d}")
    return height, width


@lru_cache(maxsize=256)
def _table_items(total_pixels: int, d: int, training: bool) -> tuple[tuple[str, int, int], ...]:
    horizontal: RatioTable = {}
    vertical: RatioTable = {}
    for ratio in ASPECT_RATIO_NAMES:
        height, width = _ratio_hw(total_pixels, ratio, d, training)
        # Training drops a ratio whose (H, W) an earlier one already has, and its twin.
        if not training or (height, width) not in horizontal.values():
            horizontal[ratio] = (height, width)
            vertical[":".join(ratio.split(":")[::-1])] = (width, height)
    # "16:9"/"9:16" and "1:1" are their own twins' names: update keeps the first
    # position but takes the vertical value, exactly like Open-Sora's dict.update.
    horizontal.update(vertical)
    return tuple((name, h, w) for name, (h, w) in horizontal.items())


def aspect_ratio_table(
    total_pixels: int, spatial_compression: int = 16, training: bool = True
) -> RatioTable:
    """Ratio name -> (H, W) for ``total_pixels`` (Open-Sora's ``get_aspect_ratios_dict``).

    Training tables apply the ±D area adjustment and drop duplicated (H, W) pairs with
    their vertical twins; inference tables (``training=False``) do neither. The dict order
    is Open-Sora's: the listed ratios first, then the new vertical names.
    """
    d = _check_compression(spatial_compression)
    if isinstance(total_pixels, bool) or not isinstance(total_pixels, int | np.integer):
        raise ValueError(f"total_pixels must be an int, got {total_pixels!r}")
    return {name: (h, w) for name, h, w in _table_items(int(total_pixels), d, bool(training))}


def resolution_table(
    resolution: str, spatial_compression: int = 16, training: bool = True
) -> tuple[int, RatioTable]:
    """``(P, ratio table)`` for a resolution name with optional ``_ar{w}:{h}`` / ``_max``.

    Open-Sora's ``get_resolution_with_aspect_ratio`` (which always uses training tables).
    Raises ValueError naming what a valid name looks like.
    """
    match = _parse_name(resolution)
    total = num_pixels(resolution)
    table = aspect_ratio_table(total, spatial_compression, training)
    setting, ratio = match["setting"], match["ratio"]
    if setting == "max":
        # max() keeps the first largest area in table order, as Open-Sora's does.
        best = max(table, key=lambda name: table[name][0] * table[name][1])
        return total, {best: table[best]}
    if ratio is not None:
        if ratio not in table:
            kind = "training" if training else "inference"
            raise ValueError(
                f"invalid resolution name {resolution!r}: ratio {ratio!r} is not in the "
                f"{kind} table of {match['size']}{match['unit']} (D={spatial_compression}); "
                f"available: {', '.join(table)}"
            )
        return total, {ratio: table[ratio]}
    return total, table


def image_size(
    resolution: str, ratio: str, spatial_compression: int = 16, training: bool = True
) -> tuple[int, int]:
    """(H, W) of ``ratio`` at ``resolution`` (Open-Sora's ``get_image_size``; suffix ignored)."""
    table = aspect_ratio_table(num_pixels(resolution), spatial_compression, training)
    if ratio not in table:
        raise ValueError(
            f"aspect ratio {ratio!r} not in the table of {resolution!r}: {list(table)}"
        )
    return table[ratio]


def aspect_ratio_frame(
    resolutions: Iterable[str], spatial_compression: int = 16, training: bool = True
) -> pd.DataFrame:
    """The tables of several resolutions as one long frame (to save as a dataset).

    Columns: ``resolution, num_pixels, ratio, ratio_value, height, width``.
    """
    rows = []
    for resolution in resolutions:
        total, table = resolution_table(resolution, spatial_compression, training)
        for ratio, (height, width) in table.items():
            rows.append((resolution, total, ratio, ratio_value(ratio), height, width))
    columns = ["resolution", "num_pixels", "ratio", "ratio_value", "height", "width"]
    return pd.DataFrame(rows, columns=columns)


def _ratio_names(ratios: Mapping[str, object] | Iterable[str]) -> list[str]:
    names = list(ratios)
    if not names:
        raise ValueError("no aspect ratios to choose from")
    return names


def get_closest_ratio(
    height: float, width: float, ratios: Mapping[str, object] | Iterable[str]
) -> str:
    """The ratio name minimising ``|H/W - h/w|``; ties go to the earlier name (Open-Sora)."""
    aspect = height / width
    return min(_ratio_names(ratios), key=lambda name: abs(aspect - ratio_value(name)))


def closest_ratio_indices(
    heights: np.ndarray | pd.Series,
    widths: np.ndarray | pd.Series,
    ratios: Mapping[str, object] | Iterable[str],
) -> np.ndarray:
    """Vectorised :func:`get_closest_ratio`: the index into ``list(ratios)`` per element.

    Uses a sorted search and compares the two neighbours with the same float expression
    as the scalar form, breaking exact ties by table order. That equals a full scan for
    every aspect below about 2**40 (beyond it float rounding could tie non-neighbours).
    """
    names = _ratio_names(ratios)
    values = np.array([ratio_value(name) for name in names])
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    aspect = np.asarray(heights, dtype=np.float64) / np.asarray(widths, dtype=np.float64)
    if len(names) == 1:
        return np.zeros(aspect.shape, dtype=np.intp)
    upper = np.clip(np.searchsorted(ordered, aspect), 1, len(names) - 1)
    lower = upper - 1
    d_lower = np.abs(aspect - ordered[lower])
    d_upper = np.abs(aspect - ordered[upper])
    lower_idx, upper_idx = order[lower], order[upper]
    take_upper = (d_upper < d_lower) | ((d_upper == d_lower) & (upper_idx < lower_idx))
    return np.where(take_upper, upper_idx, lower_idx)


def get_closest_ratios(
    heights: np.ndarray | pd.Series,
    widths: np.ndarray | pd.Series,
    ratios: Mapping[str, object] | Iterable[str],
) -> np.ndarray:
    """Vectorised :func:`get_closest_ratio`: an object array of ratio names."""
    names = np.array(_ratio_names(ratios), dtype=object)
    return names[closest_ratio_indices(heights, widths, names.tolist())]


def _check_fps_max(fps_max: float | None) -> float:
    if fps_max is None:
        return UNLIMITED_FPS_MAX
    if not fps_max > 0 or math.isinf(fps_max):
        raise ValueError(f"fps_max must be a positive finite number or None, got {fps_max!r}")
    return fps_max


def _map_target_fps_scalar(fps: float | None, fps_max: float) -> tuple[float, int]:
    if fps is None or pd.isna(fps):
        return 0, 1
    if fps < fps_max:
        return fps, 1
    interval = math.ceil(fps / fps_max)
    return math.floor(fps / interval), interval


def _map_target_fps_array(fps: np.ndarray, fps_max: float) -> tuple[np.ndarray, np.ndarray]:
    fps = np.asarray(fps, dtype=np.float64)
    if np.isinf(fps).any():
        raise ValueError("fps must be finite or NaN; got an infinite value")
    high = fps >= fps_max  # False for NaN, which maps to (0, 1)
    interval = np.ones(fps.shape, dtype=np.int64)
    interval[high] = np.ceil(fps[high] / fps_max).astype(np.int64)
    new_fps = np.where(np.isnan(fps), 0.0, fps)
    new_fps[high] = np.floor(fps[high] / interval[high])
    return new_fps, interval


@overload
def map_target_fps(fps: float | None, fps_max: float | None) -> tuple[float, int]: ...
@overload
def map_target_fps(fps: pd.Series, fps_max: float | None) -> tuple[pd.Series, pd.Series]: ...
@overload
def map_target_fps(fps: np.ndarray, fps_max: float | None) -> tuple[np.ndarray, np.ndarray]: ...
def map_target_fps(
    fps: float | None | np.ndarray | pd.Series, fps_max: float | None
) -> tuple[float, int] | tuple[np.ndarray, np.ndarray] | tuple[pd.Series, pd.Series]:
    """Reduce ``fps`` below ``fps_max``: returns ``(new_fps, sampling_interval)``.

    NaN -> ``(0, 1)``; ``fps < fps_max`` -> ``(fps, 1)``; otherwise
    ``interval = ceil(fps / fps_max)`` and ``new_fps = floor(fps / interval)``.
    ``fps_max=None`` is Open-Sora's "unlimited" (999999999). A scalar gives a scalar pair
    (as Open-Sora); an array gives (float64 array, int64 array); a Series gives two
    Series on the same index.
    """
    limit = _check_fps_max(fps_max)
    if isinstance(fps, pd.Series):
        new_fps, interval = _map_target_fps_array(fps.to_numpy(dtype=np.float64), limit)
        return (
            pd.Series(new_fps, index=fps.index, name="fps"),
            pd.Series(interval, index=fps.index, name="sampling_interval"),
        )
    if isinstance(fps, np.ndarray | list | tuple):
        return _map_target_fps_array(np.asarray(fps, dtype=np.float64), limit)
    return _map_target_fps_scalar(fps, limit)

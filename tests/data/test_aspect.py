"""Aspect-ratio tables, nearest ratio and fps reduction against Open-Sora's values (§2.4, §3.1)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from opensora_kedro.data.aspect import (
    aspect_ratio_frame,
    aspect_ratio_table,
    closest_ratio_indices,
    get_closest_ratio,
    get_closest_ratios,
    image_size,
    map_target_fps,
    num_pixels,
    ratio_value,
    resolution_table,
)

# The reference tables (brief §3.1), in Open-Sora's dict order.
TABLE_256PX = {
    "2.39:1": (160, 400), "2:1": (176, 368), "16:9": (192, 336), "9:16": (336, 192),
    "3:2": (208, 320), "4:3": (224, 288), "1:1": (256, 256),
    "1:2.39": (400, 160), "1:2": (368, 176), "2:3": (320, 208), "3:4": (288, 224),
}  # fmt: skip
TABLE_768PX = {
    "2.39:1": (496, 1184), "2:1": (544, 1088), "16:9": (576, 1024), "1.85:1": (560, 1056),
    "9:16": (1024, 576), "5:8": (992, 592), "3:2": (624, 944), "4:3": (672, 880),
    "1:1": (768, 768), "1:2.39": (1184, 496), "1:2": (1088, 544), "1:1.85": (1056, 560),
    "8:5": (592, 992), "2:3": (944, 624), "3:4": (880, 672),
}  # fmt: skip
TABLE_1024PX = {
    "2.39:1": (672, 1568), "2:1": (720, 1456), "16:9": (768, 1360), "1.85:1": (752, 1392),
    "9:16": (1360, 768), "5:8": (1312, 800), "3:2": (832, 1264), "4:3": (896, 1168),
    "1:1": (1024, 1024), "1:2.39": (1568, 672), "1:2": (1456, 720), "1:1.85": (1392, 752),
    "8:5": (800, 1312), "2:3": (1264, 832), "3:4": (1168, 896),
}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "pixels", "expected"),
    [
        ("256px", 65536, TABLE_256PX),
        ("768px", 589824, TABLE_768PX),
        ("1024px", 1048576, TABLE_1024PX),
    ],
)
def test_training_tables_equal_reference(name: str, pixels: int, expected: dict) -> None:
    total, table = resolution_table(name)
    assert total == pixels
    assert list(table.items()) == list(expected.items())  # order matters for ties


def test_256px_drops_duplicates_with_their_vertical_twins() -> None:
    table = aspect_ratio_table(65536)
    assert len(table) == 11
    assert not {"1.85:1", "1:1.85", "5:8", "8:5"} & set(table)


@pytest.mark.parametrize(
    ("name", "ratio", "expected"),
    [
        ("256px", "16:9", (192, 336)), ("256px", "1:1", (256, 256)),
        ("256px", "2.39:1", (160, 384)), ("768px", "16:9", (576, 1024)),
        ("768px", "9:16", (1024, 576)), ("768px", "1:1", (768, 768)),
    ],
)  # fmt: skip
def test_inference_examples(name: str, ratio: str, expected: tuple[int, int]) -> None:
    assert image_size(name, ratio, training=False) == expected


def test_inference_tables_keep_every_ratio() -> None:
    table = aspect_ratio_table(65536, training=False)
    assert len(table) == 15  # 9 ratios + 6 new vertical names, no dedup
    assert table["1.85:1"] == table["16:9"] == (192, 336)


def test_spatial_compression_32_gives_multiples_of_32() -> None:
    for name in ("256px", "768px", "1024px"):
        total, table = resolution_table(name, spatial_compression=32)
        assert all(h % 32 == 0 and w % 32 == 0 for h, w in table.values())
        assert all(abs(h * w - total) / total < 0.15 for h, w in table.values())
    assert aspect_ratio_table(65536, 32) != aspect_ratio_table(65536, 16)


@pytest.mark.parametrize(
    ("name", "pixels"),
    [("256px", 65536), ("768px", 589824), ("720p", 921600), ("1080p", 2073600),
     ("360p", 230400), ("256px_ar1:1", 65536), ("768px_max", 589824)],
)  # fmt: skip
def test_num_pixels(name: str, pixels: int) -> None:
    assert num_pixels(name) == pixels


def test_suffixes_select_ratios() -> None:
    assert resolution_table("256px_ar1:1") == (65536, {"1:1": (256, 256)})
    assert resolution_table("768px_ar9:16") == (589824, {"9:16": (1024, 576)})
    _, table = resolution_table("256px")
    largest = max(table, key=lambda r: table[r][0] * table[r][1])
    assert resolution_table("256px_max") == (65536, {largest: table[largest]})


@pytest.mark.parametrize(
    "name", ["256", "256pxx", "px", "abc", "0px", "256px_foo", "256px_ar1:1_max", "256PX", ""]
)
def test_invalid_names_say_what_is_valid(name: str) -> None:
    with pytest.raises(ValueError, match=r"invalid resolution name .*expected '\{N\}px'"):
        resolution_table(name)


def test_ratio_missing_from_table_lists_the_available_ones() -> None:
    with pytest.raises(
        ValueError, match="'1.85:1' is not in the training table.*available: 2.39:1"
    ):
        resolution_table("256px_ar1.85:1")
    assert resolution_table("256px_ar1.85:1", training=False)[1] == {"1.85:1": (192, 336)}


@pytest.mark.parametrize("d", [0, -16, 16.0, "16", True])
def test_invalid_spatial_compression(d: object) -> None:
    with pytest.raises(ValueError, match="spatial_compression"):
        aspect_ratio_table(65536, d)  # type: ignore[arg-type]


def test_too_small_resolution_raises() -> None:
    with pytest.raises(ValueError, match="too small"):
        resolution_table("8px")


def test_closest_ratio_examples_and_ties() -> None:
    assert get_closest_ratio(1080, 1920, TABLE_256PX) == "16:9"
    assert get_closest_ratio(1920, 1080, TABLE_256PX) == "9:16"
    assert get_closest_ratio(1000, 1000, TABLE_256PX) == "1:1"
    assert get_closest_ratio(1000, 1850, TABLE_256PX) == "16:9"  # 1.85:1 was deduplicated
    assert get_closest_ratio(1000, 1850, TABLE_768PX) == "1.85:1"
    # 224/256 = 0.875 is exactly between 4:3 (0.75) and 1:1 (1.0): the earlier name wins.
    assert get_closest_ratio(224, 256, TABLE_256PX) == "4:3"
    assert closest_ratio_indices(np.array([224]), np.array([256]), TABLE_256PX)[0] == 5


@pytest.mark.parametrize("table", [TABLE_256PX, TABLE_768PX, {"1:1": (256, 256)}])
def test_vectorised_closest_ratio_equals_scalar(table: dict) -> None:
    rng = np.random.default_rng(7)
    heights = rng.integers(1, 4000, 3000)
    widths = rng.integers(1, 4000, 3000)
    # Add exact midpoints between neighbouring ratios (ties) and the ratios themselves.
    values = sorted(ratio_value(name) for name in table)
    points = values + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    for point in points:
        width = 1 << 20
        heights = np.append(heights, round(point * width))
        widths = np.append(widths, width)
    names = get_closest_ratios(heights, widths, table)
    expected = [get_closest_ratio(h, w, table) for h, w in zip(heights, widths, strict=True)]
    assert names.tolist() == expected


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(30, (15, 2)), (60, (20, 3)), (25, (12, 2)), (24, (24, 1)), (23.976, (23.976, 1)),
     (48, (24, 2)), (0.0, (0.0, 1)), (float("nan"), (0, 1)), (None, (0, 1))],
)  # fmt: skip
def test_map_target_fps_reference_examples(fps: float | None, expected: tuple) -> None:
    assert map_target_fps(fps, 24) == expected


def test_map_target_fps_unlimited() -> None:
    assert map_target_fps(240.0, None) == (240.0, 1)
    new_fps, interval = map_target_fps(np.array([240.0, np.nan]), None)
    assert new_fps.tolist() == [240.0, 0.0] and interval.tolist() == [1, 1]


@pytest.mark.parametrize("fps_max", [24, 16, 30.5, 1])
def test_vectorised_map_target_fps_equals_scalar(fps_max: float) -> None:
    rng = np.random.default_rng(3)
    fps = np.concatenate([rng.uniform(0, 130, 2000), [np.nan, 24, 48, 72, 23.976, 29.97, 120]])
    new_fps, interval = map_target_fps(fps, fps_max)
    assert new_fps.dtype == np.float64 and interval.dtype == np.int64
    for value, got_fps, got_interval in zip(fps, new_fps, interval, strict=True):
        want_fps, want_interval = map_target_fps(float(value), fps_max)
        assert (got_fps, got_interval) == (want_fps, want_interval)
        assert isinstance(want_interval, int)


def test_map_target_fps_series_keeps_index() -> None:
    fps = pd.Series([30.0, np.nan, 12.0], index=[10, 20, 30])
    new_fps, interval = map_target_fps(fps, 24)
    assert new_fps.tolist() == [15.0, 0.0, 12.0] and interval.tolist() == [2, 1, 1]
    assert list(new_fps.index) == list(interval.index) == [10, 20, 30]


@pytest.mark.parametrize("fps_max", [0, -1, float("nan"), math.inf])
def test_map_target_fps_rejects_bad_limits(fps_max: float) -> None:
    with pytest.raises(ValueError, match="fps_max"):
        map_target_fps(30.0, fps_max)


def test_map_target_fps_rejects_infinite_fps_in_arrays() -> None:
    with pytest.raises(ValueError, match="finite"):
        map_target_fps(np.array([np.inf]), 24)


def test_aspect_ratio_frame() -> None:
    frame = aspect_ratio_frame(["256px", "768px"])
    assert list(frame.columns) == [
        "resolution", "num_pixels", "ratio", "ratio_value", "height", "width",
    ]  # fmt: skip
    assert len(frame) == 26
    row = frame[(frame.resolution == "768px") & (frame.ratio == "5:8")].iloc[0]
    assert (row.height, row.width, row.ratio_value) == (992, 592, 1.6)

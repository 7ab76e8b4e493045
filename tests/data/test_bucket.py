"""Bucket assignment: config parsing, every rule of Open-Sora's get_bucket_id (§3.2), and the
vectorised assignment against the row-by-row reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opensora_kedro.data.bucket import OUTPUT_COLUMNS, SKIP_REASONS, assign_buckets
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.bucket_random import row_seed, row_seeds, uniform, uniform_array
from tests.data.bucket_reference import assign_buckets_reference, get_bucket_id

NAN = float("nan")
# Open-Sora's stage1 bucket_config (brief §1.3).
STAGE1 = {
    "256px": {
        1: (1.0, 45),
        **{t: (1.0, 12) for t in range(5, 34, 4)},
        **{t: (1.0, 6) for t in range(37, 66, 4)},
        **{t: (1.0, 4) for t in range(69, 98, 4)},
        **{t: (1.0, 3) for t in range(101, 130, 4)},
    },
    "768px": {1: (0.5, 13)},
    "1024px": {1: (0.5, 7)},
}
SIMPLE = {  # listed smallest first on purpose: the order must come from the pixel counts
    "256px": {1: (1.0, 50), 33: (1.0, 12), 65: (1.0, 6), 97: (1.0, 4), 129: (1.0, 3)},
    "768px": {1: (1.0, 13), 33: (1.0, 4), 65: (1.0, 2)},
}


def make_table(*rows: tuple, index: list | None = None) -> pd.DataFrame:
    """Rows of (num_frames, height, width, fps)."""
    columns = ["num_frames", "height", "width", "fps"]
    return pd.DataFrame(list(rows), columns=columns, index=index).astype({"fps": float})


def assign(rows: list[tuple], raw: dict, *, seed: int = 0, epoch: int = 0, fps_max=24):
    config = BucketConfig.from_dict(raw)
    return assign_buckets(make_table(*rows), config, seed=seed, epoch=epoch, fps_max=fps_max)


def buckets(frame: pd.DataFrame) -> list[tuple]:
    return list(zip(frame.bucket_resolution, frame.bucket_num_frames, strict=True))


def random_table(n: int, seed: int) -> pd.DataFrame:
    """A mix of images, short and long clips, many sizes (some too small) and frame rates."""
    rng = np.random.default_rng(seed)
    sizes = np.array(
        [(1080, 1920), (1920, 1080), (720, 1280), (480, 854), (360, 640), (240, 426),
         (2160, 3840), (1024, 1024), (768, 768), (256, 256), (200, 200), (144, 256)]
    )  # fmt: skip
    hw = sizes[rng.integers(0, len(sizes), n)] + rng.integers(-40, 41, (n, 2))
    image = rng.random(n) < 0.25
    fps = rng.choice([12.0, 23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 60.0, 120.0], n)
    frames = rng.integers(1, 400, n)
    return pd.DataFrame(
        {
            "num_frames": np.where(image, 1, frames),
            "height": hw[:, 0],
            "width": hw[:, 1],
            "fps": np.where(image, np.nan, fps),
        }
    )


# --- config -----------------------------------------------------------------------------


def test_config_orders_resolutions_and_frame_keys() -> None:
    config = BucketConfig.from_dict(SIMPLE)
    assert config.names == ("768px", "256px")
    assert config.resolution("256px").frames == (129, 97, 65, 33, 1)
    assert config.num_bucket == 3 * 15 + 5 * 11
    assert BucketConfig.from_dict(STAGE1).num_bucket == 33 * 11 + 15 + 15
    assert config.batch_size("256px", 33) == 12 and config.batch_size("768px", 1) == 13


def test_config_accepts_the_yaml_shape() -> None:
    yaml_like = {"256px": {"1": [1.0, 50], "33": [[0.5, 0.25], 12]}}
    config = BucketConfig.from_dict(yaml_like)
    res = config.resolution("256px")
    assert res.frames == (33, 1) and res.keep_probs == (0.5, 1.0)
    assert res.skip_probs == (0.25, None) and res.batch_sizes == (12, 50)
    assert config.to_dict() == {"256px": {33: ((0.5, 0.25), 12), 1: (1.0, 50)}}
    assert BucketConfig.from_dict(config.to_dict()) == config


def test_merge_flag_is_ignored() -> None:
    assert BucketConfig.from_dict({"_delete_": True, **SIMPLE}) == BucketConfig.from_dict(SIMPLE)
    with pytest.raises(ValueError, match="no resolutions"):
        BucketConfig.from_dict({"_delete_": True})


def test_global_batch_size_overrides_and_allows_bare_probabilities() -> None:
    config = BucketConfig.from_dict({"256px": {1: 1.0, 33: (0.5, 12)}}, batch_size=8)
    assert config.batch_size("256px", 1) == config.batch_size("256px", 33) == 8


def test_spatial_compression_changes_the_tables() -> None:
    config = BucketConfig.from_dict(SIMPLE, spatial_compression=32)
    assert all(h % 32 == 0 for h in config.resolution("256px").heights)
    assert config.spatial_compression == 32


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"256pix": {1: (1.0, 1)}}, r"bucket_config\.256pix: invalid resolution name"),
        ({"256px": {33: (1.5, 1)}}, r"bucket_config\.256px\.33: probability 1\.5 is outside"),
        ({"256px": {33: (-0.1, 1)}}, r"bucket_config\.256px\.33: probability"),
        ({"256px": {33: (NAN, 1)}}, r"bucket_config\.256px\.33: probability"),
        ({"256px": {33: ((0.5, 2.0), 1)}}, r"bucket_config\.256px\.33: probability 2\.0"),
        ({"256px": {33: ((0.5,), 1)}}, r"bucket_config\.256px\.33: a probability pair"),
        ({"256px": {33: ("high", 1)}}, r"bucket_config\.256px\.33: probability 'high'"),
        ({"256px": {33: (1.0, 0)}}, r"bucket_config\.256px\.33: batch size 0"),
        ({"256px": {33: (1.0, -4)}}, r"bucket_config\.256px\.33: batch size -4"),
        ({"256px": {33: (1.0, 2.5)}}, r"bucket_config\.256px\.33: batch size 2\.5"),
        ({"256px": {33: (1.0, True)}}, r"bucket_config\.256px\.33: batch size True"),
        ({"256px": {33: (1.0,)}}, r"bucket_config\.256px\.33: no batch size"),
        ({"256px": {33: (1.0, 1, 2)}}, r"bucket_config\.256px\.33: expected \(prob, batch_size\)"),
        ({"256px": {"abc": (1.0, 1)}}, r"bucket_config\.256px\.abc: frame key 'abc' is not an int"),
        ({"256px": {33.0: (1.0, 1)}}, r"bucket_config\.256px\.33\.0: frame key 33\.0 is not"),
        ({"256px": {0: (1.0, 1)}}, r"bucket_config\.256px\.0: frame key 0 must be at least 1"),
        ({"256px": {1: (1.0, 1), "1": (1.0, 1)}}, r"bucket_config\.256px\.1: .*given twice"),
        ({"256px": {}}, r"bucket_config\.256px: expected a non-empty mapping"),
        ({"256px": [1, 2]}, r"bucket_config\.256px: expected a non-empty mapping"),
        ({}, r"bucket_config: expected a non-empty mapping"),
    ],
)
def test_config_errors_name_the_key_path(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BucketConfig.from_dict(raw)


def test_unknown_bucket_lookups_raise_key_error() -> None:
    config = BucketConfig.from_dict(SIMPLE)
    with pytest.raises(KeyError):
        config.batch_size("1024px", 1)
    with pytest.raises(KeyError):
        config.batch_size("256px", 5)


# --- the rules --------------------------------------------------------------------------


def test_area_gate_is_point_eight_of_the_pixel_count() -> None:
    # 768px: P = 589824, 0.8 P = 471859.2; 256px: 0.8 P = 52428.8
    out = assign(
        [(1, 471860, 1, NAN), (1, 471859, 1, NAN), (1, 52429, 1, NAN), (1, 52428, 1, NAN)],
        SIMPLE,
    )
    assert list(out.bucket_resolution) == ["768px", "256px", "256px", None]
    assert list(out.skip_reason) == [None, None, None, "too_small"]


def test_resolutions_are_tried_largest_first() -> None:
    raw = {
        "256px": {1: (1.0, 1)},
        "1024px": {1: (1.0, 1)},
        "768px": {1: (1.0, 1)},
    }
    # 720x1280 is 88% of 1024px, so it lands there; 600x1000 only passes the 768px gate.
    rows = [(1, 1080, 1920, NAN), (1, 720, 1280, NAN), (1, 600, 1000, NAN), (1, 300, 300, NAN)]
    out = assign(rows, raw)
    assert list(out.bucket_resolution) == ["1024px", "1024px", "768px", "256px"]


def test_largest_frame_key_not_above_the_fps_reduced_length() -> None:
    rows = [
        (100, 720, 1280, 24.0),  # T_eff 100 -> 97 (768px has no 97: 65 there)
        (100, 400, 400, 24.0),  # 256px only: 97
        (100, 400, 400, 60.0),  # interval 3, T_eff 33 -> 33
        (129, 400, 400, 30.0),  # interval 2, T_eff 64 -> 33
        (130, 400, 400, 30.0),  # interval 2, T_eff 65 -> 65
        (500, 400, 400, 23.976),  # longer than every key: cropped to 129
        (32, 400, 400, 24.0),  # below 33: too short (never a 1-frame bucket)
    ]
    out = assign(rows, SIMPLE)
    assert buckets(out) == [
        ("768px", 65), ("256px", 97), ("256px", 33), ("256px", 33), ("256px", 65),
        ("256px", 129), (None, 0),
    ]  # fmt: skip
    assert list(out.sampling_interval) == [1, 1, 3, 2, 2, 1, 1]
    assert out.skip_reason.iloc[-1] == "too_short"


def test_fps_max_none_means_no_reduction() -> None:
    out = assign([(100, 400, 400, 60.0)], SIMPLE, fps_max=None)
    assert buckets(out) == [("256px", 97)] and out.sampling_interval.iloc[0] == 1


def test_images_only_go_to_one_frame_buckets() -> None:
    raw = {"768px": {33: (1.0, 2)}, "256px": {1: (1.0, 50), 33: (1.0, 12)}}
    rows = [
        (1, 720, 1280, NAN),  # 768px has no 1 key: falls through to 256px's
        (3, 720, 1280, 60.0),  # a video with T_eff 1 counts as an image
        (2, 720, 1280, 60.0),  # T_eff 0: a video that fits no key
    ]
    out = assign(rows, raw)
    assert buckets(out) == [("256px", 1), ("256px", 1), (None, 0)]
    assert list(out.skip_reason) == [None, None, "too_short"]
    no_image_bucket = assign([(1, 720, 1280, NAN)], {"256px": {33: (1.0, 12)}})
    assert no_image_bucket.skip_reason.iloc[0] == "image_without_1_frame_bucket"


def test_videos_never_go_to_one_frame_buckets() -> None:
    out = assign([(20, 400, 400, 24.0)], {"256px": {1: (1.0, 50), 33: (1.0, 12)}})
    assert buckets(out) == [(None, 0)] and out.skip_reason.iloc[0] == "too_short"


def test_probability_zero_falls_back_to_the_next_resolution() -> None:
    raw = {"768px": {1: (0.0, 13), 65: (0.0, 2)}, "256px": {1: (1.0, 50), 65: (1.0, 6)}}
    out = assign([(1, 720, 1280, NAN), (100, 720, 1280, 24.0)], raw)
    assert buckets(out) == [("256px", 1), ("256px", 65)]


def test_rejected_at_every_resolution_is_dropped_by_probability() -> None:
    out = assign([(1, 400, 400, NAN), (40, 400, 400, 24.0)], {"256px": {1: (0.0, 1), 33: (0.0, 1)}})
    assert buckets(out) == [(None, 0), (None, 0)]
    assert list(out.skip_reason) == ["dropped_by_probability"] * 2


def test_a_rejected_video_breaks_to_the_next_resolution_not_the_next_key() -> None:
    # At 768px the 65 key rejects; the 33 key of the same resolution is not tried.
    raw = {"768px": {65: (0.0, 2), 33: (1.0, 4)}, "256px": {65: (1.0, 6)}}
    out = assign([(100, 720, 1280, 24.0)], raw)
    assert buckets(out) == [("256px", 65)]


def test_two_probability_form_skips_to_shorter_keys() -> None:
    always = {"256px": {65: ((1.0, 1.0), 6), 33: (1.0, 12)}}
    never = {"256px": {65: ((1.0, 0.0), 6), 33: (1.0, 12)}}
    assert buckets(assign([(100, 400, 400, 24.0)], always)) == [("256px", 33)]
    assert buckets(assign([(100, 400, 400, 24.0)], never)) == [("256px", 65)]
    # Skipping past the last key falls back to the next resolution.
    raw = {"768px": {33: ((1.0, 1.0), 4)}, "256px": {33: (1.0, 12)}}
    assert buckets(assign([(100, 720, 1280, 24.0)], raw)) == [("256px", 33)]
    # ...and where there is none, the row is dropped by probability, not too short.
    out = assign([(100, 720, 1280, 24.0)], {"256px": {33: ((1.0, 1.0), 4)}})
    assert out.skip_reason.iloc[0] == "dropped_by_probability"


def test_two_probability_form_on_the_image_key_uses_the_keep_probability() -> None:
    out = assign([(1, 400, 400, NAN)], {"256px": {1: ((1.0, 1.0), 50)}})
    assert buckets(out) == [("256px", 1)]


def test_aspect_height_width_and_batch_size_come_from_the_chosen_bucket() -> None:
    out = assign([(100, 1080, 1920, 24.0), (1, 1920, 1080, NAN), (40, 500, 500, 24.0)], SIMPLE)
    assert list(out.bucket_aspect) == ["16:9", "9:16", "1:1"]
    assert list(zip(out.bucket_height, out.bucket_width, strict=True)) == [
        (576, 1024), (1024, 576), (256, 256),
    ]  # fmt: skip
    assert list(out.batch_size) == [2, 13, 12]
    # 1000x1850 is 1.85:1, which 256px deduplicated away: 16:9 is the closest there.
    out = assign([(1, 1000, 1850, NAN)], {"256px": {1: (1.0, 1)}})
    assert (out.bucket_aspect.iloc[0], out.bucket_height.iloc[0]) == ("16:9", 192)


def test_output_columns_types_and_unassigned_values() -> None:
    out = assign([(1, 400, 400, NAN), (1, 10, 10, NAN)], SIMPLE)
    assert list(out.columns) == OUTPUT_COLUMNS
    for column in ("bucket_resolution", "bucket_aspect", "skip_reason"):
        assert out[column].dtype == object
    unassigned = out.iloc[1]
    assert unassigned.bucket_resolution is None and unassigned.bucket_aspect is None
    assert (unassigned.bucket_num_frames, unassigned.bucket_height, unassigned.batch_size) == (
        0, 0, 0,
    )  # fmt: skip
    assert out.iloc[0].skip_reason is None and unassigned.skip_reason == "too_small"
    assert set(SKIP_REASONS) == {
        "too_small", "too_short", "image_without_1_frame_bucket", "dropped_by_probability",
    }  # fmt: skip


def test_empty_table() -> None:
    out = assign_buckets(make_table(), BucketConfig.from_dict(SIMPLE), seed=0, epoch=0, fps_max=24)
    assert list(out.columns) == OUTPUT_COLUMNS and out.empty


def test_table_validation() -> None:
    config = BucketConfig.from_dict(SIMPLE)
    with pytest.raises(ValueError, match=r"lacks columns \['fps'\]"):
        assign_buckets(make_table().drop(columns="fps"), config, seed=0, epoch=0, fps_max=24)
    with pytest.raises(ValueError, match="'height' must hold whole numbers"):
        assign_buckets(make_table((1, NAN, 10, NAN)), config, seed=0, epoch=0, fps_max=24)


# --- randomness and determinism ---------------------------------------------------------

HALF = {
    "768px": {1: (0.5, 13), 65: (0.3, 2)},
    "256px": {1: (1.0, 50), 33: ((1.0, 0.25), 12), 65: (1.0, 6)},
}


def test_uniform_scalar_and_vectorised_agree() -> None:
    seeds = np.array([row_seed(42, 3, r, 423) for r in range(500)] + [0, 2**64 - 1], np.uint64)
    for draw in (0, 1, 17):
        vector = uniform_array(seeds, draw)
        assert vector.tolist() == [uniform(int(s), draw) for s in seeds]
        assert ((vector >= 0) & (vector < 1)).all()
    assert row_seeds(np.arange(500), 42, 3, 423).tolist() == seeds[:500].tolist()
    assert row_seed(-5, 0, 2, 10) == 15 and row_seed(-5, 0, 0, 10) == 2**64 - 5
    assert row_seeds(np.array([0]), -5, 0, 10).tolist() == [2**64 - 5]


def test_uniform_looks_uniform() -> None:
    u = uniform_array(row_seeds(np.arange(200_000), 0, 0, 423), 0)
    assert abs(u.mean() - 0.5) < 0.005
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 19_000 and counts.max() < 21_000
    other = uniform_array(row_seeds(np.arange(200_000), 0, 0, 423), 1)
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.01


def test_deterministic_per_seed_and_epoch() -> None:
    table = random_table(3000, seed=1)
    config = BucketConfig.from_dict(HALF)
    first = assign_buckets(table, config, seed=42, epoch=0, fps_max=24)
    again = assign_buckets(table, config, seed=42, epoch=0, fps_max=24)
    pd.testing.assert_frame_equal(first, again)
    next_epoch = assign_buckets(table, config, seed=42, epoch=1, fps_max=24)
    other_seed = assign_buckets(table, config, seed=7, epoch=0, fps_max=24)
    assert (first.bucket_resolution != next_epoch.bucket_resolution).mean() > 0.05
    assert (first.bucket_resolution != other_seed.bucket_resolution).mean() > 0.05


def test_row_ids_are_the_index_values() -> None:
    table = random_table(2000, seed=2)
    config = BucketConfig.from_dict(HALF)
    out = assign_buckets(table, config, seed=3, epoch=1, fps_max=24)
    shuffled = table.sample(frac=1.0, random_state=0)
    again = assign_buckets(shuffled, config, seed=3, epoch=1, fps_max=24)
    pd.testing.assert_frame_equal(again.sort_index(), out)
    # A non-integer index falls back to positions.
    labelled = table.set_axis([f"clip{i}" for i in range(len(table))])
    by_position = assign_buckets(labelled, config, seed=3, epoch=1, fps_max=24)
    np.testing.assert_array_equal(by_position.to_numpy(), out.to_numpy())


def test_probabilities_are_roughly_honoured() -> None:
    n = 20_000
    images = make_table(*[(1, 720, 1280, NAN)] * n)
    videos = make_table(*[(100, 720, 1280, 24.0)] * n)
    small_videos = make_table(*[(40, 400, 400, 24.0)] * n)
    config = BucketConfig.from_dict(HALF)
    run = {"config": config, "seed": 5, "epoch": 2, "fps_max": 24}
    image_out = assign_buckets(images, **run)
    assert abs((image_out.bucket_resolution == "768px").mean() - 0.5) < 0.02
    assert set(image_out.bucket_resolution) == {"768px", "256px"}
    video_out = assign_buckets(videos, **run)
    assert abs((video_out.bucket_resolution == "768px").mean() - 0.3) < 0.02
    assert set(buckets(video_out)) == {("768px", 65), ("256px", 65)}
    skip_out = assign_buckets(small_videos, **run)
    assert abs((skip_out.skip_reason == "dropped_by_probability").mean() - 0.25) < 0.02


# --- vectorised == row by row -----------------------------------------------------------

ALL_ONE = {
    "1024px": {1: (1.0, 7), 129: (1.0, 1)},
    "768px": {1: (1.0, 13), 33: (1.0, 4), 65: (1.0, 2), 97: (1.0, 1)},
    "256px": STAGE1["256px"],
    "256px_ar1:1": {1: (1.0, 60), 17: (1.0, 20)},
}
MIXED = {
    "1080p": {1: (0.5, 2), 33: ((0.7, 0.4), 1)},
    "768px": {1: (0.5, 13), 33: (0.5, 4), 65: ((0.6, 0.5), 2), 97: ((1.0, 0.3), 1)},
    "256px": {1: (0.9, 50), 5: (1.0, 20), 33: ((0.8, 0.2), 12), 65: (1.0, 6), 129: (0.5, 3)},
    "256px_max": {1: (1.0, 40)},
}


@pytest.mark.parametrize("table_seed", [0, 1, 2])
@pytest.mark.parametrize("fps_max", [24, 16, None])
def test_all_ones_matches_the_row_by_row_reference(table_seed: int, fps_max) -> None:
    table = random_table(1500, seed=table_seed)
    config = BucketConfig.from_dict(ALL_ONE)
    out = assign_buckets(table, config, seed=table_seed, epoch=0, fps_max=fps_max)
    pd.testing.assert_frame_equal(
        out, assign_buckets_reference(table, config, seed=table_seed, epoch=0, fps_max=fps_max)
    )
    assert (out.bucket_num_frames > 0).mean() > 0.5  # the table exercises real buckets
    assert "dropped_by_probability" not in set(out.skip_reason)
    for row in table.head(200).itertuples():
        bucket = get_bucket_id(
            row.num_frames, row.height, row.width, row.fps, row.Index, config,
            seed=table_seed, epoch=0, fps_max=fps_max,
        )  # fmt: skip
        got = out.loc[row.Index]
        expected = (got.bucket_resolution, got.bucket_num_frames, got.bucket_aspect)
        assert bucket == (None if got.bucket_resolution is None else expected)


@pytest.mark.parametrize(("table_seed", "epoch"), [(3, 0), (4, 1), (5, 9)])
def test_random_probabilities_match_the_row_by_row_reference(table_seed: int, epoch: int) -> None:
    table = random_table(1500, seed=table_seed)
    config = BucketConfig.from_dict(MIXED)
    out = assign_buckets(table, config, seed=11, epoch=epoch, fps_max=24)
    reference = assign_buckets_reference(table, config, seed=11, epoch=epoch, fps_max=24)
    pd.testing.assert_frame_equal(out, reference)
    assert set(out.skip_reason.dropna()) == set(SKIP_REASONS) - {"image_without_1_frame_bucket"}

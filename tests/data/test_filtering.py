import math

import pandas as pd

from opensora_kedro.data.filtering import filter_table
from opensora_kedro.data.params import FilterParams


def _table():
    return pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e", "a", "g"],
            "text": ["x", "x", "x", "x", " ", "x", "x"],
            "num_frames": [1, 5, 50, 200, 50, 50, 50],
            "height": [64, 64, 32, 64, 64, 64, 64],
            "width": [64, 64, 64, 64, 64, 64, 64],
            "resolution": [4096, 4096, 2048, 4096, 4096, 4096, 4096],
            "fps": [math.nan, 24.0, 24.0, 24.0, 24.0, 24.0, 120.0],
            "score_vmafmotion": [0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
        }
    )


def test_every_removed_clip_names_its_rule():
    rules = FilterParams(min_frames=2, max_frames=100, min_height=48, max_fps=60)
    kept, rejected = filter_table(_table(), rules)
    assert list(kept["path"]) == ["b"]
    assert list(zip(rejected["path"], rejected["reason"], strict=True)) == [
        ("a", "too_few_frames"), ("d", "too_many_frames"), ("c", "too_low"),
        ("g", "fps_too_high"), ("e", "empty_caption"), ("a", "duplicate_path"),
    ]  # fmt: skip
    assert set(rejected["stage"]) == {"filter"}
    assert rejected.set_index("reason").loc["too_few_frames", "detail"] == "num_frames < 2"


def test_images_without_fps_pass_fps_bounds_and_motion_range_applies():
    kept, rejected = filter_table(
        _table(), FilterParams(min_fps=10, min_motion=1.0, max_motion=5.0)
    )
    assert "a" not in set(kept["path"])  # motion 0 < 1
    assert set(rejected["reason"]) == {"motion_too_low", "empty_caption", "duplicate_path"}


def test_no_rules_keeps_everything_but_switches_can_be_turned_off():
    rules = FilterParams(remove_duplicate_paths=False, remove_empty_captions=False)
    kept, rejected = filter_table(_table(), rules)
    assert len(kept) == 7 and rejected.empty

import math

import pandas as pd
import pytest

from opensora_kedro.data.training_table import build_training_table, caption_suffix
from opensora_kedro.hashing import caption_hash


@pytest.mark.parametrize(
    ("fps", "motion", "fps_max", "vmaf", "suffix"),
    [
        (24.0, 4.6, 24, True, " 24 FPS, 5 motion score."),  # Open-Sora's own example
        (30.0, 4.4, 24, True, " 15 FPS, 4 motion score."),  # 30 -> interval 2 -> 15
        (60.0, 0.49, 24, True, " 20 FPS, 0 motion score."),
        (23.976, 1.5, 24, True, " 23.976 FPS, 2 motion score."),
        (12.0, 1.0, 24, False, " 12 FPS."),
        (math.nan, 0.0, 24, True, " 0 motion score."),  # a still: no FPS part
        (24.0, math.nan, 24, True, " 24 FPS."),
        (24.0, 2.0, None, True, " 2 motion score."),  # unlimited fps_max: no FPS part
        (24.0, 2.0, None, False, ""),
    ],
)
def test_caption_suffix_follows_open_sora(fps, motion, fps_max, vmaf, suffix):
    assert caption_suffix(fps, motion, fps_max, vmaf) == suffix


def test_training_table_keeps_the_raw_caption_and_hashes_the_training_text():
    table = pd.DataFrame(
        {"text": ["A dog runs on a beach. "], "fps": [24.0], "score_vmafmotion": [5.2]}
    )
    out = build_training_table(table, fps_max=24, vmaf=True)
    assert out.loc[0, "text"] == "A dog runs on a beach. 24 FPS, 5 motion score."
    assert out.loc[0, "caption"] == "A dog runs on a beach. "
    assert out.loc[0, "caption_hash"] == caption_hash(out.loc[0, "text"])

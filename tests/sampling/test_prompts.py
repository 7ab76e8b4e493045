import pandas as pd
import pytest

from opensora_kedro.sampling.prompts import (
    add_fps_info_to_text,
    add_inference_suffix,
    add_motion_score_to_text,
    resolve_motion_score,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("raining, sea", "raining, sea. 24 FPS."),
        ("  raining, sea.  ", "raining, sea. 24 FPS."),
        ("a cat. 16 FPS.", "a cat. 16 FPS."),  # already states a frame rate
        ("a cat. 16 FPS", "a cat. 16 FPS."),  # the "." is added first, then it matches
        ("a cat at FPS.", "a cat at FPS. 24 FPS."),  # no digits: not a frame rate
    ],
)
def test_fps_suffix(text: str, expected: str) -> None:
    assert add_fps_info_to_text(text, 24) == expected


def test_fps_suffix_list_and_float() -> None:
    assert add_fps_info_to_text(["a", "b."], 23.976) == ["a. 23.976 FPS.", "b. 23.976 FPS."]


def test_motion_score_suffix() -> None:
    assert add_motion_score_to_text("a dog", 4) == "a dog. 4 motion score."
    assert add_motion_score_to_text(["x. 24 FPS."], "7") == ["x. 24 FPS. 7 motion score."]
    assert add_motion_score_to_text("a dog", None) == "a dog"
    with pytest.raises(ValueError, match="dynamic"):
        add_motion_score_to_text("a dog", "dynamic")


def test_full_inference_suffix_matches_reference_example() -> None:
    assert add_inference_suffix("raining, sea") == "raining, sea. 24 FPS. 4 motion score."
    # separator differs from training's "24 FPS, 5 motion score." on purpose (brief §2.4)
    assert add_inference_suffix(["a"], fps=24, motion_score=5) == ["a. 24 FPS. 5 motion score."]


def test_training_style_is_the_training_captions_suffix() -> None:
    from opensora_kedro.data.training_table import build_training_table

    table = pd.DataFrame({"text": ["a red circle moving left"], "fps": [24.0],
                          "score_vmafmotion": [0.4]})  # fmt: skip
    trained_on = build_training_table(table, fps_max=24, vmaf=True)["text"].iloc[0]
    assert trained_on == "a red circle moving left 24 FPS, 0 motion score."
    assert add_inference_suffix("a red circle moving left ", 24, 0, "training") == trained_on
    assert add_inference_suffix(["a b"], 12, None, "training") == ["a b 12 FPS."]
    # Open-Sora's own inference form stays the default, for its released weights.
    assert add_inference_suffix("a red circle moving left", 24, 0) == (
        "a red circle moving left. 24 FPS. 0 motion score."
    )
    with pytest.raises(ValueError, match="suffix style"):
        add_inference_suffix("a", 24, 0, "other")  # type: ignore[arg-type]


def test_auto_motion_score_is_what_training_captions_state() -> None:
    table = pd.DataFrame({"score_vmafmotion": [0.2, 0.4, 1.6, 2.4, 0.1, float("nan")]})
    assert resolve_motion_score("auto", table) == 0
    assert (
        resolve_motion_score("auto", table.assign(score_vmafmotion=[3.0, 2.9, 0, 0, 3.4, 1])) == 3
    )
    assert resolve_motion_score(5, table) == 5 and resolve_motion_score("4", None) == "4"
    with pytest.raises(ValueError, match="training table"):
        resolve_motion_score("auto", pd.DataFrame())
    with pytest.raises(ValueError, match="'auto' is resolved"):
        add_inference_suffix("a", 24, "auto")

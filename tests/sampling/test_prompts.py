import pytest

from opensora_kedro.sampling.prompts import (
    add_fps_info_to_text,
    add_inference_suffix,
    add_motion_score_to_text,
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

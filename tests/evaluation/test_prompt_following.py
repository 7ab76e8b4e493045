"""Demo-prompt parsing, colour/direction scoring of clips, evaluation prompt choice, intervals."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from opensora_kedro.evaluation.prompt_following import (
    RESULT_COLUMNS,
    DemoPrompt,
    all_demo_prompts,
    evaluation_prompts,
    parse_prompt,
    prompt_following,
    result_label,
    summarize_following,
    wilson_interval,
)
from opensora_kedro.video.render import COLOURS, DIRECTIONS, SHAPES, ClipSpec, render_frames


def clip(colour: str, shape: str, direction: str, seed: int = 0) -> ClipSpec:
    return ClipSpec("c", colour, shape, direction, 48, 48, 24.0, 9, seed=seed)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle moving left", DemoPrompt("red", "circle", "left")),
        ("an orange triangle staying still", DemoPrompt("orange", "triangle", "static")),
        ("a blue square moving up 24 FPS, 5 motion score.", DemoPrompt("blue", "square", "up")),
        ("A Green Circle Moving Down.", DemoPrompt("green", "circle", "down")),
        ("a yellow square staying still 12 FPS.", DemoPrompt("yellow", "square", "static")),
        ("a pink circle moving left", None),  # not a palette colour
        ("a red hexagon moving left", None),
        ("a red circle moving static", None),
        ("a red circle moving leftwards", None),
        ("a cat playing piano", None),
    ],
)
def test_parse_prompt(prompt, expected):
    assert parse_prompt(prompt) == expected


def test_every_rendered_caption_parses_back():
    for combo in itertools.product(COLOURS, SHAPES, DIRECTIONS):
        spec = clip(*combo)
        assert parse_prompt(spec.caption) == DemoPrompt(*combo)
        assert DemoPrompt(*combo).text == spec.caption


def test_rendered_demo_clips_score_perfectly():
    specs = [clip(c, s, d, seed=i) for i, (c, s, d) in enumerate(
        zip(COLOURS, itertools.cycle(SHAPES), itertools.cycle(DIRECTIONS)))]  # fmt: skip
    videos = [render_frames(spec) for spec in specs]
    # One clip as a float [C, T, H, W] tensor in [-1, 1], as the VAE decoder gives it.
    videos[0] = torch.from_numpy(videos[0]).permute(3, 0, 1, 2).float() / 127.5 - 1
    table, summary = prompt_following(videos, [spec.caption + " 24 FPS." for spec in specs])
    assert list(table.columns) == RESULT_COLUMNS and len(table) == len(specs)
    assert table["colour_ok"].all() and table["direction_ok"].all(), table.to_string()
    assert {k: summary[k] for k in ("colour_accuracy", "direction_accuracy", "both_accuracy",
                                    "samples")} == {"colour_accuracy": 1.0,
            "direction_accuracy": 1.0, "both_accuracy": 1.0, "samples": float(len(specs))}  # fmt: skip
    assert summary["chance_colour"] == pytest.approx(1 / 6)
    assert summary["chance_direction"] == pytest.approx(1 / 5)


def test_wrong_colour_and_direction_count_as_wrong():
    videos = [render_frames(clip("blue", "circle", "left")),
              render_frames(clip("red", "square", "right")),
              render_frames(clip("green", "circle", "up"))]  # fmt: skip
    prompts = ["a red circle moving left", "a red square moving left",
               "a green circle moving up", "nonsense"][:3]  # fmt: skip
    table, summary = prompt_following(videos, prompts)
    assert table["colour_ok"].tolist() == [False, True, True]
    assert table["direction_ok"].tolist() == [True, False, True]
    assert table.loc[0, "measured_colour"] == "blue"
    assert summary["colour_accuracy"] == pytest.approx(2 / 3)
    assert summary["both_accuracy"] == pytest.approx(1 / 3)
    assert "WRONG" in result_label(table.iloc[0]) and "a red circle" in result_label(table.iloc[0])


def test_unparsed_prompts_are_kept_but_not_scored():
    table, summary = prompt_following([render_frames(clip("red", "circle", "left"))] * 2,
                                      ["a red circle moving left", "a cat"])  # fmt: skip
    assert table["parsed"].tolist() == [True, False]
    assert summary["samples"] == 1 and summary["colour_accuracy"] == 1.0
    empty, nothing = prompt_following([render_frames(clip("red", "circle", "left"))], ["a cat"])
    assert math.isnan(nothing["colour_accuracy"])
    with pytest.raises(ValueError, match="videos"):
        prompt_following([], ["a cat"])


def test_evaluation_prompts_split_unseen_and_seen_combinations_balanced():
    combos = all_demo_prompts()
    train = [p.text + " 24 FPS, 3 motion score." for p in combos[::2]]  # 45 of 90 seen
    asked = evaluation_prompts(train, 30, 12, seed=1)
    assert list(asked.columns) == ["prompt", "seen"] and len(asked) == 42
    parsed = [parse_prompt(p) for p in asked["prompt"]]
    seen = {parse_prompt(c) for c in train}
    assert [p in seen for p in parsed] == asked["seen"].tolist() == [False] * 30 + [True] * 12
    unseen = [p for p, s in zip(parsed, asked["seen"], strict=True) if not s]
    assert len(set(unseen)) == 30
    assert evaluation_prompts(train, 30, 12, seed=1).equals(asked)
    assert not evaluation_prompts(train, 30, 12, seed=2).equals(asked)
    colours = Counter(p.colour for p in unseen)
    directions = Counter(p.direction for p in unseen)
    assert set(colours) == set(COLOURS) and max(colours.values()) - min(colours.values()) <= 1
    assert set(directions) == set(DIRECTIONS)
    assert max(directions.values()) - min(directions.values()) <= 1


def test_evaluation_prompts_repeat_combinations_in_rounds():
    train = [p.text for p in all_demo_prompts()[:85]]
    asked = evaluation_prompts(train, 12, 0, seed=0)
    unseen = {p.text for p in all_demo_prompts()[85:]}
    # 5 unseen combinations: each asked for twice, then two of them a third time.
    counts = Counter(asked["prompt"])
    assert set(counts) == unseen and sorted(counts.values()) == [2, 2, 2, 3, 3]
    # More seen prompts than combinations: every combination once, then another round.
    many = evaluation_prompts([], 0, 0, seed=0)
    assert many.empty
    everything = evaluation_prompts([p.text for p in all_demo_prompts()], 10, 100, seed=0)
    assert everything["seen"].all() and len(everything) == 100  # no unseen combination left
    assert everything["prompt"].nunique() == 90


def test_wilson_interval_and_seen_groups():
    low, high = wilson_interval(27, 30)
    assert low == pytest.approx(0.7438, abs=1e-3) and high == pytest.approx(0.9654, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    videos = [
        render_frames(clip("red", "circle", "left")),
        render_frames(clip("red", "square", "up")),
    ]
    table, _ = prompt_following(videos, ["a red circle moving left", "a blue square moving up"],
                                seen=[False, True])  # fmt: skip
    summary = summarize_following(table)
    assert summary["unseen_colour_accuracy"] == 1.0 and summary["seen_colour_accuracy"] == 0.0
    assert summary["unseen_samples"] == summary["seen_samples"] == 1.0
    assert summary["colour_accuracy"] == 0.5 and summary["direction_accuracy"] == 1.0

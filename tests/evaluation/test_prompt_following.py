"""Demo-prompt parsing, colour/direction scoring of clips, and held-out prompt choice."""

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
    heldout_prompts,
    parse_prompt,
    prompt_following,
    result_label,
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
    assert summary == {"colour_accuracy": 1.0, "direction_accuracy": 1.0, "both_accuracy": 1.0,
                       "samples": float(len(specs))}  # fmt: skip


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


def test_heldout_prompts_avoid_training_combinations_and_balance():
    combos = all_demo_prompts()
    train = [p.text + " 24 FPS, 3 motion score." for p in combos[::2]]  # 45 of 90 seen
    prompts = heldout_prompts(train, 30, seed=1)
    parsed = [parse_prompt(p) for p in prompts]
    seen = {parse_prompt(c) for c in train}
    assert len(set(prompts)) == 30 and not seen & set(parsed)
    assert heldout_prompts(train, 30, seed=1) == prompts
    assert heldout_prompts(train, 30, seed=2) != prompts
    colours = Counter(p.colour for p in parsed)
    directions = Counter(p.direction for p in parsed)
    assert set(colours) == set(COLOURS) and max(colours.values()) - min(colours.values()) <= 1
    assert set(directions) == set(DIRECTIONS)
    assert max(directions.values()) - min(directions.values()) <= 1


def test_heldout_prompts_reuse_training_combinations_only_when_needed():
    train = [p.text for p in all_demo_prompts()[:85]]
    prompts = heldout_prompts(train, 12, seed=0)
    unseen = {p.text for p in all_demo_prompts()[85:]}
    assert unseen <= set(prompts) and len(set(prompts)) == 12
    # More prompts than combinations: every combination once, then another round.
    many = heldout_prompts([], 100, seed=0)
    assert len(set(many)) == 90 and len(many) == 100
    colours = Counter(parse_prompt(p).colour for p in heldout_prompts([], 12, seed=4))
    assert set(colours.values()) == {2}
    assert heldout_prompts([], 0) == []

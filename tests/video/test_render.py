import itertools
from collections import Counter

import numpy as np
import pytest

from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.video.codec import encode_image, encode_mp4
from opensora_kedro.video.decode import read_frames
from opensora_kedro.video.measure import dominant_colour, motion_direction
from opensora_kedro.video.render import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    ClipSpec,
    is_held_out,
    plan_demo_clips,
    render_frames,
)


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_caption_is_measurable_from_decoded_pixels(tmp_path, colour, direction):
    spec = ClipSpec("c", colour, "circle", direction, width=160, height=96, fps=24, num_frames=20)
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(render_frames(spec), spec.fps))
    frames = read_frames(path)
    assert frames.shape == (20, 96, 160, 3)
    assert dominant_colour(frames) == colour
    assert motion_direction(frames) == direction
    assert colour in spec.caption and (direction in spec.caption or direction == "static")


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_stays_inside_the_frame(shape):
    for direction in DIRECTIONS:
        spec = ClipSpec("c", "blue", shape, direction, width=64, height=112, fps=12, num_frames=9)
        frames = render_frames(spec)
        # the shape is fully visible in the first and the last frame: same pixel count
        counts = [(frame == COLOURS["blue"]).all(axis=-1).sum() for frame in frames[[0, -1]]]
        assert counts[0] > 0 and abs(counts[0] - counts[1]) <= 0.1 * counts[0]


def test_rendering_is_deterministic_by_seed():
    spec = ClipSpec("c", "red", "triangle", "left", 96, 64, 24, 5, seed=3)
    assert np.array_equal(render_frames(spec), render_frames(spec))
    other = ClipSpec("c", "red", "triangle", "left", 96, 64, 24, 5, seed=4)
    assert not np.array_equal(render_frames(spec), render_frames(other))  # another lane


def test_plan_is_deterministic_and_varied():
    kwargs = dict(
        num_clips=30, num_images=4, sizes=[(256, 144), (144, 256), (192, 192)],
        fps=[12, 24, 25, 30, 60], lengths=[1, 17, 65, 130], seed=0,
    )  # fmt: skip
    plan = plan_demo_clips(DemoDataParams(**kwargs))
    assert plan == plan_demo_clips(DemoDataParams(**kwargs))
    assert plan != plan_demo_clips(DemoDataParams(**{**kwargs, "seed": 1}))
    videos = [spec for spec in plan if spec.suffix == ".mp4"]
    stills = [spec for spec in plan if spec.suffix != ".mp4"]
    assert len(videos) == 30 and {spec.suffix for spec in stills} == {".png", ".jpg"}
    assert {spec.num_frames for spec in videos} >= {1, 130}
    assert {(spec.width > spec.height) - (spec.width < spec.height) for spec in plan} == {-1, 0, 1}
    assert {spec.colour for spec in plan} == set(COLOURS)
    assert {spec.direction for spec in videos} == set(DIRECTIONS)
    assert all(spec.direction == "static" for spec in plan if spec.num_frames == 1)


def test_held_out_combinations_are_never_rendered_but_their_parts_are():
    params = DemoDataParams(num_clips=180, num_images=4, sizes=[(64, 64)], fps=[24],
                            lengths=[1, 9, 17], seed=0, held_out_every=3)  # fmt: skip
    plan = plan_demo_clips(params)
    rendered = {(spec.colour, spec.shape, spec.direction) for spec in plan}
    every = set(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    held = {combo for combo in every if is_held_out(*combo, 3)}
    assert len(held) == 30 and not rendered & held and rendered == every - held
    # Every pair of parts still occurs, so each held-out combination is a new composition.
    for first, second in itertools.combinations(range(3), 2):
        assert {(c[first], c[second]) for c in rendered} == {(c[first], c[second]) for c in every}
    counts = Counter(spec.colour for spec in plan)
    assert max(counts.values()) - min(counts.values()) <= 2
    # Nothing held out: the plan is the one every combination cycles through.
    unset = dict(num_clips=30, num_images=4, sizes=[(64, 64)], fps=[24], lengths=[1, 9], seed=0)
    assert plan_demo_clips(DemoDataParams(**unset)) == plan_demo_clips(
        DemoDataParams(**unset, held_out_every=0)
    )
    assert not any(is_held_out(*combo, 0) for combo in every)


def test_caption_grammar():
    assert ClipSpec("c", "red", "circle", "left", 8, 8, 24, 2).caption == "a red circle moving left"
    assert (
        ClipSpec("c", "orange", "square", "static", 8, 8, 24, 2).caption
        == "an orange square staying still"
    )


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_images_decode_to_the_rendered_picture(tmp_path, suffix):
    spec = ClipSpec("s", "green", "square", "static", 96, 64, 0, 1, suffix=suffix)
    path = tmp_path / f"still{suffix}"
    path.write_bytes(encode_image(render_frames(spec)[0], suffix))
    frames = read_frames(path)
    assert frames.shape == (1, 64, 96, 3)
    assert dominant_colour(frames) == "green"


def test_odd_sizes_are_refused_for_h264():
    with pytest.raises(ValueError, match="even"):
        encode_mp4(np.zeros((2, 63, 64, 3), np.uint8), 24)

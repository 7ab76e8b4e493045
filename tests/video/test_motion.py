"""The VMAF motion score against libvmaf (the ffmpeg in the imageio-ffmpeg wheel), against
the libvmaf 3.0.0 values in ../shared/reference/vmaf-motion.md, and against hand-worked
and slow-loop examples of the blur."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from opensora_kedro.video.luma import iter_luma
from opensora_kedro.video.motion import (
    MotionAccumulator,
    MotionConfig,
    motion2_from_motion,
    motion_from_frames,
    motion_score,
)
from opensora_kedro.video.motion_kernel import INTEGER_TAPS, mirror_index
from tests.conftest import gradient_frames, write_audio, write_video
from tests.video.motion_reference import blur_float, blur_integer, clip_score, frame_motion

try:  # the dev extra's static ffmpeg with libvmaf: clips and the reference scores
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - the pure-numpy tests still run
    imageio_ffmpeg = None
needs_ffmpeg = pytest.mark.skipif(imageio_ffmpeg is None, reason="needs imageio-ffmpeg")
FFMPEG_TIMEOUT_S = 60
SIZE = "256x144"
# lavfi sources at 24 fps, 2 s (48 frames), except where a case says otherwise.
CLIPS = {
    "testsrc2": ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=24:duration=2"],
    "mandelbrot": ["-f", "lavfi", "-i", f"mandelbrot=size={SIZE}:rate=24", "-t", "2"],
    "life": ["-f", "lavfi", "-i", f"life=size={SIZE}:rate=24:seed=3:mold=10", "-t", "2"],
    "scroll": [
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=24:duration=2", "-vf", "scroll=h=0.02",
    ],
    "static": ["-f", "lavfi", "-i", f"color=c=0x5080a0:size={SIZE}:rate=24:duration=1"],
    "one_frame": ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=24", "-frames:v", "1"],
    "odd_size_yuv444": [
        "-f", "lavfi", "-i", "mandelbrot=size=97x61:rate=24", "-t", "1", "-pix_fmt", "yuv444p",
    ],
    # Full-range and gray luma reach libvmaf unconverted; RGB is converted to limited range.
    "full_range": [
        "-f", "lavfi", "-i", "mandelbrot=size=96x64:rate=24", "-t", "1", "-pix_fmt", "yuvj420p",
    ],
    "gray": ["-f", "lavfi", "-i", "mandelbrot=size=96x64:rate=24", "-t", "1", "-pix_fmt", "gray"],
    "rgb": ["-f", "lavfi", "-i", "mandelbrot=size=96x64:rate=24", "-t", "1", "-c:v", "libx264rgb"],
}  # fmt: skip
# libvmaf >= 3.2 calls the per-frame integer motion `..._motion_sad_score`, older builds
# `integer_motion`; the float feature appears as `motion` / `motion2`.
MOTION_KEYS = ("VMAF_integer_feature_motion_sad_score", "integer_motion")
# libvmaf's JSON prints 6 decimals: per-frame values agree to half a unit in the last place.
JSON_TOLERANCE = 5.01e-7


def run_ffmpeg(*args: str) -> None:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostats", "-loglevel", "error", *args]
    subprocess.run(command, check=True, timeout=FFMPEG_TIMEOUT_S)


def make_clip(path: Path, source_args: list[str]) -> Path:
    """Encode a lavfi source as H.264 yuv420p, unless the arguments name a codec or format."""
    codec = [] if "-c:v" in source_args else ["-c:v", "libx264"]
    pix_fmt = [] if {"-pix_fmt", "-c:v"} & set(source_args) else ["-pix_fmt", "yuv420p"]
    run_ffmpeg(*source_args, *codec, *pix_fmt, str(path))
    return path


def libvmaf_motion(clip: Path) -> dict[str, np.ndarray | float]:
    """Per-frame integer and float motion/motion2 from Open-Sora's ffmpeg + libvmaf command,
    and the clip score it keeps."""
    log = clip.with_suffix(".json")
    graph = (
        "[0:v]setpts=PTS-STARTPTS[ref];[1:v]setpts=PTS-STARTPTS[dis];"
        f"[dis][ref]libvmaf=log_fmt=json:log_path={log}:n_threads=2"
        ":feature=name=motion\\\\:debug=true|name=float_motion\\\\:debug=true"
    )
    inputs = ["-r", "24", "-i", str(clip), "-r", "24", "-i", str(clip)]
    run_ffmpeg(*inputs, "-lavfi", graph, "-f", "null", "-")
    report = json.loads(log.read_text())
    frames = [frame["metrics"] for frame in report["frames"]]
    key = next(key for key in MOTION_KEYS if key in frames[0])
    pooled = report["pooled_metrics"]
    return {
        "motion": np.array([metrics[key] for metrics in frames]),
        "motion2": np.array([metrics["integer_motion2"] for metrics in frames]),
        "float_motion": np.array([metrics["motion"] for metrics in frames]),
        "float_motion2": np.array([metrics["motion2"] for metrics in frames]),
        "score": (pooled[key]["mean"] + pooled["integer_motion2"]["mean"]) / 2,
    }


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Every clip of CLIPS with libvmaf's view of it, made once for the module."""
    folder = tmp_path_factory.mktemp("motion_clips")
    clips = {name: make_clip(folder / f"{name}.mp4", args) for name, args in CLIPS.items()}
    return {name: (clip, libvmaf_motion(clip)) for name, clip in clips.items()}


# --- against libvmaf 3.2 (the ffmpeg of the imageio-ffmpeg wheel) --------------------------


@needs_ffmpeg
@pytest.mark.parametrize("name", list(CLIPS))
def test_integer_32_matches_libvmaf(references, name):
    clip, reference = references[name]
    result = motion_score(clip, per_frame=True)
    assert result.num_frames == len(reference["motion"])
    np.testing.assert_allclose(result.motion, reference["motion"], rtol=0, atol=JSON_TOLERANCE)
    np.testing.assert_allclose(result.motion2, reference["motion2"], rtol=0, atol=JSON_TOLERANCE)
    assert abs(result.score - reference["score"]) < 1e-6  # 1e-4 would do; it is exact
    assert result.score == pytest.approx(clip_score(result.motion, result.motion2), abs=1e-12)


@needs_ffmpeg
@pytest.mark.parametrize("name", ["testsrc2", "life", "scroll", "odd_size_yuv444"])
def test_float_variant_matches_libvmaf_float_motion(references, name):
    clip, reference = references[name]
    result = motion_score(clip, MotionConfig(variant="float"), per_frame=True)
    # float32 sums in another order than libvmaf's: about 1e-6 relative.
    np.testing.assert_allclose(result.motion, reference["float_motion"], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(result.motion2, reference["float_motion2"], rtol=2e-6, atol=1e-5)


@needs_ffmpeg
def test_static_clip_scores_zero(references):
    result = motion_score(references["static"][0], per_frame=True)
    assert result.score == 0.0 and not result.motion.any() and not result.motion2.any()


@needs_ffmpeg
def test_one_frame_clip_scores_zero_like_libvmaf(references):
    clip, reference = references["one_frame"]
    for config in (MotionConfig(), MotionConfig(edge_rule="3.1"), MotionConfig(variant="float")):
        result = motion_score(clip, config, per_frame=True)
        assert (result.num_frames, result.score) == (1, 0.0) == (1, reference["score"])
        assert result.motion.tolist() == result.motion2.tolist() == [0.0]


@needs_ffmpeg
def test_a_rotated_clip_is_measured_upright_like_ffmpeg_does(references, tmp_path):
    # ffmpeg autorotates before libvmaf: a quarter turn changes which pass runs first.
    clip = tmp_path / "rotated.mp4"
    source = references["testsrc2"][0]
    run_ffmpeg("-display_rotation", "90", "-i", str(source), "-c", "copy", str(clip))
    reference = libvmaf_motion(clip)
    result = motion_score(clip, per_frame=True)
    np.testing.assert_allclose(result.motion, reference["motion"], rtol=0, atol=JSON_TOLERANCE)
    assert next(iter_luma(clip)).shape == (256, 144)


@needs_ffmpeg
def test_every_frame_counts_whatever_the_frame_rate(tmp_path):
    # Open-Sora's `-r 24` re-times the frames of a 60 fps clip; it drops none.
    clip = write_video(tmp_path / "fast.mp4", gradient_frames(30, 48, 64), fps=60)
    reference = libvmaf_motion(clip)
    result = motion_score(clip, per_frame=True)
    assert result.num_frames == 30 == len(reference["motion"])
    assert abs(result.score - reference["score"]) < 1e-6


# --- the libvmaf <= 3.1 rule against libvmaf 3.0.0's means ----------------------------------

# Mean per-frame motion of 72-frame 256x144 H.264 clips made as the reference doc makes
# them (x264 pinned to 4 threads: its output depends on the thread count).
LIBVMAF_300_MEANS = {
    "testsrc2": (["-f", "lavfi", "-i", "testsrc2=size=256x144:rate=24:duration=3"], 2.382099),
    "mandelbrot": (["-f", "lavfi", "-i", "mandelbrot=size=256x144:rate=24", "-t", "3"], 1.053986),
    "scroll": (
        ["-f", "lavfi", "-i", "testsrc2=size=256x144:rate=24:duration=3", "-vf", "scroll=h=0.02"],
        14.097445,
    ),
}


@needs_ffmpeg
@pytest.mark.parametrize("name", list(LIBVMAF_300_MEANS))
def test_31_rule_matches_libvmaf_300_means(tmp_path, name):
    args, expected = LIBVMAF_300_MEANS[name]
    clip = make_clip(tmp_path / f"{name}.mp4", [*args, "-threads", "4"])
    old = motion_score(clip, MotionConfig(edge_rule="3.1"))
    assert old.num_frames == 72
    assert abs(old.mean_motion - expected) < 1e-6  # the table's rounding
    # The 3.2 rule measures the same clip a little differently (by up to about 0.1%).
    new = motion_score(clip)
    assert 1e-6 < abs(new.mean_motion - expected) < 1e-3 * expected


# --- the blur, by hand and against a literal translation of libvmaf's C ---------------------


def test_mirror_index_by_hand():
    # Positions -2 .. 6 of a side of 5: below 0 reads -i; from n on, 2n-i-1 or 2n-i-2.
    assert mirror_index(5, "3.1").tolist() == [2, 1, 0, 1, 2, 3, 4, 4, 3]
    assert mirror_index(5, "3.2").tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    with pytest.raises(ValueError, match="too small"):
        mirror_index(2, "3.2")


def test_blur_of_a_flat_plane_is_256_times_it():
    # The taps sum to 65536: (65536 c + 128) >> 8 = 256 c, then (65536 * 256 c + 32768) >> 16.
    for rule in ("3.1", "3.2"):
        assert (blur_integer(np.full((6, 7), 37, np.uint8), rule) == 256 * 37).all()
        assert (blur_integer(np.full((6, 7), -9), rule) == 256 * -9).all()


def test_bottom_edge_by_hand():
    # Rows 0 0 0 0 1 (constant along each row, so the horizontal pass changes nothing).
    plane = np.zeros((5, 4), np.uint8)
    plane[4] = 1
    old, new = blur_integer(plane, "3.1")[:, 0], blur_integer(plane, "3.2")[:, 0]
    # Row 4 reads rows 2, 3, 4, 5, 6. 3.1 mirrors 5 -> 4 and 6 -> 3:
    # (26386 + 16004 + 128) >> 8 = 166; 3.2 mirrors 5 -> 3 and 6 -> 2: (26386 + 128) >> 8 = 103.
    assert (old[4], new[4]) == (166, 103)
    # Row 3 reads rows 1..5: 3.1 (16004 + 3571 + 128) >> 8 = 76; 3.2 (16004 + 128) >> 8 = 63.
    assert (old[3], new[3]) == (76, 63)
    # Row 2 reads rows 0..4 and needs no mirror: (3571 + 128) >> 8 = 14 either way.
    assert old[2] == new[2] == 14


def slow_blur(plane: np.ndarray, upper: int) -> np.ndarray:
    """libvmaf's integer blur as its C loops read: mirror ``i < 0 -> -i``, ``i >= n ->
    2n - i - upper``; vertical then horizontal, with Python's floor shifts."""
    height, width = plane.shape

    def tap(n: int, i: int) -> int:
        return -i if i < 0 else (2 * n - i - upper if i >= n else i)

    vertical = [
        [
            (sum(INTEGER_TAPS[k] * int(plane[tap(height, i - 2 + k), j]) for k in range(5)) + 128)
            >> 8
            for j in range(width)
        ]
        for i in range(height)
    ]
    return np.array(
        [
            [
                (
                    sum(INTEGER_TAPS[k] * vertical[i][tap(width, j - 2 + k)] for k in range(5))
                    + 32768
                )
                >> 16
                for j in range(width)
            ]
            for i in range(height)
        ]
    )


@pytest.mark.parametrize("shape", [(3, 3), (5, 8), (9, 4)])
def test_blur_matches_the_slow_loops(shape):
    rng = np.random.default_rng(sum(shape))
    frame = rng.integers(0, 256, shape)
    difference = rng.integers(-255, 256, shape)  # libvmaf 3.2 blurs signed differences
    np.testing.assert_array_equal(blur_integer(frame, "3.1"), slow_blur(frame, upper=1))
    np.testing.assert_array_equal(blur_integer(frame, "3.2"), slow_blur(frame, upper=2))
    np.testing.assert_array_equal(blur_integer(difference, "3.2"), slow_blur(difference, upper=2))


def test_float_blur_is_close_to_the_integer_one():
    frame = np.random.default_rng(0).integers(0, 256, (12, 10)).astype(np.uint8)
    integer = blur_integer(frame, "3.2") / 256.0 - 128
    np.testing.assert_allclose(blur_float(frame, "3.2"), integer, atol=0.01)


def test_frame_motion_of_a_brightness_step_by_hand():
    # Flat planes 100 -> 90: every blurred pixel moves by 2560, so motion = 2560 / 256 = 10.
    previous, current = np.full((16, 20), 100, np.uint8), np.full((16, 20), 90, np.uint8)
    assert frame_motion(previous, current, MotionConfig()) == 10.0
    assert frame_motion(previous, current, MotionConfig(edge_rule="3.1")) == 10.0
    assert frame_motion(previous, current, MotionConfig(variant="float")) == pytest.approx(10.0)


def test_motion2_by_hand():
    # motion2[0] = 0; min with the next frame in between; the last frame keeps its own.
    motion = np.array([0.0, 3.0, 1.0, 4.0, 2.0])
    assert motion2_from_motion(motion).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    assert motion2_from_motion(np.array([0.0, 5.0])).tolist() == [0.0, 5.0]
    assert clip_score(motion) == (2.0 + 1.2) / 2


# --- the streaming kernel against the plain functions ---------------------------------------


def random_walk(frames: int, height: int, width: int, jump: int, seed: int = 0) -> np.ndarray:
    """Frames that drift, with a full-range jump at frame ``jump`` (a scene cut)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width))
    steps = rng.integers(-6, 7, (frames, height, width)).cumsum(axis=0)
    video = np.clip(base + steps, 0, 255)
    video[jump:] = 255 - video[jump:]
    return video.astype(np.uint8)


CONFIGS = [
    MotionConfig(),
    MotionConfig(edge_rule="3.1"),
    MotionConfig(variant="float"),
    MotionConfig(variant="float", edge_rule="3.1"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.variant}-{c.edge_rule}")
@pytest.mark.parametrize("block_pixels", [200, 3000, 1 << 16])
def test_streaming_equals_plain_per_frame(config, block_pixels):
    # Small blocks cut the frames into many bands (edge bands, interior bands, one frame
    # per block); the jump overflows int32 in the 3.2 horizontal pass.
    video = random_walk(9, 23, 17, jump=5)
    config = MotionConfig(config.variant, config.edge_rule, block_pixels=block_pixels)
    result = motion_from_frames(iter(video), config, per_frame=True)
    plain = [0.0] + [frame_motion(video[i - 1], video[i], config) for i in range(1, len(video))]
    if config.variant == "float":
        np.testing.assert_allclose(result.motion, plain, rtol=1e-6)
    else:
        assert result.motion.tolist() == plain
    assert result.motion2.tolist() == motion2_from_motion(result.motion).tolist()


def test_chunking_does_not_change_the_result():
    video = random_walk(12, 30, 40, jump=7)
    whole = MotionAccumulator(30, 40, keep_per_frame=True)
    whole.update(video)
    pieces = MotionAccumulator(30, 40, keep_per_frame=True)
    for start, stop in [(0, 1), (1, 2), (2, 2), (2, 7), (7, 12)]:
        pieces.update(video[start:stop])
    expected, result = whole.result(), pieces.result()
    assert result.motion.tolist() == expected.motion.tolist()
    assert (result.score, result.num_frames) == (expected.score, 12)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.variant}-{c.edge_rule}")
def test_state_does_not_grow_with_clip_length(config):
    video = random_walk(40, 36, 64, jump=1)  # the int64 buffers, if any, come at once
    accumulator = MotionAccumulator(36, 64, config)
    accumulator.update(video[:2])
    early = accumulator.state_nbytes()
    for frame in video[2:]:
        accumulator.update(frame)
    # One frame-sized array (the previous raw or blurred frame) plus fixed buffers.
    assert accumulator.held_frames == 1
    assert accumulator.state_nbytes() == early
    assert early <= 36 * 64 * 4 + 3 * config.block_pixels * 8 * 4
    assert accumulator.result().num_frames == 40


def test_frames_may_be_views_of_a_reused_buffer():
    # Like decoder memory: each frame is overwritten as soon as the next one is asked for,
    # so motion_from_frames must use (or copy) it before pulling the next.
    video = random_walk(7, 20, 24, jump=3)

    def frames():
        buffer = np.empty_like(video[0])
        for frame in video:
            buffer[...] = frame
            yield buffer

    result = motion_from_frames(frames(), per_frame=True)
    plain = [0.0] + [frame_motion(video[i - 1], video[i], MotionConfig()) for i in range(1, 7)]
    assert result.motion.tolist() == plain


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        MotionConfig(variant="double")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edge_rule"):
        MotionConfig(edge_rule="3.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no frames"):
        motion_from_frames([])
    with pytest.raises(ValueError, match="size changed"):
        motion_from_frames([np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        MotionAccumulator(8, 8).update(np.zeros((2, 8, 8), np.int16))
    with pytest.raises(ValueError, match="no video stream"):
        motion_score(write_audio(tmp_path / "tone.m4a"))

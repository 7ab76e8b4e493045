import math
from fractions import Fraction

import pytest

from opensora_kedro.video.codec import encode_image
from opensora_kedro.video.probe import ProbeError, probe_video
from tests.conftest import corrupt_media_data, gradient_frames, write_audio, write_video


@pytest.mark.parametrize(
    ("fps", "num_frames", "size"), [(24, 30, (64, 96)), (30, 7, (112, 48)), (60, 61, (48, 48))]
)
def test_known_metadata(tmp_path, fps, num_frames, size):
    height, width = size
    path = write_video(tmp_path / "clip.mp4", gradient_frames(num_frames, height, width), fps=fps)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width, info.fps) == (num_frames, height, width, fps)
    assert info.rotation == 0


def test_ntsc_rate_is_rounded_like_open_sora(tmp_path):
    path = write_video(
        tmp_path / "ntsc.mp4", gradient_frames(10, 32, 32), fps=Fraction(24000, 1001)
    )
    assert probe_video(path).fps == 23.976


def test_one_frame_clip(tmp_path):
    path = write_video(tmp_path / "one.mp4", gradient_frames(1, 32, 48), fps=25)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (1, 32, 48)


def test_frame_count_is_exact_where_the_container_does_not_state_it(tmp_path):
    path = write_video(tmp_path / "clip.mkv", gradient_frames(23, 32, 32), fps=24)
    import av

    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska keeps no frame count
    assert probe_video(path).num_frames == 23


def test_variable_frame_rate(tmp_path):
    # 20 frames over 1.9 s with irregular gaps: an average of about 10 fps.
    pts = [
        0,
        50,
        100,
        250,
        300,
        350,
        500,
        550,
        600,
        700,
        800,
        900,
        1000,
        1200,
        1300,
        1400,
        1500,
        1700,
        1800,
        1900,
    ]
    path = write_video(
        tmp_path / "vfr.mp4",
        gradient_frames(len(pts), 32, 32),
        fps=20,
        pts=pts,
        time_base=Fraction(1, 1000),
    )
    info = probe_video(path)
    assert info.num_frames == 20
    assert 9.0 <= info.fps <= 11.0


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotated_video_reports_its_displayed_size(tmp_path, rotation):
    path = write_video(tmp_path / "rot.mp4", gradient_frames(5, 48, 80), rotation=rotation)
    info = probe_video(path)
    assert info.rotation in (90, 270)
    assert (info.height, info.width) == (80, 48)


def test_upside_down_video_keeps_its_size(tmp_path):
    path = write_video(tmp_path / "rot.mp4", gradient_frames(5, 48, 80), rotation=180)
    info = probe_video(path)
    assert info.rotation == 180 and (info.height, info.width) == (48, 80)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_image(tmp_path, suffix):
    path = tmp_path / f"still{suffix}"
    path.write_bytes(encode_image(gradient_frames(1, 40, 60)[0], suffix))
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (1, 40, 60)
    assert math.isnan(info.fps)


def _reason(path) -> str:
    with pytest.raises(ProbeError) as error:
        probe_video(path)
    return error.value.reason


def test_bad_inputs_have_distinct_reasons(tmp_path, good_clip):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good_clip.read_bytes()[: good_clip.stat().st_size // 2])
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    audio = write_audio(tmp_path / "audio.mp4")
    garbage = corrupt_media_data(write_video(tmp_path / "garbage.mp4", gradient_frames(6, 32, 32)))
    assert _reason(empty) == "empty_file"
    assert _reason(truncated) == "truncated"
    assert _reason(text) == "not_a_video"
    assert _reason(audio) == "audio_only"
    assert _reason(garbage) == "undecodable"


def test_file_cut_inside_the_media_data_is_truncated(tmp_path):
    # moov first (faststart): the header survives the cut, the frames do not
    frames = gradient_frames(48, 64, 64)
    path = write_video(tmp_path / "full.mp4", frames)
    import av

    fast = tmp_path / "fast.mp4"
    with (
        av.open(str(path)) as source,
        av.open(str(fast), "w", options={"movflags": "faststart"}) as sink,
    ):
        stream_in = source.streams.video[0]
        stream_out = sink.add_stream_from_template(stream_in)
        for packet in source.demux(stream_in):
            if packet.dts is not None:
                packet.stream = stream_out
                sink.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    assert probe_video(fast).num_frames == 48
    assert _reason(cut) == "truncated"

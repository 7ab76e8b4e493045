"""Shot detection and splitting, on rendered multi-shot videos whose cuts are known."""

import pickle
from fractions import Fraction

import numpy as np
import pytest

from opensora_kedro.data.params import ShotParams
from opensora_kedro.video.codec import encode_image, encode_mp4
from opensora_kedro.video.decode import read_frames
from opensora_kedro.video.render import (
    BACKGROUND,
    ClipSpec,
    render_frames,
    render_shot_sequence,
)
from opensora_kedro.video.shots import (
    ShotSplitter,
    apply_length_rules,
    cut_shot,
    detect_shots,
)
from tests.conftest import write_video

# Each shot: its own object and background, so every cut is a clean one.
LOOKS = [
    ("red", "circle", "left", (40, 40, 48)),
    ("blue", "square", "up", (150, 120, 60)),
    ("yellow", "triangle", "right", (20, 90, 110)),
]
# Rules off, short shots allowed: what detection finds is what gets cut.
NO_RULES = ShotParams(detector="content", min_scene_frames=5, min_seconds=None, max_seconds=None)


def shot_frames(lengths: list[int], fps: float = 24) -> np.ndarray:
    specs = [
        ClipSpec(f"s{i}", colour, shape, direction, 64, 64, fps, length, background=background)
        for i, (length, (colour, shape, direction, background)) in enumerate(
            zip(lengths, LOOKS, strict=False)
        )
    ]
    return render_shot_sequence(specs)


def shot_video(tmp_path, lengths: list[int], name: str = "multi.mp4", fps: float = 24):
    path = tmp_path / name
    path.write_bytes(encode_mp4(shot_frames(lengths, fps), fps))
    return path


def row(path, num_frames: int, stem: str = "sub/multi", fps: float = 24.0) -> dict:
    return {"path": str(path), "clip_stem": stem, "num_frames": num_frames, "fps": fps}


def per_frame_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(1, 2, 3))


# --- rendering ----------------------------------------------------------------------------


def test_shot_sequence_is_its_clips_in_order_and_default_background_is_unchanged():
    specs = [ClipSpec(f"s{i}", c, s, d, 48, 32, 24, 5, background=b) for i, (c, s, d, b)
             in enumerate(LOOKS)]  # fmt: skip
    frames = render_shot_sequence(specs)
    assert np.array_equal(frames, np.concatenate([render_frames(spec) for spec in specs]))
    assert tuple(frames[5, 0, 0]) == LOOKS[1][3]  # the top row carries the background as given
    plain = ClipSpec("c", "red", "circle", "left", 48, 32, 24, 5)
    assert plain.background == BACKGROUND and tuple(render_frames(plain)[0, 0, 0]) == BACKGROUND
    with pytest.raises(ValueError, match="one size"):
        render_shot_sequence([plain, ClipSpec("d", "red", "circle", "left", 32, 32, 24, 5)])


# --- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_detected_cuts_are_the_rendered_boundaries(tmp_path, detector):
    path = shot_video(tmp_path, [20, 20, 20])
    ranges, fps = detect_shots(path, ShotParams(detector=detector))
    assert ranges == [(0, 20), (20, 40), (40, 60)]
    assert fps == 24.0


def test_a_video_without_a_cut_is_one_range(tmp_path):
    path = shot_video(tmp_path, [30])
    assert detect_shots(path, ShotParams(detector="content")) == ([(0, 30)], 24.0)


def test_cuts_of_a_variable_frame_rate_video_are_decode_indices(tmp_path):
    # Every third frame lasts two ticks: presentation-time frame numbers run ahead of decoding.
    frames = shot_frames([20, 20, 20])
    pts = np.cumsum([0] + [2 if i % 3 == 0 else 1 for i in range(59)]).tolist()
    path = write_video(tmp_path / "vfr.mp4", frames, fps=24, pts=pts, time_base=Fraction(1, 24))
    ranges, fps = detect_shots(path, ShotParams(detector="content"))
    assert ranges == [(0, 20), (20, 40), (40, 60)]
    assert fps == pytest.approx(24 * 59 / pts[-1], rel=0.02)  # the average rate


# --- length rules -------------------------------------------------------------------------


def test_short_shots_are_dropped_and_long_ones_keep_their_beginning():
    settings = ShotParams(detector="content", min_seconds=2.0, max_seconds=15.0)
    ranges = [(0, 47), (47, 95), (95, 455), (455, 900)]  # 1.96 s, 2.0 s, 15.0 s, 18.5 s at 24
    kept, dropped = apply_length_rules(ranges, 24.0, settings)
    assert kept == [(47, 95), (95, 455), (455, 815)]
    assert dropped == [((0, 47), "shot_too_short"), ((815, 900), "shot_too_long")]


def test_length_rules_switched_off_keep_everything():
    ranges = [(0, 3), (3, 10_000)]
    assert apply_length_rules(ranges, 30.0, NO_RULES) == (ranges, [])
    only_max = ShotParams(detector="content", min_seconds=None, max_seconds=1.0)
    assert apply_length_rules(ranges, 29.97, only_max) == ([(0, 3), (3, 33)], [((33, 10_000),
                                                                                  "shot_too_long")])  # fmt: skip
    with pytest.raises(ValueError, match="fps"):
        apply_length_rules(ranges, 0.0, only_max)


@pytest.mark.parametrize("bad", [{"detector": "histogram"}, {"crf": 60}, {"min_scene_frames": 0}])
def test_bad_settings_fail_at_setup(bad):
    with pytest.raises(ValueError):  # pydantic's ValidationError: the config loader's check
        ShotParams(**bad)


def test_rules_across_settings_fail_before_any_video(tmp_path):
    (issue,) = ShotParams(min_seconds=20.0).all_cross_checks({})  # above max_seconds 15
    assert issue[0] == ("min_seconds",)
    with pytest.raises(ValueError, match="greater than 0"):  # would keep no frame of a shot
        ShotParams(max_seconds=0.0)


# --- cutting ------------------------------------------------------------------------------


def test_cut_shot_writes_exactly_the_range(tmp_path):
    source = shot_video(tmp_path, [20, 20, 20])
    destination = tmp_path / "out" / "cut.mp4"
    cut_shot(source, 18, 42, destination, fps=24.0, crf=18)  # spans both cuts
    clip, original = read_frames(destination), read_frames(source)
    assert clip.shape == (24, 64, 64, 3)
    error = per_frame_error(clip, original[18:42])
    assert error.max() < 3, error  # codec error only
    # One frame off would put another shot's background in the frames at the cuts.
    assert per_frame_error(clip, original[17:41]).max() > 10 * error.max()
    assert [p.name for p in destination.parent.iterdir()] == ["cut.mp4"]  # no temporary left


def test_a_range_past_the_end_writes_nothing(tmp_path):
    source = shot_video(tmp_path, [20])
    destination = tmp_path / "out" / "cut.mp4"
    destination.parent.mkdir()
    with pytest.raises(ValueError, match="past the decodable end"):
        cut_shot(source, 10, 30, destination, fps=24.0, crf=18)
    assert list(destination.parent.iterdir()) == []


# --- the splitter -------------------------------------------------------------------------


def test_splitter_cuts_kept_shots_and_records_dropped_ones(tmp_path):
    source = shot_video(tmp_path, [30, 10, 40])
    settings = ShotParams(detector="content", min_scene_frames=5, min_seconds=0.5,
                          max_seconds=1.25)  # fmt: skip
    (result,) = ShotSplitter(settings, tmp_path / "shots")([row(source, 80)])
    folder = tmp_path / "shots" / "sub" / "multi"
    assert [s["clip_path"] for s in result["shots"]] == [str(folder / "shot-000.mp4"),
                                                         str(folder / "shot-002.mp4")]  # fmt: skip
    assert [(s["start_frame"], s["end_frame"]) for s in result["shots"]] == [(0, 30), (40, 70)]
    assert result["shots"][1]["start_s"] == pytest.approx(40 / 24)
    assert result["shots"][1]["end_s"] == pytest.approx(70 / 24)
    assert [(d["start_frame"], d["end_frame"], d["reason"]) for d in result["dropped"]] == [
        (30, 40, "shot_too_short"), (70, 80, "shot_too_long")]  # fmt: skip
    original = read_frames(source)
    for shot in result["shots"]:
        clip = read_frames(shot["clip_path"])
        assert len(clip) == shot["end_frame"] - shot["start_frame"]
        assert per_frame_error(clip, original[shot["start_frame"] : shot["end_frame"]]).max() < 3
    assert sorted(p.name for p in folder.iterdir()) == ["shot-000.mp4", "shot-002.mp4"]


def test_a_single_shot_source_is_its_own_clip_and_stale_shots_go(tmp_path):
    source = shot_video(tmp_path, [30])
    folder = tmp_path / "shots" / "sub" / "multi"
    folder.mkdir(parents=True)
    (folder / "shot-001.mp4").write_bytes(b"from an earlier run")
    (folder / "notes.txt").write_text("not ours")
    before = source.stat().st_mtime_ns
    (result,) = ShotSplitter(NO_RULES, tmp_path / "shots")([row(source, 30)])
    assert result == {"path": str(source), "dropped": [], "shots": [
        {"clip_path": str(source), "start_frame": 0, "end_frame": 30, "start_s": 0.0,
         "end_s": 1.25}]}  # fmt: skip
    assert source.stat().st_mtime_ns == before
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_single_shot_over_max_seconds_is_cut_to_its_beginning(tmp_path):
    source = shot_video(tmp_path, [30])
    settings = ShotParams(detector="content", min_seconds=None, max_seconds=1.0)
    (result,) = ShotSplitter(settings, tmp_path / "shots")([row(source, 30)])
    (shot,) = result["shots"]
    assert shot["clip_path"] == str(tmp_path / "shots" / "sub" / "multi" / "shot-000.mp4")
    assert len(read_frames(shot["clip_path"])) == shot["end_frame"] == 24
    assert [(d["start_frame"], d["end_frame"], d["reason"]) for d in result["dropped"]] == [
        (24, 30, "shot_too_long")]  # fmt: skip


def test_stills_pass_through_without_detection(tmp_path):
    still = tmp_path / "still.png"
    still.write_bytes(encode_image(render_frames(ClipSpec("s", "red", "circle", "static",
                                                          32, 32, 0.0, 1))[0], ".png"))  # fmt: skip
    not_a_video = tmp_path / "one.mp4"  # one frame: not even opened
    not_a_video.write_bytes(b"garbage")
    splitter = ShotSplitter(ShotParams(detector="content"), tmp_path / "shots")
    results = splitter([row(still, 1, "still", fps=float("nan")), row(not_a_video, 1, "one")])
    for result, path, end_s in zip(results, [still, not_a_video], [0.0, 1 / 24], strict=True):
        assert result["shots"] == [{"clip_path": str(path), "start_frame": 0, "end_frame": 1,
                                    "start_s": 0.0, "end_s": end_s}]  # fmt: skip
        assert result["dropped"] == [] and "reason" not in result
    assert not (tmp_path / "shots").exists()


def test_broken_videos_give_reasons_and_the_batch_goes_on(tmp_path):
    good = shot_video(tmp_path, [20, 20], name="good.mp4")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    rows = [row(p, 40, p.stem) for p in (truncated, garbage, tmp_path / "missing.mp4", good)]
    rows.append({**row(good, 40), "clip_stem": "../outside"})
    results = ShotSplitter(NO_RULES, tmp_path / "shots")(rows)
    assert [r["path"] for r in results] == [r["path"] for r in rows]
    assert [r.get("reason") for r in results] == [
        "shot_detection_failed", "shot_detection_failed", "shot_detection_failed", None,
        "cut_failed"]  # fmt: skip
    assert results[2]["detail"].startswith("FileNotFoundError: ")
    assert results[4]["detail"].startswith("ValueError: clip_stem")
    assert len(results[3]["shots"]) == 2


def test_an_undecodable_tail_is_recorded_and_the_rest_is_cut(tmp_path):
    source = shot_video(tmp_path, [80])  # one shot: whole, it would be its own clip
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)  # zeroed packets from about the middle on
    source.write_bytes(bytes(data))
    (result,) = ShotSplitter(NO_RULES, tmp_path / "shots")([row(source, 80)])
    last = result["dropped"][-1]
    assert last["reason"] == "undecodable_frames" and last["end_frame"] == 80
    assert 0 < last["start_frame"] < 80
    assert result["shots"] and all(s["clip_path"] != str(source) for s in result["shots"])
    for shot in result["shots"]:
        assert len(read_frames(shot["clip_path"])) == shot["end_frame"] - shot["start_frame"]


def test_splitter_is_picklable_before_use(tmp_path):
    splitter = ShotSplitter(NO_RULES, tmp_path / "shots")
    assert ShotSplitter.uses_model is False
    copy = pickle.loads(pickle.dumps(splitter))
    source = shot_video(tmp_path, [20, 20])
    (result,) = copy([row(source, 40)])
    assert [(s["start_frame"], s["end_frame"]) for s in result["shots"]] == [(0, 20), (20, 40)]

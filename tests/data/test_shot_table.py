"""The clip table from shot splitting: rows per shot, kept captions, reuse between runs."""

import json

import numpy as np
import pandas as pd

from opensora_kedro.data.params import ShotParams
from opensora_kedro.data.scan import build_video_table
from opensora_kedro.data.shot_table import split_videos, whole_clips
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.video import shots as shots_module
from opensora_kedro.video.codec import encode_mp4
from opensora_kedro.video.render import ClipSpec, render_shot_sequence

SETTINGS = ShotParams(detector="content", min_seconds=None, min_scene_frames=4)


def _videos(root):
    root.mkdir()
    specs = [
        ClipSpec(
            name=str(k),
            colour=c,
            shape="square",
            direction="left",
            width=48,
            height=32,
            fps=12,
            num_frames=10,
            background=bg,
        )
        for k, (c, bg) in enumerate([("red", (40, 40, 48)), ("blue", (200, 200, 210))])
    ]
    (root / "two.mp4").write_bytes(encode_mp4(render_shot_sequence(specs), 12))
    (root / "one.mp4").write_bytes(encode_mp4(render_shot_sequence(specs[:1]), 12))
    captions = pd.DataFrame({"path": ["two.mp4", "one.mp4"], "text": ["two shots", "one shot"]})
    meta, _ = build_video_table(VideoFolderDataset(str(root)).load(), captions)
    return meta  # fmt: skip


def test_each_shot_is_a_clip_row_and_a_cut_shot_waits_for_its_own_caption(tmp_path):
    meta = _videos(tmp_path / "raw")
    stored, clips, rejected = split_videos(meta, tmp_path / "raw", SETTINGS, tmp_path / "shots")
    assert rejected.empty
    rows = clips.set_index("path")
    two = rows[rows["source"] == str(tmp_path / "raw/two.mp4")]
    assert list(two.index) == [str(tmp_path / f"shots/two/shot-00{k}.mp4") for k in (0, 1)]
    assert two[["start_frame", "end_frame", "num_frames"]].values.tolist() == [
        [0, 10, 10],
        [10, 20, 10],
    ]
    assert two["text"].isna().all()  # "two shots" describes neither shot
    assert rows.loc[str(tmp_path / "raw/one.mp4"), "text"] == "one shot"  # its own clip
    # stored relative to the shots folder: a moved project keeps its table
    assert {s["clip_path"] for s in json.loads(stored.iloc[0]["shots"])["shots"]} <= {
        "two/shot-000.mp4", "two/shot-001.mp4", None}  # fmt: skip
    inheriting = SETTINGS.model_copy(update={"inherit_caption": True})
    _, inherited, _ = split_videos(meta, tmp_path / "raw", inheriting, tmp_path / "shots",
                                   previous=stored)  # fmt: skip
    assert inherited["text"].tolist().count("two shots") == 2


def test_a_rerun_reuses_the_cuts_unless_settings_change_or_a_cut_file_is_gone(
    tmp_path, monkeypatch
):
    meta = _videos(tmp_path / "raw")
    stored, first, _ = split_videos(meta, tmp_path / "raw", SETTINGS, tmp_path / "shots")
    detected = []
    original = shots_module.detect_shots
    monkeypatch.setattr(shots_module, "detect_shots",
                        lambda p, s: detected.append(p) or original(p, s))  # fmt: skip
    stored, again, _ = split_videos(meta, tmp_path / "raw", SETTINGS, tmp_path / "shots",
                                    previous=stored)  # fmt: skip
    assert detected == [] and again.equals(first)
    (tmp_path / "shots/two/shot-001.mp4").unlink()
    stored, _, _ = split_videos(meta, tmp_path / "raw", SETTINGS, tmp_path / "shots",
                                previous=stored)  # fmt: skip
    assert [p.rsplit("/", 1)[-1] for p in detected] == ["two.mp4"]
    other = ShotParams(detector="content", min_seconds=1.0, min_scene_frames=4)
    _, kept, rejected = split_videos(meta, tmp_path / "raw", other, tmp_path / "shots",
                                     previous=stored)  # fmt: skip
    assert len(detected) == 3  # both videos again
    assert kept.empty and set(rejected["reason"]) == {"shot_too_short"}  # 10 frames < 1 s


def test_without_splitting_every_video_is_one_clip():
    meta = pd.DataFrame({"path": ["a.mp4", "b.png"], "num_frames": [24, 1], "fps": [12.0, np.nan]})
    clips = whole_clips(meta.assign(text="x", height=2, width=2, aspect_ratio=1.0, resolution=4,
                                    caption_hash="h", file_size=1, file_mtime_ns=1))  # fmt: skip
    assert clips[["source", "start_frame", "end_frame", "end_s"]].values.tolist() == [
        ["a.mp4", 0, 24, 2.0], ["b.png", 0, 1, 0.0]]  # fmt: skip

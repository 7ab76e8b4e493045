"""The demo_data pipeline rendered into a real folder, then decoded and measured."""

import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.config.schemas.data import DemoDataParams
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.pipelines.demo_data import create_pipeline
from opensora_kedro.video.decode import read_frames
from opensora_kedro.video.measure import dominant_colour, motion_direction
from opensora_kedro.video.probe import probe_video

PARAMS = {
    "num_clips": 6, "num_images": 2, "sizes": [[96, 64], [64, 96], [64, 64]],
    "fps": [12, 24, 60], "lengths": [1, 9, 20], "seed": 5, "crf": 20,
}  # fmt: skip


def _run(tmp_path, params=PARAMS):
    typed = DemoDataParams.model_validate(params)  # what the hook hands the nodes
    catalog = DataCatalog(
        {
            "params:demo_data": MemoryDataset(typed),
            "params:demo_data.crf": MemoryDataset(typed.crf),
            "raw_videos": VideoFolderDataset(str(tmp_path / "videos")),
            "raw_captions": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog.load("raw_videos"), catalog.load("raw_captions")


def test_clips_match_their_captions(tmp_path):
    folder, captions = _run(tmp_path)
    assert isinstance(captions, pd.DataFrame) and list(captions.columns) == ["path", "text"]
    assert sorted(captions["path"]) == folder.files and len(folder.files) == 8
    for path, text in zip(captions["path"], captions["text"], strict=True):
        frames = read_frames(folder.path(path))
        info = probe_video(folder.path(path))
        assert info.num_frames == len(frames)
        words = text.split()
        assert dominant_colour(frames) == words[1]
        if len(frames) > 1:
            expected = "static" if text.endswith("staying still") else words[-1]
            assert motion_direction(frames) == expected


def test_same_seed_renders_identical_files(tmp_path):
    first, _ = _run(tmp_path / "a")
    second, _ = _run(tmp_path / "b")
    assert [first.path(f).read_bytes() for f in first.files] == [
        second.path(f).read_bytes() for f in second.files
    ]


def test_multishot_videos_are_uncaptioned_and_change_object_and_background_at_each_cut(tmp_path):
    params = {**PARAMS, "multishot": {"count": 2, "shots": 3, "frames": 8}}
    folder, captions = _run(tmp_path, params)
    videos = [f for f in folder.files if f.startswith("multishot_")]
    assert videos == ["multishot_0000.mp4", "multishot_0001.mp4"]
    assert not set(videos) & set(captions["path"])  # uncut footage comes without captions
    frames = read_frames(folder.path(videos[0]))
    assert len(frames) == 24
    corners = [tuple(frames[k, 0, 0] // 32) for k in (0, 8, 16)]  # the backgrounds' corner
    colours = [dominant_colour(frames[k : k + 8]) for k in (0, 8, 16)]
    assert len(set(corners)) == 3 and len(set(colours)) == 3

"""The data_processing pipeline, run by Kedro's runner on a folder of bad inputs."""

import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.pipelines.data_processing import create_pipeline
from tests.conftest import corrupt_media_data, gradient_frames, write_audio, write_video


def test_bad_inputs_are_recorded_and_the_run_completes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = write_video(raw / "good.mp4", gradient_frames(16, 48, 64), fps=25)
    (raw / "zero.mp4").touch()
    (raw / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (raw / "text.mp4").write_text("definitely not a video\n")
    write_audio(raw / "audio.mp4")
    corrupt_media_data(write_video(raw / "garbage.mp4", gradient_frames(6, 32, 32)))
    write_video(raw / "uncaptioned.mp4", gradient_frames(4, 32, 32))
    captioned = ["good.mp4", "zero.mp4", "truncated.mp4", "text.mp4", "audio.mp4", "garbage.mp4"]
    catalog = DataCatalog(
        {
            "raw_videos": VideoFolderDataset(str(raw)),
            "raw_captions": MemoryDataset(pd.DataFrame({"path": captioned, "text": "a clip"})),
            "params:data_processing.scan": MemoryDataset({"workers": 2, "check_frames": 2}),
            "video_meta": MemoryDataset(),
            "rejected_videos": MemoryDataset(),
            "scan_metrics": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    meta = catalog.load("video_meta")
    assert list(meta["path"]) == [str(good)]
    assert (meta.iloc[0]["num_frames"], meta.iloc[0]["fps"]) == (16, 25.0)
    rejected = catalog.load("rejected_videos")
    reasons = {
        path.rsplit("/", 1)[-1]: reason
        for path, reason in zip(rejected["path"], rejected["reason"], strict=True)
    }
    assert reasons == {
        "zero.mp4": "empty_file",
        "truncated.mp4": "truncated",
        "text.mp4": "not_a_video",
        "audio.mp4": "audio_only",
        "garbage.mp4": "undecodable",
        "uncaptioned.mp4": "no_caption",
    }
    assert rejected["detail"].str.len().gt(0).all()
    assert catalog.load("scan_metrics")["scan_rejected"]["value"] == 6

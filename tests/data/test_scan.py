import pandas as pd
import pytest

from opensora_kedro.data.engine import EngineSettings
from opensora_kedro.data.scan import META_COLUMNS, build_video_table
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.hashing import caption_hash
from tests.conftest import gradient_frames, write_video


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    write_video(root / "a.mp4", gradient_frames(10, 32, 48), fps=30)
    (root / "sub").mkdir()
    write_video(root / "sub" / "b.mp4", gradient_frames(4, 48, 32), fps=12)
    return VideoFolderDataset(str(root)).load()


def test_table_has_open_sora_columns_and_values(folder):
    captions = pd.DataFrame(
        {"path": ["a.mp4", str(folder.root / "sub" / "b.mp4")], "text": ["x", "y"]}
    )
    meta, rejected = build_video_table(folder, captions)
    assert list(meta.columns) == META_COLUMNS
    assert rejected.empty
    row = meta.set_index("text").loc["y"]
    assert row["path"] == str(folder.root / "sub" / "b.mp4")
    assert (row["num_frames"], row["height"], row["width"], row["fps"]) == (4, 48, 32, 12.0)
    assert row["aspect_ratio"] == 48 / 32 and row["resolution"] == 48 * 32
    assert row["caption_hash"] == caption_hash("y")


def test_parallel_and_serial_scans_agree(folder):
    captions = pd.DataFrame({"path": ["a.mp4", "sub/b.mp4"], "text": ["x", "y"]})
    serial, _ = build_video_table(folder, captions, EngineSettings(workers=1))
    files = folder.files * 8
    wide = type(folder)(root=folder.root, files=files)
    parallel, _ = build_video_table(wide, captions, EngineSettings(workers=2))
    assert len(parallel) == len(files)
    pd.testing.assert_frame_equal(parallel.iloc[:2].reset_index(drop=True), serial)


def test_captions_without_files_are_recorded_and_files_without_captions_wait(folder):
    captions = pd.DataFrame({"path": ["a.mp4", "gone.mp4"], "text": ["x", "z"]})
    meta, rejected = build_video_table(folder, captions)
    # b.mp4 has no caption yet: kept for the captioning stage (which rejects it when off)
    assert meta["text"].tolist()[0] == "x" and pd.isna(meta["text"].tolist()[1])
    assert pd.isna(meta["caption_hash"].tolist()[1])
    names = rejected["path"].map(lambda p: p.rsplit("/", 1)[-1])
    reasons = dict(zip(names, rejected["reason"], strict=True))
    assert reasons == {"gone.mp4": "missing_file"}
    assert set(rejected["stage"]) == {"scan"}


def test_captions_table_must_have_path_and_text(folder):
    with pytest.raises(ValueError, match="path,text"):
        build_video_table(folder, pd.DataFrame({"file": ["a.mp4"]}))

import pytest
from kedro.io import DatasetError

from opensora_kedro.datasets.video_folder import MARKER, VideoFolderDataset


def test_save_then_load_lists_the_files(tmp_path):
    dataset = VideoFolderDataset(str(tmp_path / "videos"))
    dataset.save({"b.mp4": b"1", "sub/a.png": b"2"})
    folder = dataset.load()
    assert folder.files == ["b.mp4", "sub/a.png"]
    assert folder.path("sub/a.png").read_bytes() == b"2"
    assert (tmp_path / "videos" / MARKER).exists()


def test_save_replaces_the_previous_content(tmp_path):
    dataset = VideoFolderDataset(str(tmp_path / "videos"))
    dataset.save({"old.mp4": b"1"})
    dataset.save({"new.mp4": b"2"})
    assert dataset.load().files == ["new.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]  # no staging left behind


def test_failed_save_keeps_the_previous_content(tmp_path):
    dataset = VideoFolderDataset(str(tmp_path / "videos"))
    dataset.save({"old.mp4": b"1"})
    with pytest.raises(DatasetError, match="bytes-like"):
        dataset.save({"new.mp4": b"2", "bad.mp4": None})
    assert dataset.load().files == ["old.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "mine.mp4").write_bytes(b"precious")
    with pytest.raises(DatasetError, match="refusing"):
        VideoFolderDataset(str(tmp_path / "videos")).save({"x.mp4": b""})
    assert (tmp_path / "videos" / "mine.mp4").read_bytes() == b"precious"


def test_hidden_files_are_not_listed_and_a_missing_folder_is_an_error(tmp_path):
    (tmp_path / "v" / ".cache").mkdir(parents=True)
    (tmp_path / "v" / ".cache" / "x.mp4").touch()
    (tmp_path / "v" / ".DS_Store").touch()
    (tmp_path / "v" / "clip.mp4").touch()
    assert VideoFolderDataset(str(tmp_path / "v")).load().files == ["clip.mp4"]
    with pytest.raises(DatasetError, match="does not exist"):
        VideoFolderDataset(str(tmp_path / "nope")).load()

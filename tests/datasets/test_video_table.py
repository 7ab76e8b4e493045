"""Tables of clips store paths relative to their dataset root and resolve them on load."""

import shutil

import pandas as pd
import pytest

from opensora_kedro.data.table_paths import TableRootError
from opensora_kedro.datasets.video_table import VideoTableDataset


def _project(root):
    videos = root / "data/01_raw/videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.mp4"):
        (videos / name).write_bytes(b"x")
    return videos


def _table(videos):
    return pd.DataFrame({"path": [str(videos / "a.mp4"), str(videos / "sub/b.mp4")], "n": [1, 2]})


def test_paths_are_stored_relative_and_loaded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    videos = _project(tmp_path)
    dataset = VideoTableDataset("table.parquet", root="data/01_raw/videos")
    dataset.save(_table(videos))
    assert pd.read_parquet(tmp_path / "table.parquet")["path"].tolist() == ["a.mp4", "sub/b.mp4"]
    assert dataset.load()["path"].tolist() == [str(videos / "a.mp4"), str(videos / "sub/b.mp4")]


def test_a_moved_project_reads_its_own_files(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    monkeypatch.chdir(old)
    VideoTableDataset("table.parquet", root="data/01_raw/videos").save(_table(_project(old)))
    shutil.copytree(old, new)
    monkeypatch.chdir(new)
    loaded = VideoTableDataset("table.parquet", root="data/01_raw/videos").load()
    assert all(path.startswith(str(new / "data/01_raw/videos")) for path in loaded["path"])
    shutil.rmtree(new / "data")  # the data folder is gone: a clear error naming the root
    with pytest.raises(Exception) as error:
        VideoTableDataset("table.parquet", root="data/01_raw/videos").load()
    cause = error.value if isinstance(error.value, TableRootError) else error.value.__cause__
    assert isinstance(cause, TableRootError)
    assert f"missing under its dataset root {new / 'data/01_raw/videos'}" in str(cause)


def test_the_run_check_finds_missing_files_without_loading(tmp_path):
    videos = _project(tmp_path)
    dataset = VideoTableDataset(str(tmp_path / "t.parquet"), root=str(videos))
    dataset.save(_table(videos))
    dataset.check()
    (videos / "a.mp4").unlink()
    with pytest.raises(TableRootError, match="1 of 2 checked files are missing"):
        dataset.check()


def test_a_path_outside_the_root_is_refused(tmp_path):
    videos = _project(tmp_path)
    dataset = VideoTableDataset(str(tmp_path / "t.parquet"), root=str(videos / "sub"))
    with pytest.raises(Exception, match="outside its dataset root"):
        dataset.save(_table(videos))


def test_an_optional_table_loads_empty_before_its_first_run(tmp_path):
    dataset = VideoTableDataset(str(tmp_path / "none.parquet"), root=str(tmp_path), optional=True)
    assert dataset.load().empty and dataset.loads_when_missing


def test_cut_shots_are_stored_relative_to_the_shots_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    videos = _project(tmp_path)
    shot = tmp_path / "data/02_intermediate/shots/a/shot-000.mp4"
    shot.parent.mkdir(parents=True)
    shot.write_bytes(b"x")
    table = pd.DataFrame({"path": [str(videos / "a.mp4"), str(shot)],
                          "source": [str(videos / "a.mp4")] * 2})  # fmt: skip
    dataset = VideoTableDataset("t.parquet", root="data/01_raw/videos",
                                shots_root="data/02_intermediate/shots")  # fmt: skip
    dataset.save(table)
    stored = pd.read_parquet(tmp_path / "t.parquet")
    assert stored["path"].tolist() == ["a.mp4", "shots:a/shot-000.mp4"]
    assert stored["source"].tolist() == ["a.mp4", "a.mp4"]
    pd.testing.assert_frame_equal(dataset.load(), table, check_dtype=False)
    with pytest.raises(Exception, match="no shots_root"):  # Kedro wraps TableRootError
        VideoTableDataset("t.parquet", root="data/01_raw/videos").load()

"""The data_processing pipeline, run by Kedro's runner on a folder of bad inputs."""

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.config.schemas.data import DataProcessingParams, DemoDataParams
from opensora_kedro.datasets.run_dir import RunDirectoryDataset
from opensora_kedro.datasets.video_folder import VideoFolderDataset
from opensora_kedro.datasets.video_table import VideoTableDataset
from opensora_kedro.pipelines.data_processing import create_pipeline
from opensora_kedro.training.params import VideoDatasetParams
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
    catalog = _catalog(raw, pd.DataFrame({"path": captioned, "text": "a clip"}))
    SequentialRunner().run(create_pipeline(), catalog)

    meta = catalog.load("video_meta")  # usable files; the uncaptioned one waits for captions
    assert list(meta["path"]) == [str(good), str(raw / "uncaptioned.mp4")]
    assert meta["text"].isna().tolist() == [False, True]
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
    report = catalog.load("filter_report")
    assert report["rule"].tolist() == ["too_few_frames", "empty_caption", "duplicate_path"]
    assert report["threshold"].iloc[0] == "num_frames < 2" and report["removed"].sum() == 0
    assert catalog.load("filter_metrics")["removed_share_too_few_frames"]["value"] == 0.0
    metrics = catalog.load("rejection_metrics")
    assert (metrics["rejected_scan"]["value"], metrics["rejected_captioning"]["value"]) == (5, 1)
    table = catalog.load("training_table")
    assert (
        table.loc[0, "text"].startswith("a clip 12 FPS, ") and table.loc[0, "caption"] == "a clip"
    )


# The data_processing group (the captioner's and the quality scorer's models are unused: off).
DATA = {
    "engine": "local",
    "ray": {"address": None, "workers": 2, "gpus_per_model_worker": 0, "runtime_env": {}},
    "scan": {"workers": 2, "check_frames": 2},
    "shots": {"enabled": False, "detector": "adaptive", "threshold": None, "min_scene_frames": 15,
              "min_seconds": 2.0, "max_seconds": 15.0, "crf": 18, "inherit_caption": False,
              "workers": 2},
    "dedup": {"enabled": False, "method": "dhash", "frames": 3, "max_distance": 3, "workers": 2},
    "motion": {"variant": "integer", "edge_rule": "3.2", "workers": 2},
    "captioning": {"enabled": False, "overwrite": False, "model": "unused"},
    "quality": {"enabled": False, "clip_model": "unused"},
    "filter": {"min_frames": 2, "remove_duplicate_paths": True, "remove_empty_captions": True},
}  # fmt: skip
# The training stage's settings the pipeline reads, as the hook hands them to the nodes.
STAGE = {
    "diffusion_stage1.dataset": VideoDatasetParams(fps_max=24, vmaf=True),
    "diffusion_stage1.bucket_config": {"64px": {1: (1.0, 1), 9: (1.0, 1)}},
    "diffusion_stage1.seed": 0,
}
# Tables kept from run to run (each read back as `<name>_previous`), and other saved outputs.
KEPT = ["video_meta", "video_shots", "video_hashes", "motion_scores", "clip_captions",
        "quality_scores"]  # fmt: skip
SAVED = [
    "video_clips",
    "training_table",
    "rejected_videos",
    "filter_report",
    "filter_metrics",
    "rejection_metrics",
]


def _catalog(raw, captions, out=None, **overrides):
    """The pipeline's catalog as the project declares it, in ``out`` (default: next to
    ``raw``); ``overrides`` update parameter groups (``shots={...}``, ``engine="ray"``)."""
    out = out or raw.parent / "tables"
    shots = str(out / "shots")
    assert set(overrides) <= set(DATA), overrides
    data = {group: {**value, **overrides.get(group, {})} if isinstance(value, dict)
            else overrides.get(group, value) for group, value in DATA.items()}  # fmt: skip
    typed = DataProcessingParams.model_validate(data)
    params = {f"data_processing.{group}": getattr(typed, group) for group in DATA} | STAGE
    datasets = {f"params:{name}": MemoryDataset(value) for name, value in params.items()}

    def table(name: str, **kwargs) -> VideoTableDataset:
        return VideoTableDataset(filepath=str(out / f"{name}.parquet"), root=str(raw),
                                 shots_root=shots, **kwargs)  # fmt: skip

    for name in KEPT:
        datasets[name] = table(name)
        datasets[f"{name}_previous"] = table(name, optional=True, check_files=False)
    for name in SAVED:
        datasets[name] = MemoryDataset() if "metrics" in name or "report" in name else (
            table(name, check_files=False))  # fmt: skip
    return DataCatalog(
        {
            **datasets,
            "raw_videos": VideoFolderDataset(str(raw)),
            "raw_captions": MemoryDataset(captions),
            "shot_clips": RunDirectoryDataset(shots),
            "data_processing_journals": RunDirectoryDataset(str(out / "journals")),
        }
    )


def test_rerun_processes_only_added_and_changed_clips(tmp_path, monkeypatch):
    from opensora_kedro.data import motion_table, scan

    calls = {"probe": [], "motion": []}
    probe, motion = scan.probe_video, motion_table.motion_score
    monkeypatch.setattr(
        scan, "probe_video", lambda p, **k: calls["probe"].append(p) or probe(p, **k)
    )
    monkeypatch.setattr(
        motion_table, "motion_score", lambda p, c: calls["motion"].append(p) or motion(p, c)
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a", "b"):
        write_video(raw / f"{name}.mp4", gradient_frames(9, 32, 32))
    captions = pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4"], "text": "x"})
    SequentialRunner().run(create_pipeline(), _catalog(raw, captions))
    assert len(calls["probe"]) == 2 and len(calls["motion"]) == 2

    calls["probe"].clear(), calls["motion"].clear()
    write_video(raw / "c.mp4", gradient_frames(9, 32, 32))  # added
    write_video(raw / "a.mp4", gradient_frames(13, 32, 32))  # changed
    second = _catalog(raw, captions)
    SequentialRunner().run(create_pipeline(), second)
    assert sorted(p.rsplit("/", 1)[-1] for p in calls["probe"]) == ["a.mp4", "c.mp4"]
    assert sorted(p.rsplit("/", 1)[-1] for p in calls["motion"]) == ["a.mp4", "c.mp4"]
    meta = second.load("video_meta").set_index("path")
    assert meta.loc[str(raw / "a.mp4"), "num_frames"] == 13 and len(meta) == 3
    scores = second.load("motion_scores")
    assert len(scores) == 3 and scores["score_vmafmotion"].notna().all()


def test_near_duplicates_are_rejected_naming_the_clip_they_duplicate(tmp_path, monkeypatch):
    import numpy as np

    from opensora_kedro.data import dedup

    raw = tmp_path / "raw"
    raw.mkdir()
    frames = gradient_frames(12, 48, 64)
    write_video(raw / "a.mp4", frames)
    # b: the same footage at half the size and another frame rate; c: other footage
    write_video(raw / "b.mp4", np.ascontiguousarray(frames[:, ::2, ::2]), fps=12)
    rng = np.random.default_rng(0)
    write_video(raw / "c.mp4", rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    captions = pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4"], "text": "x"})
    first = _catalog(raw, captions, dedup={"enabled": True})
    SequentialRunner().run(create_pipeline(), first)
    rejected = first.load("rejected_videos")
    duplicates = rejected[rejected["reason"] == "duplicate"]
    assert [p.rsplit("/", 1)[-1] for p in duplicates["path"]] == ["b.mp4"]
    assert duplicates.iloc[0]["detail"].startswith(f"duplicate of {raw / 'a.mp4'}")
    assert sorted(p.rsplit("/", 1)[-1] for p in first.load("training_table")["path"]) == [
        "a.mp4", "c.mp4",
    ]  # fmt: skip

    hashed = []
    monkeypatch.setattr(dedup, "clip_hashes", lambda p, n, k: hashed.append(p) or [0] * k)
    write_video(raw / "d.mp4", rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    captions = pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "text": "x"})
    SequentialRunner().run(create_pipeline(), _catalog(raw, captions, dedup={"enabled": True}))
    assert [p.rsplit("/", 1)[-1] for p in hashed] == ["d.mp4"]  # the others keep their hashes


def test_ray_and_local_engines_make_the_same_tables(tmp_path):
    """Demo clips plus broken files, every per-clip stage on a local Ray instance."""
    ray = pytest.importorskip("ray")
    from opensora_kedro.pipelines.demo_data.nodes import plan_clips, render_clips

    raw = tmp_path / "raw"
    demo = {"num_clips": 8, "num_images": 2, "sizes": [[32, 32]], "fps": [12, 24],
            "lengths": [5, 9], "seed": 3, "crf": 20}  # fmt: skip
    files, captions = render_clips(plan_clips(DemoDataParams.model_validate(demo)), crf=20)
    VideoFolderDataset(str(raw)).save(files)
    (raw / "zero.mp4").touch()
    (raw / "text.mp4").write_text("definitely not a video\n")
    corrupt_media_data(write_video(raw / "garbage.mp4", gradient_frames(6, 32, 32)))
    captions = pd.concat([pd.DataFrame(captions), pd.DataFrame(
        {"path": ["zero.mp4", "text.mp4", "garbage.mp4"], "text": "x"})])  # fmt: skip
    tables = {}
    try:
        for engine in ("local", "ray"):
            catalog = _catalog(raw, captions, tmp_path / engine, dedup={"enabled": True},
                               shots={"enabled": True, "min_seconds": None,
                                      "min_scene_frames": 4}, engine=engine)  # fmt: skip
            SequentialRunner().run(create_pipeline(), catalog)
            tables[engine] = {
                name: catalog.load(name).sort_values("path", ignore_index=True)
                for name in ("video_meta", "video_hashes", "motion_scores", "rejected_videos",
                             "training_table")
            }  # fmt: skip
    finally:
        ray.shutdown()
    for name, table in tables["local"].items():
        pd.testing.assert_frame_equal(tables["ray"][name], table, obj=name)
    assert len(tables["local"]["video_meta"]) == 10
    rejected = tables["local"]["rejected_videos"]
    reasons = dict(zip(rejected["path"].str.rsplit("/", n=1).str[-1], rejected["reason"],
                       strict=True))  # fmt: skip
    assert {reasons[name] for name in ("zero.mp4", "text.mp4", "garbage.mp4")} == {
        "empty_file", "not_a_video", "undecodable"
    }  # fmt: skip
